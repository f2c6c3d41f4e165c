"""Metropolis-Hastings acceptance of a revision over the current sample of the chain.

The target is p(x | c, r) ∝ p(x | c)·exp(r(x)/T); critique-then-revise is the proposal. A proposal with reward
r_new replaces the current sample (reward r_cur) with probability min(1, exp((r_new − r_cur)/T)). At T = 0 this
is the reference code's greedy rule: keep the revision only if its reward strictly improves.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from resources.hashing import content_hash


@dataclass(frozen=True)
class Decision:
    accepted: bool
    probability: float
    draw: float


def uniform_draw(seed: int, *key: object) -> float:
    """A uniform number in [0, 1) from (seed, key): the same row gets the same draw, whatever the row order."""
    return int(content_hash("mh", seed, *key, length=13), 16) / 16**13


def acceptance_probability(current_reward: float, proposed_reward: float, temperature: float) -> float:
    delta = proposed_reward - current_reward
    if temperature <= 0:
        return 1.0 if delta > 0 else 0.0
    return 1.0 if delta >= 0 else math.exp(delta / temperature)


def metropolis_hastings(current_reward: float, proposed_reward: float, temperature: float, draw: float) -> Decision:
    probability = acceptance_probability(current_reward, proposed_reward, temperature)
    return Decision(accepted=draw < probability, probability=probability, draw=draw)
