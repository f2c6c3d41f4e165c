"""The OpenAI-compatible backend against real HTTP servers on 127.0.0.1 that serve the real SmolLM2.

``ChatServer`` is minimal (stdlib http.server) but real: it answers /v1/chat/completions with llama.cpp, can be
told to stall, slow down or fail the next requests, and counts requests in flight, so timeouts, retries and the
client's concurrency bound are exercised for real. The last test runs llama-cpp-python's own server.
"""

from __future__ import annotations

import importlib.util
import json
import os
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest

from resources.llm import GenerationError, LlamaCppLLM, SamplingParams
from resources.models import resolve_model
from resources.openai_llm import OpenAICompatibleLLM

PARAMS = SamplingParams(temperature=0.8, max_tokens=20, seed=11)
MESSAGES = [{"role": "system", "content": "You are helpful."}, {"role": "user", "content": "Name a colour."}]


class ChatServer(ThreadingHTTPServer):
    def __init__(self, engine: LlamaCppLLM):
        super().__init__(("127.0.0.1", 0), ChatHandler)
        self.engine = engine
        self.faults: list[str] = []  # consumed one per request: 'stall', 'slow' or 'error'
        self.requests = 0
        self.stall_s = 3.0
        self.slow_s = 0.4
        self.in_flight = self.max_in_flight = 0
        self.lock = threading.Lock()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/v1"


class ChatHandler(BaseHTTPRequestHandler):
    server: ChatServer

    def log_message(self, *args):  # keep pytest output clean
        pass

    def _send(self, status: int, body: dict) -> None:
        payload = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def do_POST(self):
        # A request is in flight from its arrival until its answer is ready, and no longer: counted out *before* the
        # answer is written, since the client may send its next request the moment it reads this one's answer (under
        # load, counting out after the write saw 4 in flight from a client that never had more than 3).
        with self.server.lock:
            self.server.in_flight += 1
            self.server.max_in_flight = max(self.server.max_in_flight, self.server.in_flight)
        try:
            status, body = self._answer()
        finally:
            with self.server.lock:
                self.server.in_flight -= 1
        self._send(status, body)

    def _answer(self) -> tuple[int, dict]:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        with self.server.lock:
            self.server.requests += 1
            fault = self.server.faults.pop(0) if self.server.faults else None
        if self.path != "/v1/chat/completions":
            return 404, {"error": "not found"}
        if fault in ("stall", "slow"):
            time.sleep(self.server.stall_s if fault == "stall" else self.server.slow_s)
        if fault == "error":
            return 503, {"error": "overloaded"}
        params = SamplingParams(
            temperature=body["temperature"], top_p=body["top_p"], max_tokens=body["max_tokens"], seed=body["seed"]
        )
        with self.server.lock:
            generation = self.server.engine._chat(body["messages"], params)
        return 200, {
            "object": "chat.completion",
            "model": body["model"],
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": generation.text},
                    "finish_reason": generation.finish_reason,
                }
            ],
            "usage": {"prompt_tokens": generation.prompt_tokens, "completion_tokens": generation.completion_tokens},
        }


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    cache = tmp_path_factory.mktemp("server")
    engine = LlamaCppLLM(
        cache_path=str(cache / "engine.duckdb"), model="smollm2-135m", model_cache_dir=str(cache / "models"), n_ctx=512
    )
    chat_server = ChatServer(engine)
    thread = threading.Thread(target=chat_server.serve_forever, daemon=True)
    thread.start()
    yield chat_server
    chat_server.shutdown()


def _client(server: ChatServer, tmp_path, **overrides) -> OpenAICompatibleLLM:
    settings = dict(
        cache_path=str(tmp_path / "client.duckdb"),
        base_url=server.base_url,
        model="smollm2",
        timeout_s=5.0,
        max_retries=2,
        backoff_s=0.05,
    )
    return OpenAICompatibleLLM(**{**settings, **overrides})


def test_server_answers_like_the_embedded_model_and_is_cached(server, tmp_path):
    client = _client(server, tmp_path)
    served = client.chat(MESSAGES, PARAMS)
    embedded = server.engine._chat(MESSAGES, PARAMS)
    assert served.text and served.text == embedded.text
    assert served.completion_tokens == embedded.completion_tokens

    before = server.requests
    again = _client(server, tmp_path).chat(MESSAGES, PARAMS)
    assert again.cached and again.text == served.text and server.requests == before


def test_timeout_then_retry_succeeds(server, tmp_path):
    client = _client(server, tmp_path, timeout_s=1.0)  # the stall is 3 s; an answer takes well under 1 s
    server.faults = ["stall"]
    before = server.requests
    started = time.perf_counter()
    generation = client.chat(MESSAGES, PARAMS)
    assert generation.text
    assert server.requests - before == 2, "one timed-out request, one retried request"
    assert time.perf_counter() - started >= 1.0


def test_server_error_is_retried_with_backoff(server, tmp_path):
    client = _client(server, tmp_path, backoff_s=0.2)
    server.faults = ["error", "error"]
    before = server.requests
    started = time.perf_counter()
    assert client.chat(MESSAGES, PARAMS).text
    assert server.requests - before == 3
    assert time.perf_counter() - started >= 0.2 + 0.4  # backoff doubles


def test_gives_up_after_retries_with_a_clear_error_and_caches_nothing(server, tmp_path):
    client = _client(server, tmp_path, max_retries=1)
    server.faults = ["error", "error"]
    with pytest.raises(GenerationError, match=r"failed 2 times .*HTTP 503"):
        client.chat(MESSAGES, PARAMS)
    assert client.cache.count() == 0
    server.faults = []


def test_refused_request_is_not_retried(server, tmp_path):
    client = _client(server, tmp_path, base_url=server.base_url + "/wrong")
    before = server.requests
    with pytest.raises(GenerationError, match="refused the request: HTTP 404"):
        client.chat(MESSAGES, PARAMS)
    assert server.requests - before == 1


QUESTIONS = ["Name a colour.", "Name a fruit.", "Name a city.", "Name an animal.", "Name a planet.", "Name a tree."]


def _requests() -> list[list[dict]]:
    return [[MESSAGES[0], {"role": "user", "content": q}] for q in QUESTIONS]


def test_concurrent_requests_are_bounded_and_cached_as_they_arrive(server, tmp_path):
    sequential = _client(server, tmp_path, cache_path=str(tmp_path / "one.duckdb"))
    expected = [g.text for g in sequential.chat_many(_requests(), PARAMS)]

    client = _client(server, tmp_path, max_concurrency=3, timeout_s=30.0)
    server.faults, server.max_in_flight = ["slow"] * len(QUESTIONS), 0
    committed: list[int] = []
    generations = client.chat_many(
        _requests(), PARAMS, on_generated=lambda i, g: committed.append(client.cache.count())
    )
    assert server.max_in_flight == 3, "at most max_concurrency requests in flight, and that many when there is work"
    assert committed == [1, 2, 3, 4, 5, 6], "each answer is in the cache before the next one is handed over"
    assert [g.text for g in generations] == expected, "answers land at the row they were asked for"
    assert client.calls_made == len(QUESTIONS)


def test_a_failed_request_among_concurrent_ones_keeps_the_others(server, tmp_path):
    client = _client(server, tmp_path, max_concurrency=2, max_retries=0, timeout_s=30.0)
    server.faults = ["slow", "error"]  # the first request answers (slowly), the second fails for good
    with pytest.raises(GenerationError, match="HTTP 503"):
        client.chat_many(_requests()[:2], PARAMS)
    assert client.cache.count() == 1, "the answer that arrived is cached; the failed row is not"
    server.faults = []
    again = _client(server, tmp_path, max_concurrency=2)
    again.chat_many(_requests()[:2], PARAMS)
    assert again.calls_made == 1 and again.cache_hits == 1


SERVER_MODULES = ("fastapi", "uvicorn", "sse_starlette", "starlette_context", "pydantic_settings")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def llama_cpp_server(tmp_path_factory):
    """``python -m llama_cpp.server`` with the 135M model on 127.0.0.1 (one thread: it shares the machine)."""
    missing = [m for m in SERVER_MODULES if importlib.util.find_spec(m) is None]
    if missing:
        pytest.skip(
            f"llama-cpp-python's server needs its 'server' extra; missing in this venv: {', '.join(missing)} "
            "(pip install 'llama-cpp-python[server]' adds them)"
        )
    model = resolve_model("smollm2-135m", tmp_path_factory.mktemp("models"))
    port = _free_port()
    log = tmp_path_factory.mktemp("server") / "server.log"
    env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE"}
    with open(log, "w") as out:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "llama_cpp.server",
                "--model",
                str(model.path),
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--n_ctx",
                "1024",
                "--n_threads",
                "1",
                "--n_threads_batch",
                "1",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
        )
    base_url = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.monotonic() + 120
        while True:
            if process.poll() is not None:
                pytest.fail(f"llama_cpp.server exited with {process.returncode}: {log.read_text()[-2000:]}")
            try:
                if httpx.get(base_url + "/models", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"llama_cpp.server did not answer within 120 s: {log.read_text()[-2000:]}")
            time.sleep(0.5)
        yield base_url
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()


def test_concurrency_against_llama_cpp_server(llama_cpp_server, tmp_path):
    client = OpenAICompatibleLLM(
        cache_path=str(tmp_path / "c.duckdb"),
        base_url=llama_cpp_server,
        model="smollm2",
        timeout_s=120,
        max_retries=1,
        backoff_s=0.2,
        max_concurrency=4,
    )
    seen: list[int] = []
    generations = client.chat_many(_requests(), PARAMS, on_generated=lambda i, g: seen.append(i))
    assert sorted(seen) == list(range(len(QUESTIONS))) and client.calls_made == len(QUESTIONS)
    assert all(g.text and g.completion_tokens > 0 and g.finish_reason in ("stop", "length") for g in generations)
    assert client.cache.count() == len(QUESTIONS)
    rerun = OpenAICompatibleLLM(**{**client.model_dump(), "max_concurrency": 1})
    assert [g.text for g in rerun.chat_many(_requests(), PARAMS)] == [g.text for g in generations]
    assert rerun.calls_made == 0
