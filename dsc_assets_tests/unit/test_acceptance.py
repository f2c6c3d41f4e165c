"""Metropolis-Hastings acceptance statistics on synthetic scores."""

from __future__ import annotations

import numpy as np

from dsc_assets.lib.acceptance import acceptance_probability, metropolis_hastings, uniform_draw


def _rate(deltas, temperature, seed=0):
    return float(
        np.mean(
            [
                metropolis_hastings(0.0, delta, temperature, uniform_draw(seed, i)).accepted
                for i, delta in enumerate(deltas)
            ]
        )
    )


def test_greedy_at_zero_temperature_keeps_only_strict_improvements():
    deltas = np.linspace(-1, 1, 201)
    decisions = [metropolis_hastings(0.0, d, 0.0, uniform_draw(3, i)) for i, d in enumerate(deltas)]
    assert all(dec.accepted == (d > 0) for dec, d in zip(decisions, deltas))
    assert not metropolis_hastings(0.5, 0.5, 0.0, 0.0).accepted  # a tie is not an improvement


def test_small_temperature_approaches_greedy():
    deltas = np.random.default_rng(0).normal(0, 1, 2000)
    greedy = float(np.mean(deltas > 0))
    assert abs(_rate(deltas, 1e-3) - greedy) < 0.01


def test_large_temperature_accepts_about_half_of_symmetric_differences():
    rng = np.random.default_rng(1)
    deltas = rng.normal(0, 1, 4000)
    rate = _rate(deltas, 1e3)
    assert abs(rate - 1.0) < 0.01  # at huge T, exp(delta/T) -> 1: everything is accepted
    # For symmetric differences the expected rate is 1/2 + E[exp(-|d|/T)]/2: between greedy (1/2) and 1.
    moderate = _rate(deltas, 1.0)
    expected = 0.5 + 0.5 * float(np.mean(np.exp(-np.abs(deltas))))
    assert abs(moderate - expected) < 0.03
    assert _rate(deltas, 0.0) < moderate < rate


def test_acceptance_rate_grows_with_temperature():
    deltas = np.random.default_rng(2).normal(-0.5, 1, 3000)
    rates = [_rate(deltas, t) for t in (0.0, 0.1, 0.5, 2.0, 10.0)]
    assert rates == sorted(rates) and rates[0] < rates[-1]


def test_probability_formula_and_seeded_reproducibility():
    assert acceptance_probability(1.0, 0.5, 0.5) == np.exp(-1.0)
    assert acceptance_probability(0.0, 2.0, 0.5) == 1.0
    assert uniform_draw(7, "a", 1) == uniform_draw(7, "a", 1)
    assert uniform_draw(7, "a", 1) != uniform_draw(8, "a", 1)
    deltas = np.random.default_rng(3).normal(0, 1, 500)
    first = [metropolis_hastings(0, d, 0.7, uniform_draw(5, i)).accepted for i, d in enumerate(deltas)]
    second = [metropolis_hastings(0, d, 0.7, uniform_draw(5, i)).accepted for i, d in enumerate(deltas)]
    other = [metropolis_hastings(0, d, 0.7, uniform_draw(6, i)).accepted for i, d in enumerate(deltas)]
    assert first == second and first != other
    draws = [uniform_draw(0, i) for i in range(5000)]
    assert 0 <= min(draws) and max(draws) < 1 and abs(np.mean(draws) - 0.5) < 0.02
