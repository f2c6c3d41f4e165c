"""LLM backends as Dagster resources: llama.cpp embedded (default) or any OpenAI-compatible server.

Both share one code path for caching: a call's key is the content hash of (model identity, messages, sampling
params, seed), its result is committed to DuckDB as soon as it returns, and a repeated call never reaches the
model. Assets only say *what* to ask; these classes know *how*.
"""

from __future__ import annotations

import os
import threading
import time
from abc import abstractmethod
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import dagster as dg
import httpx
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr

from resources.hashing import content_hash
from resources.models import ModelError, ModelFile, resolve_model
from resources.stores import CallCache

Message = dict[str, str]


class SamplingParams(BaseModel):
    """How to sample one completion. Part of every cache key."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    temperature: float = Field(0.7, ge=0.0, le=2.0)
    top_p: float = Field(0.95, gt=0.0, le=1.0)
    top_k: int = Field(40, ge=0)
    max_tokens: int = Field(192, ge=1, le=8192)
    repeat_penalty: float = Field(1.1, ge=0.5, le=2.0)
    seed: int = Field(1234, ge=0)
    stop: tuple[str, ...] = ()


@dataclass
class Generation:
    """One completion, from the model or from the cache."""

    text: str
    finish_reason: str
    prompt_tokens: int
    completion_tokens: int
    seconds: float
    key: str
    cached: bool = False

    def to_response(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("key"), data.pop("cached")
        return data


class GenerationError(RuntimeError):
    """The backend failed on a request after its retries. Everything already generated stays cached."""


class LLMResource(dg.ConfigurableResource):
    """A chat model behind a content-addressed DuckDB cache. Subclasses implement one uncached call."""

    cache_path: str = Field(
        default=".dsc/cache.duckdb", description="DuckDB file holding every model call, keyed by content hash."
    )

    _calls_made: int = PrivateAttr(default=0)
    _cache_hits: int = PrivateAttr(default=0)

    @abstractmethod
    def model_identity(self) -> str:
        """What, besides the request, decides the output: a weight file's sha256, or a server's model name."""

    @abstractmethod
    def _chat(self, messages: Sequence[Message], params: SamplingParams) -> Generation:
        """One uncached call (``key`` and ``cached`` are filled in by the caller)."""

    @property
    def cache(self) -> CallCache:
        return CallCache(self.cache_path)

    @property
    def calls_made(self) -> int:
        """Model calls this resource instance made (cache misses)."""
        return self._calls_made

    @property
    def cache_hits(self) -> int:
        return self._cache_hits

    def request_key(self, messages: Sequence[Message], params: SamplingParams) -> str:
        return content_hash("chat", self.model_identity(), list(messages), params)

    def chat(self, messages: Sequence[Message], params: SamplingParams) -> Generation:
        return self.chat_many([messages], params)[0]

    def chat_many(
        self,
        requests: Sequence[Sequence[Message]],
        params: SamplingParams,
        on_generated: Callable[[int, Generation], None] | None = None,
    ) -> list[Generation]:
        """Answer every request, asking the model only for those not in the cache (committed one by one)."""
        identity = self.model_identity()
        keys = [content_hash("chat", identity, list(messages), params) for messages in requests]
        cached = self.cache.get_many(keys)
        results: list[Generation] = []
        for index, (messages, key) in enumerate(zip(requests, keys)):
            hit = cached.get(key)
            if hit is not None:
                self._cache_hits += 1
                results.append(Generation(**hit, key=key, cached=True))
                continue
            generation = self._chat(messages, params)
            generation.key = key
            self.cache.put(key, "chat", identity, {"messages": list(messages), "params": params.model_dump()},
                           generation.to_response(), generation.seconds)
            self._calls_made += 1
            results.append(generation)
            if on_generated is not None:
                on_generated(index, generation)
        return results


# One loaded model per (file, settings) and process: loading is the slow part, and tests reuse it.
_LLAMAS: dict[tuple, Any] = {}
_LLAMA_LOCK = threading.Lock()


def load_llama(path: Path, n_ctx: int, n_threads: int, n_batch: int, logits_all: bool = False):
    """A cached ``llama_cpp.Llama``; errors from a broken file are turned into a ModelError."""
    key = (str(path), n_ctx, n_threads, n_batch, logits_all)
    with _LLAMA_LOCK:
        llama = _LLAMAS.get(key)
        if llama is None:
            from llama_cpp import Llama  # heavy import, only when a model is really used

            try:
                llama = Llama(
                    model_path=str(path), n_ctx=n_ctx, n_threads=n_threads, n_threads_batch=n_threads,
                    n_batch=n_batch, logits_all=logits_all, verbose=False,
                )
            except (ValueError, RuntimeError) as error:
                raise ModelError(f"llama.cpp could not load {path}: {error}") from error
            _LLAMAS[key] = llama
        return llama


class LlamaCppLLM(LLMResource):
    """llama.cpp embedded in the process (llama-cpp-python). Models by name or by local GGUF path; no downloads."""

    model: str = Field(default="smollm2-135m", description="Known model name or path to a .gguf file.")
    model_sha256: str | None = Field(default=None, description="Expected sha256 of a local .gguf (optional).")
    model_cache_dir: str = Field(default=".dsc/models", description="Where split models are assembled once.")
    n_ctx: int = Field(default=2048, description="Context window in tokens.")
    n_threads: int = Field(default=0, description="CPU threads; 0 means all cores.")
    n_batch: int = Field(default=512, description="Prompt-processing batch size.")

    _file: ModelFile | None = PrivateAttr(default=None)

    def model_file(self) -> ModelFile:
        if self._file is None:
            self._file = resolve_model(self.model, self.model_cache_dir, self.model_sha256)
        return self._file

    def model_identity(self) -> str:
        return f"gguf:{self.model_file().sha256}"

    def llama(self, logits_all: bool = False):
        threads = self.n_threads or os.cpu_count() or 1
        return load_llama(self.model_file().path, self.n_ctx, threads, self.n_batch, logits_all)

    def _chat(self, messages: Sequence[Message], params: SamplingParams) -> Generation:
        llama = self.llama()
        # Without reset the KV cache of the previous call changes even greedy output; the seed makes sampling
        # reproducible call by call, whatever ran before.
        llama.reset()
        llama.set_seed(params.seed)
        started = time.perf_counter()
        out = llama.create_chat_completion(
            messages=list(messages), temperature=params.temperature, top_p=params.top_p, top_k=params.top_k,
            max_tokens=params.max_tokens, repeat_penalty=params.repeat_penalty, seed=params.seed,
            stop=list(params.stop) or None,
        )
        seconds = time.perf_counter() - started
        choice = out["choices"][0]
        return Generation(
            text=(choice["message"].get("content") or "").strip(),
            finish_reason=choice.get("finish_reason") or "stop",
            prompt_tokens=int(out["usage"]["prompt_tokens"]),
            completion_tokens=int(out["usage"]["completion_tokens"]),
            seconds=seconds,
            key="",
        )


class OpenAICompatibleLLM(LLMResource):
    """Any server with an OpenAI-style ``/v1/chat/completions`` (llama.cpp server, Ollama, vLLM)."""

    base_url: str = Field(description="For example http://127.0.0.1:8080/v1 (Ollama: http://127.0.0.1:11434/v1).")
    model: str = Field(description="Model name the server knows.")
    model_revision: str = Field(
        default="", description="Bump when the server's weights change under the same name: it is part of the cache key."
    )
    api_key: str = Field(default="", description="Bearer token; set it with dg.EnvVar('OPENAI_API_KEY').")
    timeout_s: float = Field(default=120.0, description="Seconds to wait for one response.")
    max_retries: int = Field(default=3, description="Retries after a timeout, connection error, 429 or 5xx.")
    backoff_s: float = Field(default=1.0, description="First retry delay; doubles each retry.")

    def model_identity(self) -> str:
        return f"openai:{self.base_url.rstrip('/')}:{self.model}:{self.model_revision}"

    def _chat(self, messages: Sequence[Message], params: SamplingParams) -> Generation:
        body = {
            "model": self.model, "messages": list(messages), "temperature": params.temperature,
            "top_p": params.top_p, "max_tokens": params.max_tokens, "seed": params.seed,
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
                raise GenerationError(f"{url} answered something that is not a chat completion: {response.text[:300]}") from error
        raise GenerationError(
            f"{url} failed {self.max_retries + 1} times (timeout {self.timeout_s}s); last error: {last_error!r}"
        )
