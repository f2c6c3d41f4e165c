"""LLM backends as Dagster resources: llama.cpp embedded (default) or any OpenAI-compatible server.

Both share one code path for caching: a call's key is the content hash of (model identity, messages, sampling
params, seed), its result is committed to DuckDB as soon as it returns, and a repeated call never reaches the
model. Assets only say *what* to ask; these classes know *how*.
"""

from __future__ import annotations

import atexit
import os
import threading
import time
from abc import abstractmethod
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import dagster as dg
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr

import resources.threads  # noqa: F401  (first: sets OMP_WAIT_POLICY before llama_cpp is ever imported)
from resources.hashing import call_key
from resources.models import ModelError, ModelFile, resolve_model
from resources.stores import CallCache, open_cache
from resources.threads import THREADS_ENV, llama_threads, usable_cores

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
    endpoint: str = ""  # the server that answered (OpenAI-compatible backend); not part of the key

    def to_response(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("key"), data.pop("cached")
        if not data["endpoint"]:  # embedded answers are stored as before
            data.pop("endpoint")
        return data


class GenerationProgress:
    """``on_generated`` callback: a log line every ``every`` rows or ``interval_s`` seconds, and at the last row, with
    rows done / total and the step's generation throughput (completion tokens / wall time so far)."""

    def __init__(self, log: Callable[[str], None], total: int, every: int = 8, interval_s: float = 30.0):
        self.log, self.total, self.every, self.interval_s = log, total, every, interval_s
        self.done = self.tokens = 0
        self.started = self.last_log = time.perf_counter()

    def __call__(self, index: int, generation: Generation) -> None:
        self.done += 1
        self.tokens += generation.completion_tokens
        now = time.perf_counter()
        if self.done % self.every == 0 or self.done >= self.total or now - self.last_log >= self.interval_s:
            self.last_log = now
            self.log(
                f"{self.done}/{self.total} rows generated, {self.tokens / max(now - self.started, 1e-9):.1f} tok/s"
            )


class GenerationError(RuntimeError):
    """The backend failed on a request after its retries. Everything already generated stays cached."""


class LLMResource(dg.ConfigurableResource):
    """A chat model behind a content-addressed call cache. Subclasses implement one uncached call."""

    cache_path: str = Field(
        default=".dsc/cache.duckdb",
        description="Where every model call is kept, keyed by content hash: a DuckDB file, or a postgresql:// URL.",
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
        return open_cache(self.cache_path)

    @property
    def calls_made(self) -> int:
        """Model calls this resource instance made (cache misses)."""
        return self._calls_made

    @property
    def cache_hits(self) -> int:
        return self._cache_hits

    def seconds_per_call(self, cache: CallCache) -> float | None:
        """Seconds per computed call as measured in ``cache`` (what `dsc plan` multiplies by the calls it counts);
        None before any."""
        return cache.mean_seconds(self.model_identity())

    def request_key(self, messages: Sequence[Message], params: SamplingParams) -> str:
        return call_key("chat", self.model_identity(), list(messages), params)

    def count_missing(self, requests: Sequence[Sequence[Message]], params: SamplingParams) -> int:
        """How many distinct requests the cache cannot answer (what ``chat_many`` would ask the model)."""
        identity = self.model_identity()
        keys = {call_key("chat", identity, list(messages), params) for messages in requests}
        return len(keys - set(self.cache.get_many(list(keys))))

    def chat(self, messages: Sequence[Message], params: SamplingParams) -> Generation:
        return self.chat_many([messages], params)[0]

    def chat_many(
        self,
        requests: Sequence[Sequence[Message]],
        params: SamplingParams,
        on_generated: Callable[[int, Generation], None] | None = None,
    ) -> list[Generation]:
        """Answer every request, asking the model only for those not in the cache. Each answer is committed to the
        cache as soon as it is finished (in a batch, in the order they finish), then ``on_generated(index, it)``."""
        identity = self.model_identity()
        keys = [call_key("chat", identity, list(messages), params) for messages in requests]
        cached = self.cache.get_many(keys)
        results: list[Generation | None] = [None] * len(requests)
        missing: list[int] = []
        for index, key in enumerate(keys):
            hit = cached.get(key)
            if hit is None:
                missing.append(index)
                continue
            self._cache_hits += 1
            results[index] = Generation(**hit, key=key, cached=True)
        first_ask: dict[str, int] = {}
        duplicates: list[int] = []
        for index in missing:  # the same request twice in one call is asked once
            if keys[index] in first_ask:
                duplicates.append(index)
            else:
                first_ask[keys[index]] = index

        def commit(index: int, generation: Generation) -> None:
            generation.key = keys[index]
            self.cache.put(
                keys[index],
                "chat",
                identity,
                {"messages": list(requests[index]), "params": params.model_dump()},
                generation.to_response(),
                generation.seconds,
            )
            self._calls_made += 1
            results[index] = generation
            if on_generated is not None:
                on_generated(index, generation)

        self._generate(list(first_ask.values()), requests, params, commit)
        for index in duplicates:
            source = results[first_ask[keys[index]]]
            results[index] = Generation(**source.to_response(), key=keys[index], cached=True)
        return results  # type: ignore[return-value]

    def _generate(
        self,
        indices: list[int],
        requests: Sequence[Sequence[Message]],
        params: SamplingParams,
        commit: Callable[[int, Generation], None],
    ) -> None:
        """Generate the requests at ``indices`` and ``commit`` each as it finishes. Default: one at a time."""
        for index in indices:
            commit(index, self._chat(requests[index], params))


# One loaded model per (file, settings) and process: loading is the slow part, and tests reuse it.
_LLAMAS: dict[tuple, Any] = {}
_LLAMA_LOCK = threading.Lock()


@atexit.register
def _close_models() -> None:
    # Contexts and models freed while llama_cpp is still loaded: at interpreter teardown their finalizers would run
    # after the module is gone and print tracebacks.
    from resources.batched import close_engines

    close_engines()
    with _LLAMA_LOCK:
        for llama in _LLAMAS.values():
            llama.close()
        _LLAMAS.clear()


def load_llama(path: Path, n_ctx: int, n_threads: int, n_batch: int, logits_all: bool = False):
    """A cached ``llama_cpp.Llama``; errors from a broken file are turned into a ModelError."""
    key = (str(path), n_ctx, n_threads, n_batch, logits_all)
    with _LLAMA_LOCK:
        llama = _LLAMAS.get(key)
        if llama is None:
            from llama_cpp import Llama  # heavy import, only when a model is really used

            try:
                llama = Llama(
                    model_path=str(path),
                    n_ctx=n_ctx,
                    n_threads=n_threads,
                    n_threads_batch=n_threads,
                    n_batch=n_batch,
                    logits_all=logits_all,
                    verbose=False,
                )
            except (ValueError, RuntimeError) as error:
                raise ModelError(f"llama.cpp could not load {path}: {error}") from error
            _LLAMAS[key] = llama
        return llama


def side_by_side(models: int, n_threads: int = 0) -> tuple[int, int | None]:
    """(workers, threads per model) for answering with ``models`` small models: one 1-thread context per usable core
    side by side (the 135M student: 1.69x the throughput of one context on all cores, bench/README.md "Evaluation in
    parallel"), unless ``n_threads`` (or DSC_LLAMA_THREADS) pins the threads, which then run one model at a time."""
    cores = usable_cores()
    if n_threads > 0 or os.environ.get(THREADS_ENV, "").strip() or cores == 1 or models < 2:
        return 1, None
    return min(models, cores), 1


class LlamaCppLLM(LLMResource):
    """llama.cpp embedded in the process (llama-cpp-python). Models by name or by local GGUF path; no downloads.

    Rows are decoded ``batch_size`` at a time in one llama.cpp context (continuous batching: a finished row's slot
    takes the next prompt at once), each with its own sampler seeded with ``params.seed``; each answer is committed
    to the cache as it finishes."""

    model: str = Field(default="smollm2-135m", description="Known model name or path to a .gguf file.")
    model_sha256: str | None = Field(default=None, description="Expected sha256 of a local .gguf (optional).")
    model_cache_dir: str = Field(default=".dsc/models", description="Where split models are assembled once.")
    n_ctx: int = Field(default=2048, description="Context window in tokens, per answer (prompt + answer).")
    n_threads: int = Field(
        default=0,
        description="CPU threads; 0: the thread rule (DSC_LLAMA_THREADS, else every core this process may use).",
    )
    n_batch: int = Field(default=512, description="Tokens per llama_decode call (prompt chunks and decode steps).")
    batch_size: int = Field(
        default=8,
        ge=1,
        le=64,
        description="Answers decoded together in one context. Part of the cache key: see model_identity.",
    )

    _file: ModelFile | None = PrivateAttr(default=None)
    # a prompt's start that another prompt in the context already holds is copied, not prefilled again (ALMoST's
    # demonstrations, a task's system prompt: bench/generation_sharing.py measures off against on)
    _share_prefixes: bool = PrivateAttr(default=True)

    def model_file(self) -> ModelFile:
        if self._file is None:
            self._file = resolve_model(self.model, self.model_cache_dir, self.model_sha256)
        return self._file

    def model_identity(self) -> str:
        return f"gguf:{self.model_file().sha256}{_batch_tag(self.batch_size)}"

    def with_model(self, model: str) -> "LlamaCppLLM":
        """These settings (cache, context, threads, batch) on another model file, such as a checkpoint's GGUF."""
        return type(self)(**{**self.model_dump(), "model": model, "model_sha256": None})

    def threads(self) -> int:
        return llama_threads(self.n_threads)

    def with_threads(self, n_threads: int) -> "LlamaCppLLM":
        """These settings with ``n_threads`` (the answers are the same: a test checks 1 against 2 threads)."""
        return type(self)(**{**self.model_dump(), "n_threads": n_threads})

    def llama(self, logits_all: bool = False):
        return load_llama(self.model_file().path, self.n_ctx, self.threads(), self.n_batch, logits_all)

    def engine(self):
        """The batched-decoding context on this model's weights (one per settings and process)."""
        from resources.batched import batch_engine

        llama = self.llama()
        return batch_engine(
            llama, (str(self.model_file().path),), self.batch_size, self.n_ctx, self.threads(), self.n_batch
        )

    def _chat(self, messages: Sequence[Message], params: SamplingParams) -> Generation:
        out: list[Generation] = []
        self._generate([0], [messages], params, lambda index, generation: out.append(generation))
        return out[0]

    def _generate(self, indices, requests, params, commit) -> None:
        if not indices:
            return
        from resources.batched import DECODE_LOCK, CompletionRequest
        from resources.chat_prompt import chat_prompt

        llama = self.llama()
        batch = []
        for index in indices:
            prompt, stops = chat_prompt(llama, requests[index], params.stop)
            batch.append(CompletionRequest(index=index, prompt=prompt, stops=stops, max_tokens=params.max_tokens))

        def done(index: int, completion) -> None:
            commit(
                index,
                Generation(
                    text=completion.text.strip(),
                    finish_reason=completion.finish_reason,
                    prompt_tokens=completion.prompt_tokens,
                    completion_tokens=completion.completion_tokens,
                    seconds=completion.seconds,
                    key="",
                ),
            )

        # this context's cores (all of them unless n_threads says fewer); no other thread closes this engine meanwhile
        with DECODE_LOCK.cores(self.threads()):
            self.engine().generate(
                batch,
                top_k=params.top_k,
                top_p=params.top_p,
                temperature=params.temperature,
                repeat_penalty=params.repeat_penalty,
                seed=params.seed,
                on_done=done,
                share_prefixes=self._share_prefixes,
            )


def _batch_tag(batch_size: int) -> str:
    # Decoding several sequences per step changes the floating-point path (matrix kernels for several rows), so an
    # answer depends on the batch it was decoded in: the batch size is part of the key. At batch size 1 the engine
    # reproduces create_chat_completion token for token, and the key is the one earlier versions wrote.
    return "" if batch_size == 1 else f":batch{batch_size}"
