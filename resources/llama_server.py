"""llama-cpp-python's OpenAI-compatible server (``python -m llama_cpp.server``) with a known model on 127.0.0.1, as
a child process: the servers of a local generation pool, for the tests and the benchmarks, or by hand:

    .venv/bin/python -m resources.llama_server --count 2 --model smollm2-135m --threads 1

starts two and prints the profile's ``generator.endpoints`` for them (Ctrl-C stops them). Needs the package's
``server`` extra (fastapi, uvicorn, sse-starlette, starlette-context, pydantic-settings); loads only local files.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

from resources.models import resolve_model


class ServerError(RuntimeError):
    """The server did not come up: its log's end is in the message."""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class LlamaServer:
    """One ``llama_cpp.server`` process. Its port is chosen once, so a server killed and started again listens at the
    same URL, as a restarted replica would."""

    def __init__(
        self,
        model: str = "smollm2-135m",
        model_cache_dir: str | Path = ".dsc/models",
        n_threads: int = 1,
        n_ctx: int = 1024,
        log_path: str | Path | None = None,
    ):
        self.model_path = resolve_model(model, model_cache_dir).path
        self.n_threads, self.n_ctx = n_threads, n_ctx
        self.port = free_port()
        self.log_path = Path(log_path) if log_path else None
        self.process: subprocess.Popen | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(self) -> "LlamaServer":
        """Start the process; returns at once (``wait_ready`` waits for it to answer)."""
        if self.running():
            return self
        log = open(self.log_path, "a") if self.log_path else subprocess.DEVNULL
        threads = str(self.n_threads)
        command = [sys.executable, "-m", "llama_cpp.server", "--model", str(self.model_path), "--host", "127.0.0.1"]
        command += ["--port", str(self.port), "--n_ctx", str(self.n_ctx)]
        command += ["--n_threads", threads, "--n_threads_batch", threads]
        try:  # OpenMP threads that spin would take the cores from everything else on the machine
            env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE"}
            self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
        finally:
            if log is not subprocess.DEVNULL:
                log.close()
        return self

    def wait_ready(self, timeout_s: float = 120.0) -> "LlamaServer":
        deadline = time.monotonic() + timeout_s
        while True:
            if not self.running():
                raise ServerError(f"llama_cpp.server on port {self.port} exited: {self._log_tail()}")
            try:
                if httpx.get(self.base_url + "/models", timeout=2).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise ServerError(
                    f"llama_cpp.server on port {self.port} did not answer in {timeout_s:g} s: {self._log_tail()}"
                )
            time.sleep(0.2)

    def kill(self) -> None:
        """``kill -9``: the server dies mid-answer, as a crashed replica does."""
        if self.running():
            self.process.send_signal(signal.SIGKILL)
            self.process.wait()

    def stop(self) -> None:
        if self.running():
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.kill()

    def _log_tail(self) -> str:
        if self.log_path and self.log_path.exists():
            return self.log_path.read_text(errors="replace")[-2000:]
        return "(no log kept)"


def start_servers(count: int, **settings) -> list[LlamaServer]:
    """``count`` servers started together (loading overlaps), each answering before this returns."""
    servers = [LlamaServer(**settings).start() for _ in range(count)]
    try:
        for server in servers:
            server.wait_ready()
    except BaseException:
        for server in servers:
            server.stop()
        raise
    return servers


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=2)
    parser.add_argument("--model", default="smollm2-135m", help="a known model name or a .gguf path")
    parser.add_argument("--threads", type=int, default=1, help="threads per server")
    parser.add_argument("--n-ctx", type=int, default=2048)
    parser.add_argument("--model-cache-dir", default=".dsc/models")
    args = parser.parse_args()
    servers = start_servers(
        args.count, model=args.model, model_cache_dir=args.model_cache_dir, n_threads=args.threads, n_ctx=args.n_ctx
    )
    print("generator:\n  backend: openai\n  model: " + args.model + "\n  endpoints:")
    for server in servers:
        print(f"    - url: {server.base_url}")
    sys.stdout.flush()
    try:
        signal.pause()
    except KeyboardInterrupt:
        pass
    finally:
        for server in servers:
            server.stop()


if __name__ == "__main__":
    main()
