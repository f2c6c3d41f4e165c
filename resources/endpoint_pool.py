"""The scheduler behind a pool of OpenAI-compatible endpoints (``OpenAICompatibleLLM``): which endpoint gets the next
request, what a failure does to the request and to its endpoint, and each answer's share of its endpoint's time.
Everything here runs in the calling thread except the HTTP calls themselves, so commits stay in order of arrival."""

from __future__ import annotations

import time
from collections import deque
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Protocol, Sequence

import dagster as dg

from resources.llm import Generation, GenerationError, Message, SamplingParams


class PoolClient(Protocol):
    """What the scheduler needs of its resource (``OpenAICompatibleLLM``): the retry settings and one HTTP call."""

    max_retries: int
    backoff_s: float
    reprobe_s: float
    timeout_s: float

    def _post(self, url: str, messages: Sequence[Message], params: SamplingParams) -> Generation: ...

    def _probe(self, url: str) -> bool: ...


class Lost(Exception):
    """The connection failed: refused, reset, or closed before the answer."""


class Transient(Exception):
    """A timeout, 429 or 5xx: the server is there but did not answer this time."""


@dataclass(eq=False)
class Attempt:
    """One request in flight on one endpoint; ``share`` accrues its part of the endpoint's time while it runs."""

    index: int
    endpoint: "EndpointState"
    share: float = 0.0


@dataclass(eq=False)
class EndpointState:
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
    flight: list[Attempt] = field(default_factory=list)
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
class Pool:
    """The endpoints' state, kept across batches so a server found dead is not asked first again by the next step."""

    endpoints: list[EndpointState]
    pooled: bool  # several endpoints declared as one pool (a single base_url is never taken out)

    def live(self) -> list[EndpointState]:
        return [e for e in self.endpoints if e.live]

    def summary(self) -> str:
        return "; ".join(
            f"{e.url}: {'live' if e.live else 'out'}"
            + (f" (last error: {e.last_error})" if e.last_error else "")
            + f", {e.answers} answers"
            for e in self.endpoints
        )


@dataclass
class Queued:
    index: int
    not_before: float = 0.0
    avoid: EndpointState | None = None  # the endpoint it just failed on: another one is preferred


class Batch:
    """One ``_generate`` call: dispatches requests to endpoints, commits answers in the calling thread as they
    arrive, moves failed requests elsewhere, and stops sending once a request fails for good or no endpoint is left
    (the answers in flight still land in the cache)."""

    def __init__(self, llm: PoolClient, pool: Pool, indices, requests, params, commit):
        self.llm, self.pool, self.requests, self.params, self.commit = llm, pool, requests, params, commit
        self.queue = deque(Queued(i) for i in indices)
        self.attempts = {i: 0 for i in indices}  # failed attempts that count against max_retries
        self.lost = {i: 0 for i in indices}  # attempts lost with an endpoint that was taken out
        self.committed = 0
        self.failure: BaseException | None = None
        self.log = dg.get_dagster_logger("dsc.generation")

    def run(self) -> None:
        workers = sum(e.concurrency for e in self.pool.endpoints) + len(self.pool.endpoints)  # + one probe each
        executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="dsc-llm")
        self.futures: dict[Future, Attempt | EndpointState] = {}
        for endpoint in self.pool.endpoints:  # a probe an earlier batch left running is never read
            endpoint.probing = False
        try:
            self._probe_out(executor)
            while True:
                now = time.monotonic()
                self._probe_due(executor, now)
                if self.failure is None:
                    self._dispatch(executor, now)
                if not any(isinstance(job, Attempt) for job in self.futures.values()):
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
        waiting: list[Queued] = []
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
            attempt = Attempt(item.index, endpoint)
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

    def _settle(self, future: Future, job: Attempt | EndpointState, now: float) -> None:
        if isinstance(job, EndpointState):
            self._probed(job, future.result(), now)
            return
        endpoint = job.endpoint
        endpoint.tick(now)
        endpoint.flight.remove(job)
        try:
            generation = future.result()
        except (Lost, Transient) as error:
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

    def _failed(self, job: Attempt, endpoint: EndpointState, error: Exception, now: float) -> None:
        endpoint.failed_attempts += 1
        endpoint.failures_in_a_row += 1
        endpoint.last_error = str(error)
        others_live = [e for e in self.pool.live() if e is not endpoint]
        if endpoint.live and self.pool.pooled:
            lost_connection = isinstance(error, Lost) and others_live
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
            self.queue.appendleft(Queued(job.index))
            return
        self.attempts[job.index] += 1
        if self.attempts[job.index] > self.llm.max_retries:
            self.failure = self.failure or self._request_failed(endpoint, error)
            return
        delay = self.llm.backoff_s * 2 ** (self.attempts[job.index] - 1)
        self.queue.appendleft(Queued(job.index, not_before=now + delay, avoid=endpoint))

    def _take_out(self, endpoint: EndpointState, now: float) -> None:
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

    def _probed(self, endpoint: EndpointState, answered: bool, now: float) -> None:
        endpoint.probing = False
        if not answered:
            endpoint.out_since = now
            return
        endpoint.live, endpoint.failures_in_a_row, endpoint.last_tick = True, 0, now
        self.log.warning(f"generation endpoint {endpoint.url} answers again: back in the pool")

    def _request_failed(self, endpoint: EndpointState, error: Exception) -> GenerationError:
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
