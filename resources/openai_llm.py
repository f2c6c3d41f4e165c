"""Any OpenAI-compatible server as the generator (llama.cpp server, Ollama, vLLM, SGLang), or a pool of them serving
one model: the same cache and batching callbacks as the embedded backend, each request sent to the least-loaded
live server, a failed server taken out and its requests answered by the others."""

from __future__ import annotations

from typing import Sequence

import dagster as dg
import httpx
from pydantic import Field, PrivateAttr

from resources.endpoint_pool import Batch, EndpointState, Lost, Pool, Transient
from resources.llm import Generation, GenerationError, LLMResource, Message, SamplingParams
from resources.stores import CallCache

PROBE_TIMEOUT_S = 5.0  # a taken-out server that is back answers GET /models at once


class Endpoint(dg.Config):
    """One server of a pool: where it listens and how many requests it takes at once."""

    url: str = Field(description="For example http://10.0.0.2:8000/v1.")
    max_concurrency: int | None = Field(
        default=None, ge=1, le=256, description="Requests in flight at once on this server; unset: the resource's."
    )


class OpenAICompatibleLLM(LLMResource):
    """Any server with an OpenAI-style ``/v1/chat/completions`` (llama.cpp server, Ollama, vLLM, SGLang), or a pool of
    such servers (``endpoints``) that serve the same model.

    A pool sends each request to the live endpoint with the most free room (fewest in flight for its concurrency). An
    endpoint whose connection is refused or reset is taken out at once, one that times out or answers 429/5xx after
    ``max_retries + 1`` failures in a row; its requests go to the others, and it is asked again (``GET /models``)
    every ``reprobe_s``. When no endpoint is left the call fails with every endpoint's last error; each answer
    received until then is already in the cache.

    Cache identity: a single ``base_url`` keeps ``openai:<base_url>:<model>:<revision>``, the key earlier versions
    wrote (the URL stood for the weights behind it). A pool declares that its endpoints serve the same weights, so
    its identity is ``openai-pool:<model>:<revision>`` for 1 or N endpoints, whichever answered, and adding or
    moving a replica keeps every key; ``identity_base_url`` keeps a former single server's keys instead."""

    base_url: str = Field(
        default="",
        description="One server, e.g. http://127.0.0.1:8080/v1 (Ollama: http://127.0.0.1:11434/v1); or use endpoints.",
    )
    endpoints: list[Endpoint] = Field(
        default_factory=list,
        description="Several servers of the same model (a pool; the cache key names no URL); instead of base_url.",
    )
    identity_base_url: str = Field(
        default="",
        description="A pool only: the former single base_url whose cache keys it keeps (adding replicas to a server "
        "already used regenerates nothing). Empty: the keys name only model and model_revision.",
    )
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
        "as it arrives. Not part of the cache key: the server, not this client, decides how it batches. In a pool: "
        "per endpoint, unless the endpoint sets its own.",
    )
    reprobe_s: float = Field(
        default=30.0, ge=0.0, description="A pool: seconds before a taken-out endpoint is asked again; 0: never."
    )

    _pool: "Pool | None" = PrivateAttr(default=None)

    def model_identity(self) -> str:
        if not self.endpoints:
            return f"openai:{self.base_url.rstrip('/')}:{self.model}:{self.model_revision}"
        if self.identity_base_url:
            return f"openai:{self.identity_base_url.rstrip('/')}:{self.model}:{self.model_revision}"
        return f"openai-pool:{self.model}:{self.model_revision}"

    def endpoint_report(self) -> list[dict]:
        """Each endpoint's state in this process: live or out, answers, failed attempts, seconds busy, last error."""
        return [e.report() for e in self._state().endpoints]

    def seconds_per_call(self, cache: CallCache) -> float | None:
        """Seconds per call of the whole pool: one over the sum of its endpoints' measured rates (calls per second
        busy). An endpoint never measured counts at the mean rate of those measured; none measured: the cache's mean
        for this model (rows from before endpoints were recorded)."""
        measured = cache.endpoint_seconds(self.model_identity())
        rates = {url: 1.0 / seconds for url, (seconds, _calls) in measured.items() if url and seconds > 0}
        configured = [e.url for e in self._state().endpoints]
        known = [rates[url] for url in configured if url in rates]
        if not known:
            return cache.mean_seconds(self.model_identity())
        typical = sum(known) / len(known)
        return 1.0 / sum(rates.get(url, typical) for url in configured)

    def _state(self) -> "Pool":
        if self._pool is None:
            if bool(self.base_url) == bool(self.endpoints):
                raise GenerationError(
                    "the OpenAI-compatible generator needs base_url (one server) or endpoints (a pool), not "
                    f"{'both' if self.base_url else 'neither'}"
                )
            listed = self.endpoints or [Endpoint(url=self.base_url, max_concurrency=self.max_concurrency)]
            urls = [e.url.rstrip("/") for e in listed]
            if len(set(urls)) < len(urls):
                raise GenerationError(f"endpoints lists a URL twice: {', '.join(urls)}")
            self._pool = Pool(
                [EndpointState(url, e.max_concurrency or self.max_concurrency) for url, e in zip(urls, listed)],
                pooled=bool(self.endpoints),
            )
        return self._pool

    def _chat(self, messages: Sequence[Message], params: SamplingParams) -> Generation:
        out: list[Generation] = []
        self._generate([0], [messages], params, lambda index, generation: out.append(generation))
        return out[0]

    def _generate(self, indices, requests, params, commit) -> None:
        if indices:
            Batch(self, self._state(), indices, requests, params, commit).run()

    def _post(self, url: str, messages: Sequence[Message], params: SamplingParams) -> Generation:
        """One attempt on one endpoint. Raises Lost (no connection), Transient (timeout, 429, 5xx) or
        GenerationError (refused or not a chat completion: asking again would not help)."""
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
        address = url + "/chat/completions"
        try:
            response = httpx.post(address, json=body, headers=headers, timeout=self.timeout_s)
        except httpx.TimeoutException as error:
            raise Transient(repr(error)) from error
        except httpx.TransportError as error:  # refused, reset, closed mid-answer: the server is not there
            raise Lost(repr(error)) from error
        if response.status_code == 429 or response.status_code >= 500:
            raise Transient(repr(GenerationError(f"HTTP {response.status_code}: {response.text[:200]}")))
        if response.status_code >= 400:
            raise GenerationError(f"{address} refused the request: HTTP {response.status_code}: {response.text[:300]}")
        try:
            out = response.json()
            choice = out["choices"][0]
            usage = out.get("usage") or {}
            return Generation(
                text=(choice["message"].get("content") or "").strip(),
                finish_reason=choice.get("finish_reason") or "stop",
                prompt_tokens=int(usage.get("prompt_tokens", 0)),
                completion_tokens=int(usage.get("completion_tokens", 0)),
                seconds=0.0,  # set by the batch: the answer's share of its endpoint's busy time
                key="",
                endpoint=url,
            )
        except (ValueError, KeyError, IndexError, TypeError) as error:
            raise GenerationError(
                f"{address} answered something that is not a chat completion: {response.text[:300]}"
            ) from error

    def _probe(self, url: str) -> bool:
        try:
            return httpx.get(url + "/models", timeout=min(self.timeout_s, PROBE_TIMEOUT_S)).status_code == 200
        except httpx.HTTPError:
            return False
