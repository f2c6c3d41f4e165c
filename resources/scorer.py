"""The base of every reward scorer: a stable identity, a range, and scores cached by content hash."""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from contextvars import ContextVar
from typing import Callable, Sequence

from resources.hashing import call_key
from resources.stores import open_cache

# Where scoring reports its progress (the asset's run log): set by the caller around ``score()``; None: silent. A
# judge scores a study's evaluation for an hour: without it the step would show nothing that long.
SCORE_PROGRESS: ContextVar[Callable[[str], None] | None] = ContextVar("score_progress", default=None)
PROGRESS_EVERY_S = 30.0


class ScoreProgress:
    """Counts scores as they are committed; a line at the first, every ``PROGRESS_EVERY_S`` and at the last."""

    def __init__(self, name: str, total: int):
        self.log, self.name, self.total = SCORE_PROGRESS.get(), name, total
        self.done, self.started, self.last = 0, time.perf_counter(), None

    def __call__(self) -> None:
        self.done += 1
        now = time.perf_counter()
        if self.log is None or not (
            self.last is None or now - self.last >= PROGRESS_EVERY_S or self.done == self.total
        ):
            return
        self.last, rate = now, self.done / max(now - self.started, 1e-9)
        left = (self.total - self.done) / rate / 60
        self.log(f"{self.name}: {self.done}/{self.total} scored, {rate:.2f}/s, ~{left:.1f} min left")


class RewardScorer(ABC):
    """Scores (prompt, response) pairs; computes only what the cache does not hold, and commits each score as soon
    as it is computed (a killed run loses only the scores in flight)."""

    name: str = "reward"

    def __init__(self, cache_path: str):
        self.cache = open_cache(cache_path)
        self.computed = 0
        self.cached = 0

    @abstractmethod
    def identity(self) -> str:
        """Everything besides the texts that decides a score (scorer, its options, model sha)."""

    @abstractmethod
    def score_range(self) -> tuple[float, float]: ...

    @abstractmethod
    def _score(self, prompts: list[str], responses: list[str]) -> list[float]: ...

    def _score_each(self, prompts: list[str], responses: list[str], done: Callable[[int, float], None]) -> None:
        """``done(i, score)`` for every pair; a scorer that finishes pairs one by one (the judge) calls it as each
        one is scored, so it is committed at once."""
        for i, value in enumerate(self._score(prompts, responses)):
            done(i, value)

    def score(self, prompts: Sequence[str], responses: Sequence[str]) -> list[float]:
        if len(prompts) != len(responses):
            raise ValueError(f"{len(prompts)} prompts but {len(responses)} responses")
        identity = self.identity()
        keys = [call_key("score", identity, p, r) for p, r in zip(prompts, responses)]
        found = self.cache.get_many(keys)
        first: dict[str, int] = {}
        for i, key in enumerate(keys):
            first.setdefault(key, i)  # a pair asked twice is scored once
        missing = [i for key, i in first.items() if key not in found]
        if missing:
            progress, clock = ScoreProgress(self.name, len(missing)), [time.perf_counter()]

            def done(j: int, value: float) -> None:
                # Each score records the time since the one before: they sum to the call's time, so their mean is the
                # rate `dsc plan` charges a score of this scorer (a judge's: seconds; VADER's: next to nothing).
                i, now = missing[j], time.perf_counter()
                found[keys[i]], seconds, clock[0] = {"score": float(value)}, now - clock[0], now
                request = {"prompt": prompts[i], "response": responses[i]}
                self.cache.put(keys[i], "score", identity, request, found[keys[i]], seconds)
                progress()

            self._score_each([prompts[i] for i in missing], [responses[i] for i in missing], done)
        self.computed += len(missing)
        self.cached += len(keys) - len(missing)
        return [found[key]["score"] for key in keys]
