"""Any OpenAI-compatible server as the generator (llama.cpp server, Ollama, vLLM, SGLang), or a pool of them serving
one model: the same cache and batching callbacks as the embedded backend, each request sent to the least-loaded
live server, a failed server taken out and its requests answered by the others."""

from __future__ import annotations

import time
from collections import deque
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Sequence

import dagster as dg
import httpx
from pydantic import Field, PrivateAttr

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

    _pool: "_Pool | None" = PrivateAttr(default=None)

    def model_identity(self) -> str:
        if not self.endpoints:
            return f"openai:{self.base_url.rstrip('/')}:{self.model}:{self.model_revision}"
        if self.identity_base_url:
            return f"openai:{self.identity_base_url.rstrip('/')}:{self.model}:{self.model_revision}"
        return f"openai-pool:{self.model}:{self.model_revision}"

    def endpoint_report(self) -> list[dict]:
        """Each endpoint's state in this process: live or out, answers, failed attempts, seconds busy, last error."""
        return [e.report() for e in self._state().endpoints]

    def seconds_per_call(self, cache: CallCache) -> float:
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

    def _state(self) -> "_Pool":
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
            self._pool = _Pool(
                [_EndpointState(url, e.max_concurrency or self.max_concurrency) for url, e in zip(urls, listed)],
                pooled=bool(self.endpoints),
            )
        return self._pool

    def _chat(self, messages: Sequence[Message], params: SamplingParams) -> Generation:
        out: list[Generation] = []
        self._generate([0], [messages], params, lambda index, generation: out.append(generation))
        return out[0]

    def _generate(self, indices, requests, params, commit) -> None:
        if indices:
            _Batch(self, self._state(), indices, requests, params, commit).run()

    def _post(self, url: str, messages: Sequence[Message], params: SamplingParams) -> Generation:
        """One attempt on one endpoint. Raises _Lost (no connection), _Transient (timeout, 429, 5xx) or
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
            raise _Transient(repr(error)) from error
        except httpx.TransportError as error:  # refused, reset, closed mid-answer: the server is not there
            raise _Lost(repr(error)) from error
        if response.status_code == 429 or response.status_code >= 500:
            raise _Transient(repr(GenerationError(f"HTTP {response.status_code}: {response.text[:200]}")))
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


class _Lost(Exception):
    """The connection failed: refused, reset, or closed before the answer."""


class _Transient(Exception):
    """A timeout, 429 or 5xx: the server is there but did not answer this time."""


@dataclass(eq=False)
class _Attempt:
    """One request in flight on one endpoint; ``share`` accrues its part of the endpoint's time while it runs."""

    index: int
    endpoint: "_EndpointState"
    share: float = 0.0


@dataclass(eq=False)
class _EndpointState:
    url: str
    concurrency: int
    live: bool = True
    failures_in_a_row: int = 0
    last_error: str = ""
    out_since: float = 0.0
    answers: int = 0
    failed_attempts: int = 0
    busy_s: float = 0.0
    probing: bool = False
    flight: list[_Attempt] = field(default_factory=list)
    last_tick: float = 0.0

    def tick(self, now: float) -> None:
        """Split the time since the last event among the requests in flight, as the embedded engine splits a decode
        step among its sequences: an answer's ``seconds`` is its share, and the shares sum to the time busy."""
        if self.flight:
            elapsed = now - self.last_tick
            for attempt in self.flight:
                attempt.share += elapsed / len(self.flight)
            self.busy_s += elapsed
        self.last_tick = now

    def room(self) -> float:
        return 1.0 - len(self.flight) / self.concurrency

    def report(self) -> dict:
        return {
            "url": self.url,
            "live": self.live,
            "answers": self.answers,
            "failed_attempts": self.failed_attempts,
            "busy_s": round(self.busy_s, 3),
            "last_error": self.last_error,
        }


@dataclass
class _Pool:
    """The endpoints' state, kept across batches so a server found dead is not asked first again by the next step."""

    endpoints: list[_EndpointState]
    pooled: bool  # several endpoints declared as one pool (a single base_url is never taken out)

    def live(self) -> list[_EndpointState]:
        return [e for e in self.endpoints if e.live]

    def summary(self) -> str:
        return "; ".join(
            f"{e.url}: {'live' if e.live else 'out'}"
            + (f" (last error: {e.last_error})" if e.last_error else "")
            + f", {e.answers} answers"
            for e in self.endpoints
        )


@dataclass
class _Queued:
    index: int
    not_before: float = 0.0
    avoid: _EndpointState | None = None  # the endpoint it just failed on: another one is preferred


class _Batch:
    """One ``_generate`` call: dispatches requests to endpoints, commits answers in the calling thread as they
    arrive, moves failed requests elsewhere, and stops sending once a request fails for good or no endpoint is left
    (the answers in flight still land in the cache)."""

    def __init__(self, llm: OpenAICompatibleLLM, pool: _Pool, indices, requests, params, commit):
        self.llm, self.pool, self.requests, self.params, self.commit = llm, pool, requests, params, commit
        self.queue = deque(_Queued(i) for i in indices)
        self.attempts = {i: 0 for i in indices}  # failed attempts that count against max_retries
        self.lost = {i: 0 for i in indices}  # attempts lost with an endpoint that was taken out
        self.committed = 0
        self.failure: BaseException | None = None
        self.log = dg.get_dagster_logger("dsc.generation")

    def run(self) -> None:
        workers = sum(e.concurrency for e in self.pool.endpoints) + len(self.pool.endpoints)  # + one probe each
        executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="dsc-llm")
        self.futures: dict[Future, _Attempt | _EndpointState] = {}
        try:
            self._probe_out(executor)
            while True:
                now = time.monotonic()
                self._probe_due(executor, now)
                if self.failure is None:
                    self._dispatch(executor, now)
                if not any(isinstance(job, _Attempt) for job in self.futures.values()):
                    if self.failure is not None or not self.queue:
                        break
                    if not self.pool.live():
                        self.failure = self._pool_exhausted()
                        break
                timeout = self._next_wake(now)
                if self.futures:
                    done, _ = wait(self.futures, timeout=timeout, return_when=FIRST_COMPLETED)
                else:  # only retries waiting out their backoff
                    time.sleep(timeout or 0.01)
                    done = set()
                now = time.monotonic()
                for future in done:
                    self._settle(future, self.futures.pop(future), now)
        except BaseException:
            executor.shutdown(wait=False, cancel_futures=True)
            raise
        executor.shutdown(wait=False, cancel_futures=True)  # only probes can remain; their answer is not needed
        if self.failure is not None:
            raise self.failure

    def _dispatch(self, executor: ThreadPoolExecutor, now: float) -> None:
        waiting: list[_Queued] = []
        while self.queue:
            item = self.queue.popleft()
            free = [e for e in self.pool.live() if e.room() > 0]
            if item.not_before > now or not free:
                waiting.append(item)
                if not free:
                    break
                continue
            others = [e for e in free if e is not item.avoid]
            endpoint = max(others or free, key=lambda e: (e.room(), -e.answers))
            endpoint.tick(now)
            attempt = _Attempt(item.index, endpoint)
            endpoint.flight.append(attempt)
            future = executor.submit(self.llm._post, endpoint.url, self.requests[item.index], self.params)
            self.futures[future] = attempt
        self.queue.extendleft(reversed(waiting))  # first asked, first sent

    def _next_wake(self, now: float) -> float | None:
        """How long to wait for an answer before looking at the queue again: until a retry's backoff ends or a
        taken-out endpoint is due for a probe; None (until an answer) when neither."""
        times = [item.not_before for item in self.queue if item.not_before > now and self.failure is None]
        if self.llm.reprobe_s > 0:
            times += [e.out_since + self.llm.reprobe_s for e in self.pool.endpoints if not e.live and not e.probing]
        return max(min(times) - now, 0.01) if times else None

    def _settle(self, future: Future, job: _Attempt | _EndpointState, now: float) -> None:
        if isinstance(job, _EndpointState):
            self._probed(job, future.result(), now)
            return
        endpoint = job.endpoint
        endpoint.tick(now)
        endpoint.flight.remove(job)
        try:
            generation = future.result()
        except (_Lost, _Transient) as error:
            self._failed(job, endpoint, error, now)
            return
        except Exception as error:  # noqa: BLE001  (refused, or not a chat completion: raised once the rest land)
            self.failure = self.failure or error
            return
        endpoint.failures_in_a_row = 0
        endpoint.answers += 1
        generation.seconds = job.share
        self.commit(job.index, generation)  # cached in the calling thread, as each answer arrives
        self.committed += 1

    def _failed(self, job: _Attempt, endpoint: _EndpointState, error: Exception, now: float) -> None:
        endpoint.failed_attempts += 1
        endpoint.failures_in_a_row += 1
        endpoint.last_error = str(error)
        others_live = [e for e in self.pool.live() if e is not endpoint]
        if endpoint.live and self.pool.pooled:
            lost_connection = isinstance(error, _Lost) and others_live
            if lost_connection or endpoint.failures_in_a_row > self.llm.max_retries:
                self._take_out(endpoint, now)
        if not endpoint.live:  # the endpoint failed, not the request: it goes to another at once
            self.lost[job.index] += 1
            if self.lost[job.index] > len(self.pool.endpoints):
                self.failure = self.failure or GenerationError(
                    f"a request was in flight on {self.lost[job.index]} endpoints that failed while answering it "
                    f"(it may be what makes them fail); endpoints: {self.pool.summary()}"
                )
                return
            self.queue.appendleft(_Queued(job.index))
            return
        self.attempts[job.index] += 1
        if self.attempts[job.index] > self.llm.max_retries:
            self.failure = self.failure or self._request_failed(endpoint, error)
            return
        delay = self.llm.backoff_s * 2 ** (self.attempts[job.index] - 1)
        self.queue.appendleft(_Queued(job.index, not_before=now + delay, avoid=endpoint))

    def _take_out(self, endpoint: _EndpointState, now: float) -> None:
        endpoint.live, endpoint.out_since = False, now
        left = len(self.pool.live())
        moved = f"its {len(endpoint.flight) + 1} request(s) in flight go to the {left} left" if left else "none is left"
        again = f"; asked again in {self.llm.reprobe_s:g} s" if self.llm.reprobe_s > 0 else ""
        self.log.warning(
            f"generation endpoint {endpoint.url} is out of the pool after {endpoint.failures_in_a_row} failed "
            f"attempt(s) in a row ({endpoint.last_error}): {moved}{again}"
        )

    def _probe_out(self, executor: ThreadPoolExecutor) -> None:
        """Before a batch, ask every taken-out endpoint again (at once, and waiting for the answers): a step that
        starts after a server came back, or a retried step, finds it live."""
        if self.llm.reprobe_s <= 0:
            return
        probes = {executor.submit(self.llm._probe, e.url): e for e in self.pool.endpoints if not e.live}
        for future, endpoint in probes.items():
            self._probed(endpoint, future.result(), time.monotonic())

    def _probe_due(self, executor: ThreadPoolExecutor, now: float) -> None:
        if self.llm.reprobe_s <= 0:
            return
        for endpoint in self.pool.endpoints:
            if not endpoint.live and not endpoint.probing and now - endpoint.out_since >= self.llm.reprobe_s:
                endpoint.probing = True
                self.futures[executor.submit(self.llm._probe, endpoint.url)] = endpoint

    def _probed(self, endpoint: _EndpointState, answered: bool, now: float) -> None:
        endpoint.probing = False
        if not answered:
            endpoint.out_since = now
            return
        endpoint.live, endpoint.failures_in_a_row, endpoint.last_tick = True, 0, now
        self.log.warning(f"generation endpoint {endpoint.url} answers again: back in the pool")

    def _request_failed(self, endpoint: _EndpointState, error: Exception) -> GenerationError:
        tries = self.llm.max_retries + 1
        if not self.pool.pooled:  # the message a single server always gave
            return GenerationError(
                f"{endpoint.url}/chat/completions failed {tries} times (timeout {self.llm.timeout_s}s); last error: "
                f"{error}"
            )
        return GenerationError(
            f"a request failed {tries} times (timeout {self.llm.timeout_s}s); last error on {endpoint.url}: {error}; "
            f"{self._cached_note()}; endpoints: {self.pool.summary()}"
        )

    def _pool_exhausted(self) -> GenerationError:
        return GenerationError(
            f"no generation endpoint is left of {len(self.pool.endpoints)} ({self._cached_note()}): "
            f"{self.pool.summary()}"
        )

    def _cached_note(self) -> str:
        missing = len(self.attempts) - self.committed
        return f"{self.committed} answers of this batch are cached, {missing} missing: a rerun asks only for those"
