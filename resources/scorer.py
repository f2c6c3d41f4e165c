"""The base of every reward scorer: a stable identity, a range, and scores cached by content hash."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Sequence

from resources.hashing import call_key
from resources.stores import open_cache


class RewardScorer(ABC):
    """Scores (prompt, response) pairs; computes only what the cache does not hold."""

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

    def score(self, prompts: Sequence[str], responses: Sequence[str]) -> list[float]:
        if len(prompts) != len(responses):
            raise ValueError(f"{len(prompts)} prompts but {len(responses)} responses")
        identity = self.identity()
        keys = [call_key("score", identity, p, r) for p, r in zip(prompts, responses)]
        found = self.cache.get_many(keys)
        missing = [i for i, key in enumerate(keys) if key not in found]
        if missing:
            values = self._score([prompts[i] for i in missing], [responses[i] for i in missing])
            for i, value in zip(missing, values):
                found[keys[i]] = {"score": float(value)}
                self.cache.put(
                    keys[i],
                    "score",
                    identity,
                    {"prompt": prompts[i], "response": responses[i]},
                    {"score": float(value)},
                    0.0,
                )
        self.computed += len(missing)
        self.cached += len(keys) - len(missing)
        return [found[key]["score"] for key in keys]
