"""The OpenAI-compatible backend against a real HTTP server on 127.0.0.1 that serves the real SmolLM2.

The server is minimal (stdlib http.server) but real: it answers /v1/chat/completions with llama.cpp, and can
be told to stall or fail the next requests, so timeouts and retries are exercised for real.
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from resources.llm import GenerationError, LlamaCppLLM, OpenAICompatibleLLM, SamplingParams

PARAMS = SamplingParams(temperature=0.8, max_tokens=20, seed=11)
MESSAGES = [{"role": "system", "content": "You are helpful."}, {"role": "user", "content": "Name a colour."}]


class ChatServer(ThreadingHTTPServer):
    def __init__(self, engine: LlamaCppLLM):
        super().__init__(("127.0.0.1", 0), ChatHandler)
        self.engine = engine
        self.faults: list[str] = []  # consumed one per request: 'stall' or 'error'
        self.requests = 0
        self.stall_s = 1.5
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
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        with self.server.lock:
            self.server.requests += 1
            fault = self.server.faults.pop(0) if self.server.faults else None
        if self.path != "/v1/chat/completions":
            return self._send(404, {"error": "not found"})
        if fault == "stall":
            time.sleep(self.server.stall_s)
        if fault == "error":
            return self._send(503, {"error": "overloaded"})
        params = SamplingParams(temperature=body["temperature"], top_p=body["top_p"], max_tokens=body["max_tokens"],
                                seed=body["seed"])
        with self.server.lock:
            generation = self.server.engine._chat(body["messages"], params)
        self._send(200, {
            "object": "chat.completion", "model": body["model"],
            "choices": [{"index": 0, "message": {"role": "assistant", "content": generation.text},
                         "finish_reason": generation.finish_reason}],
            "usage": {"prompt_tokens": generation.prompt_tokens, "completion_tokens": generation.completion_tokens},
        })


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    cache = tmp_path_factory.mktemp("server")
    engine = LlamaCppLLM(cache_path=str(cache / "engine.duckdb"), model="smollm2-135m",
                         model_cache_dir=str(cache / "models"), n_ctx=512)
    chat_server = ChatServer(engine)
    thread = threading.Thread(target=chat_server.serve_forever, daemon=True)
    thread.start()
    yield chat_server
    chat_server.shutdown()


def _client(server: ChatServer, tmp_path, **overrides) -> OpenAICompatibleLLM:
    settings = dict(cache_path=str(tmp_path / "client.duckdb"), base_url=server.base_url, model="smollm2",
                    timeout_s=5.0, max_retries=2, backoff_s=0.05)
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
    client = _client(server, tmp_path, timeout_s=0.5)
    server.faults = ["stall"]
    before = server.requests
    started = time.perf_counter()
    generation = client.chat(MESSAGES, PARAMS)
    assert generation.text
    assert server.requests - before == 2, "one timed-out request, one retried request"
    assert time.perf_counter() - started >= 0.5


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
