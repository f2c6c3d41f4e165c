"""Any OpenAI-compatible server as the generator (llama.cpp server, Ollama, vLLM, SGLang): the same cache and
batching callbacks as the embedded backend, requests in flight at once up to ``max_concurrency``."""

from __future__ import annotations

import time
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import Sequence

import httpx
from pydantic import Field

from resources.llm import Generation, GenerationError, LLMResource, Message, SamplingParams


class OpenAICompatibleLLM(LLMResource):
    """Any server with an OpenAI-style ``/v1/chat/completions`` (llama.cpp server, Ollama, vLLM)."""

    base_url: str = Field(description="For example http://127.0.0.1:8080/v1 (Ollama: http://127.0.0.1:11434/v1).")
    model: str = Field(description="Model name the server knows.")
    model_revision: str = Field(
        default="",
        description="Bump when the server's weights change under the same name: it is part of the cache key.",
    )
    api_key: str = Field(default="", description="Bearer token; set it with dg.EnvVar('OPENAI_API_KEY').")
    timeout_s: float = Field(default=120.0, description="Seconds to wait for one response.")
    max_retries: int = Field(default=3, description="Retries after a timeout, connection error, 429 or 5xx.")
    backoff_s: float = Field(default=1.0, description="First retry delay; doubles each retry.")
    max_concurrency: int = Field(
        default=1,
        ge=1,
        le=256,
        description="Requests in flight at once (a server with parallel slots batches them); each answer is cached "
        "as it arrives. Not part of the cache key: the server, not this client, decides how it batches.",
    )

    def model_identity(self) -> str:
        return f"openai:{self.base_url.rstrip('/')}:{self.model}:{self.model_revision}"

    def _generate(self, indices, requests, params, commit) -> None:
        if self.max_concurrency <= 1 or len(indices) <= 1:
            return super()._generate(indices, requests, params, commit)
        pool = ThreadPoolExecutor(max_workers=min(self.max_concurrency, len(indices)), thread_name_prefix="dsc-llm")
        pending: dict[Future, int] = {pool.submit(self._chat, requests[i], params): i for i in indices}
        failure: BaseException | None = None
        try:
            while pending:
                finished, _ = wait(pending, return_when=FIRST_COMPLETED)
                for future in finished:
                    index = pending.pop(future)
                    try:
                        generation = future.result()
                    except Exception as error:  # noqa: BLE001  (re-raised below, after the answers in flight land)
                        if failure is None:
                            failure = error
                            for queued in pending:
                                queued.cancel()  # not started yet: never sent
                        continue
                    commit(index, generation)  # cached in the calling thread, as each answer arrives
                pending = {f: i for f, i in pending.items() if not f.cancelled()}
        except BaseException:
            pool.shutdown(wait=False, cancel_futures=True)
            raise
        pool.shutdown(wait=True)
        if failure is not None:
            raise failure

    def _chat(self, messages: Sequence[Message], params: SamplingParams) -> Generation:
        body = {
            "model": self.model,
            "messages": list(messages),
            "temperature": params.temperature,
            "top_p": params.top_p,
            "max_tokens": params.max_tokens,
            "seed": params.seed,
        }
        if params.stop:
            body["stop"] = list(params.stop)
        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        url = self.base_url.rstrip("/") + "/chat/completions"
        last_error: Exception | None = None
        for attempt in range(self.max_retries + 1):
            if attempt:
                time.sleep(self.backoff_s * 2 ** (attempt - 1))
            started = time.perf_counter()
            try:
                response = httpx.post(url, json=body, headers=headers, timeout=self.timeout_s)
            except (httpx.TimeoutException, httpx.TransportError) as error:
                last_error = error
                continue
            if response.status_code == 429 or response.status_code >= 500:
                last_error = GenerationError(f"HTTP {response.status_code}: {response.text[:200]}")
                continue
            if response.status_code >= 400:
                raise GenerationError(f"{url} refused the request: HTTP {response.status_code}: {response.text[:300]}")
            try:
                out = response.json()
                choice = out["choices"][0]
                usage = out.get("usage") or {}
                return Generation(
                    text=(choice["message"].get("content") or "").strip(),
                    finish_reason=choice.get("finish_reason") or "stop",
                    prompt_tokens=int(usage.get("prompt_tokens", 0)),
                    completion_tokens=int(usage.get("completion_tokens", 0)),
                    seconds=time.perf_counter() - started,
                    key="",
                )
            except (ValueError, KeyError, IndexError, TypeError) as error:
                raise GenerationError(
                    f"{url} answered something that is not a chat completion: {response.text[:300]}"
                ) from error
        raise GenerationError(
            f"{url} failed {self.max_retries + 1} times (timeout {self.timeout_s}s); last error: {last_error!r}"
        )
