"""A Ray cluster on 127.0.0.1 as child processes: a head that runs no steps (0 CPUs; its dashboard takes the job
submissions dagster-ray sends) and N worker nodes with a few CPUs each, for the tests and by hand:

    .venv/bin/python -m resources.ray_cluster --workers 2 --cpus 1

starts one and prints the DSC_EXECUTOR / DSC_RAY_ADDRESS lines for it (Ctrl-C stops it). Every node is a
``ray start --block`` in its own session, so stopping it ends all it started; ports are chosen free, so several
clusters (and the other services of a test) share one machine. A real cluster (KubeRay, ``ray up``) needs none of
this: point DSC_RAY_ADDRESS at its dashboard (docs/scale-out.md).
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from resources.llama_server import free_port


class RayClusterError(RuntimeError):
    """The cluster did not come up: the node's log end is in the message."""


class LocalRayCluster:
    """A head and ``workers`` worker nodes of ``cpus`` CPUs each, on 127.0.0.1."""

    def __init__(self, workers: int = 2, cpus: int = 1, object_store_mb: int = 100, root: str | Path | None = None):
        self.workers, self.cpus, self.object_store_mb = workers, cpus, object_store_mb
        # Ray's socket paths must stay short (108 bytes): a folder of its own under /tmp, not a test's tmp_path.
        self.own_root = root is None  # a folder made here is removed on stop, logs and session with it
        self.root = Path(root) if root else Path(tempfile.mkdtemp(prefix="dsc-ray-", dir="/tmp"))
        self.gcs_port, self.dashboard_port = free_port(), free_port()
        self.nodes: list[subprocess.Popen] = []

    @property
    def address(self) -> str:
        """The job-submission address (what DSC_RAY_ADDRESS takes)."""
        return f"http://127.0.0.1:{self.dashboard_port}"

    def _node(self, name: str, options: list[str]) -> subprocess.Popen:
        ray = os.path.join(os.path.dirname(sys.executable), "ray")
        ports = {
            "--node-manager-port": free_port(),
            "--object-manager-port": free_port(),
            "--dashboard-agent-listen-port": free_port(),
            "--dashboard-agent-grpc-port": free_port(),
            "--runtime-env-agent-port": free_port(),
            "--metrics-export-port": free_port(),
        }
        command = [ray, "start", "--block", "--node-ip-address=127.0.0.1", "--disable-usage-stats"]
        command += [f"--object-store-memory={self.object_store_mb * 1_000_000}", *options]
        command += [f"{flag}={port}" for flag, port in ports.items()]
        env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "OMP_WAIT_POLICY": "PASSIVE"}
        # A step launched from the UI's code server starts as `dagster api execute_step`: the nodes' PATH finds
        # this environment's dagster first, as an activated virtualenv (or a worker image) would.
        env["PATH"] = os.pathsep.join([os.path.dirname(sys.executable), env.get("PATH", "")])
        with open(self.root / f"{name}.log", "a") as log:
            return subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)

    def start(self, timeout_s: float = 180.0) -> "LocalRayCluster":
        head = ["--head", f"--port={self.gcs_port}", "--num-cpus=0", "--include-dashboard=true"]
        head += ["--dashboard-host=127.0.0.1", f"--dashboard-port={self.dashboard_port}"]
        head += [f"--temp-dir={self.root / 'session'}", "--min-worker-port=0", "--max-worker-port=0"]
        self.nodes.append(self._node("head", head))
        self._wait(lambda: httpx.get(f"{self.address}/api/version", timeout=5).status_code == 200, "head", timeout_s)
        # One node after the other: two starting together in one session folder pick the same socket names.
        for index in range(self.workers):
            worker = [f"--address=127.0.0.1:{self.gcs_port}", f"--num-cpus={self.cpus}"]
            self.nodes.append(self._node(f"worker{index + 1}", [*worker, "--min-worker-port=0", "--max-worker-port=0"]))
            self._wait(lambda started=index + 1: self.alive_workers() == started, f"worker {index + 1}", timeout_s)
        return self

    def alive_workers(self) -> int:
        """Worker nodes (CPUs > 0) the head counts as alive."""
        nodes = httpx.get(f"{self.address}/nodes?view=summary", timeout=10).json()["data"]["summary"]
        return sum(1 for n in nodes if n["raylet"]["state"] == "ALIVE" and n["raylet"]["resourcesTotal"].get("CPU"))

    def _wait(self, ready, what: str, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if any(node.poll() is not None for node in self.nodes):
                break
            try:
                if ready():
                    return
            except (httpx.HTTPError, KeyError, ValueError):
                pass
            time.sleep(1)
        logs = "".join(log.read_text()[-1500:] for log in sorted(self.root.glob("*.log")))
        self.stop()
        raise RayClusterError(f"the local Ray cluster's {what} did not come up in {timeout_s:.0f}s:\n{logs}")

    def stop(self) -> None:
        """Every node's process group: SIGTERM (ray start --block stops its services), then SIGKILL."""
        for node in reversed(self.nodes):
            _signal_group(node, signal.SIGTERM)
        deadline = time.monotonic() + 10  # for all of them together: a node that ignores SIGTERM is killed after
        for node in reversed(self.nodes):
            try:
                node.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
            _signal_group(node, signal.SIGKILL)
            node.wait()
        self.nodes = []
        if self.own_root:
            shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> "LocalRayCluster":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def _signal_group(process: subprocess.Popen, sig: int) -> None:
    try:
        os.killpg(process.pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--cpus", type=int, default=1, help="CPUs of each worker node (steps reserve 1 each)")
    args = parser.parse_args(argv)
    with LocalRayCluster(args.workers, args.cpus) as cluster:
        print(f"export DSC_EXECUTOR=ray DSC_RAY_ADDRESS={cluster.address}  # {args.workers} workers; Ctrl-C stops")
        try:
            while all(node.poll() is None for node in cluster.nodes):
                time.sleep(1)
        except KeyboardInterrupt:
            pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
