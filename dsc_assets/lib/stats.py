"""Statistics of the study: summaries of a reward column, the paired bootstrap of the evaluation, per-prompt
results and their subsets. Pure numpy and pandas."""

from __future__ import annotations

import json
from typing import Callable

import numpy as np
import pandas as pd

from dsc_assets.lib.guards import JOB_GUARDS

GUARD_MARGIN = -0.05  # a guard is "not worse" than base only when its difference's lower bound is above this
PER_PROMPT = "per_prompt"  # the evaluation's column of per-prompt results (JSON), for subsets of the test prompts


def quantiles(values: pd.Series) -> dict:
    if values.empty:
        return {}
    q = values.quantile([0.1, 0.5, 0.9])
    return {
        "mean": round(float(values.mean()), 4),
        "p10": round(float(q[0.1]), 4),
        "p50": round(float(q[0.5]), 4),
        "p90": round(float(q[0.9]), 4),
    }


def bootstrap_means(
    differences: np.ndarray, seed: int = 0, samples: int = 2000, clusters: list | None = None
) -> np.ndarray:
    """Means of ``samples`` resamples of paired differences. A 2-D array is (seeds, prompts): each resample draws
    prompts (the same ones for every seed, as they are paired across seeds) and then seeds, both with replacement,
    so the spread holds the prompts' variation and the training seeds' (one row: the plain paired bootstrap).

    ``clusters`` (one label per prompt: its group) draws whole groups instead of prompts (the cluster bootstrap):
    prompts of one group (one film, one person) are not independent, and resampling them one by one makes the
    interval too narrow. Where every prompt is its own group this is the prompt bootstrap, number for number."""
    rng = np.random.default_rng(seed)
    prompts = differences.shape[-1]
    if clusters is not None and len(set(clusters)) < prompts:
        return _cluster_means(differences, rng, samples, clusters)
    if differences.ndim == 1:
        return rng.choice(differences, size=(samples, len(differences)), replace=True).mean(axis=1)
    seeds = differences.shape[0]
    prompt_draw = rng.integers(0, prompts, size=(samples, prompts))
    seed_draw = rng.integers(0, seeds, size=(samples, seeds))
    per_seed = differences[:, prompt_draw].mean(axis=2)  # (seeds, samples): each seed's mean over drawn prompts
    return np.take_along_axis(per_seed.T, seed_draw, axis=1).mean(axis=1)


def _cluster_means(differences: np.ndarray, rng, samples: int, clusters: list) -> np.ndarray:
    """Each resample draws as many groups as there are, with replacement; a prompt counts as often as its group was
    drawn (the mean over the drawn prompts), then seeds are drawn as in the prompt bootstrap."""
    labels, member = np.unique(np.asarray([str(c) for c in clusters]), return_inverse=True)
    drawn = rng.integers(0, len(labels), size=(samples, len(labels)))
    counts = np.zeros((samples, len(labels)))
    np.add.at(counts, (np.arange(samples)[:, None], drawn), 1.0)
    weights = counts[:, member]  # (samples, prompts)
    per_seed = np.atleast_2d(differences) @ weights.T / weights.sum(axis=1)  # (seeds, samples)
    if differences.ndim == 1:
        return per_seed[0]
    seed_draw = rng.integers(0, differences.shape[0], size=(samples, differences.shape[0]))
    return np.take_along_axis(per_seed.T, seed_draw, axis=1).mean(axis=1)


def bootstrap_ci(
    differences: np.ndarray, seed: int = 0, samples: int = 2000, level: float = 0.95, clusters: list | None = None
) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of paired differences (per prompt; or seeds x prompts, see
    ``bootstrap_means``)."""
    if differences.size == 0:
        return (float("nan"), float("nan"))
    means = bootstrap_means(np.asarray(differences, dtype=float), seed, samples, clusters)
    tail = (1 - level) / 2 * 100
    return float(np.percentile(means, tail)), float(np.percentile(means, 100 - tail))


def bootstrap_p_value(
    differences: np.ndarray, seed: int = 0, samples: int = 10000, clusters: list | None = None
) -> float:
    """Two-sided bootstrap p-value of "the mean difference is 0": twice the share of resampled means on the far side
    of 0 (at least 1 / (samples + 1), as a finite resample cannot show less). The interval excludes 0 at level
    1 - alpha exactly when p < alpha (up to resampling noise), so Holm can adjust the verdicts."""
    if differences.size == 0:
        return float("nan")
    means = bootstrap_means(np.asarray(differences, dtype=float), seed, samples, clusters)
    tail = min(np.mean(means <= 0), np.mean(means >= 0))
    return float(min(1.0, max(2 * tail, 1 / (samples + 1))))


def holm_adjusted(p_values: dict[str, float]) -> dict[str, float]:
    """Holm-Bonferroni adjusted p-values of a family of tests (NaN entries are not tests and stay NaN): the i-th
    smallest of m is multiplied by m - i + 1, then made non-decreasing. A contrast passes at family-wise error 0.05
    when its adjusted p is below 0.05."""
    tests = sorted((p, name) for name, p in p_values.items() if not np.isnan(p))
    adjusted, running = {name: float("nan") for name in p_values}, 0.0
    for rank, (p, name) in enumerate(tests):
        running = max(running, min(1.0, (len(tests) - rank) * p))
        adjusted[name] = running
    return adjusted


def evaluation_table(
    rewards_by_model: dict[str, np.ndarray], seed: int = 0, clusters: list | None = None
) -> pd.DataFrame:
    """Mean reward per model; win rate, bootstrap 95% interval and two-sided p-value of the paired difference against
    ``base``. A model's rewards are one per prompt, or (training seeds, prompts) for a method trained at several
    seeds: its interval and p-value then resample prompts and seeds (``bootstrap_means``), its win rate is over the
    seed-mean per prompt, and ``seed_sd`` is the spread (sd) of the seeds' mean differences. ``base`` may be either
    shape; a 2-D base pairs seed k with seed k (a seeded method against a seeded control). ``clusters``: each
    prompt's group, for the cluster bootstrap (``bootstrap_means``); ``groups`` counts them."""
    base = np.asarray(rewards_by_model["base"], dtype=float)
    rows = []
    for model, rewards in rewards_by_model.items():
        rewards = np.asarray(rewards, dtype=float)
        differences = rewards - base
        per_prompt = differences if differences.ndim == 1 else differences.mean(axis=0)
        seeds = 1 if rewards.ndim == 1 else rewards.shape[0]
        low, high = bootstrap_ci(differences, seed=seed, clusters=clusters)
        p_value = bootstrap_p_value(differences, seed=seed, clusters=clusters) if model != "base" else float("nan")
        wins = float(np.mean((per_prompt > 0) + 0.5 * (per_prompt == 0))) if rewards.size else float("nan")
        rows.append(
            {
                "model": model,
                "prompts": rewards.shape[-1],
                "mean_reward": float(np.mean(rewards)) if rewards.size else float("nan"),
                "difference_vs_base": float(np.mean(differences)) if rewards.size else float("nan"),
                "ci95_low": low,
                "ci95_high": high,
                "win_rate_vs_base": wins,
                "p_value": p_value,
                "seeds": seeds,
                "seed_sd": float(np.std(differences.mean(axis=1), ddof=1)) if seeds > 1 else float("nan"),
                "groups": len(set(clusters)) if clusters is not None else rewards.shape[-1],
            }
        )
    return pd.DataFrame(rows)


SECOND = "second_"  # the prefix of the second reward's columns (task.yaml second_scorer)
SECOND_COLUMNS = ("mean_reward", "difference_vs_base", "ci95_low", "ci95_high", "p_value")
SPEARMAN = "rewards_spearman"  # rank correlation of the two rewards over the same answers


def add_second_reward(table: pd.DataFrame, second: pd.DataFrame) -> pd.DataFrame:
    """``table`` with the second reward's mean, difference from base, interval and p-value per row (``second``: the
    same rows' ``evaluation_table`` of the second reward, matched by model), prefixed ``second_``."""
    renamed = second.set_index("model")[list(SECOND_COLUMNS)].add_prefix(SECOND)
    return table.join(renamed, on="model")


def rank_correlation(first: np.ndarray, second: np.ndarray) -> float:
    """Spearman's rank correlation of two rewards of the same answers (ties share their mean rank); NaN under three
    answers or when either reward is constant."""
    first, second = np.ravel(np.asarray(first, dtype=float)), np.ravel(np.asarray(second, dtype=float))
    if len(first) != len(second):
        raise ValueError(f"{len(first)} first rewards but {len(second)} second ones: not the same answers")
    if len(first) < 3:
        return float("nan")
    return float(pd.Series(first).corr(pd.Series(second), method="spearman"))


def _number(value: float) -> float | None:
    return None if np.isnan(value) else float(value)  # full precision: a subset over every prompt is the table


def per_prompt_json(
    prompt_ids: list[str], rewards: np.ndarray, guards: dict[str, np.ndarray], second: np.ndarray | None = None
) -> str:
    """One model's per-prompt results: the sample-mean reward, each job guard's per-prompt rate (null where the
    guard does not apply) and, for a task with a second scorer, the second reward, aligned with ``prompt_ids``."""
    extra = {} if second is None else {SECOND + "reward": [_number(v) for v in second]}
    return json.dumps(
        {
            "prompt_id": list(prompt_ids),
            "reward": [_number(v) for v in rewards],
            **{guard: [_number(v) for v in values] for guard, values in guards.items()},
            **extra,
        }
    )


def subset_table(evaluation: pd.DataFrame, keep: Callable[[str], bool], seed: int = 0) -> pd.DataFrame:
    """The evaluation's rows recomputed over the test prompts ``keep`` accepts (from the ``per_prompt`` column):
    prompts, mean reward, difference from ``base`` with its 95% bootstrap interval, win rate, and each job guard
    against base (a seeded method's per-prompt results are its seeds' mean, so the interval is over prompts only).
    Empty when no prompt is kept; ValueError when the table has no per-prompt results."""
    if PER_PROMPT not in evaluation.columns or evaluation[PER_PROMPT].isna().all():
        raise ValueError(
            "the evaluation table has no per-prompt results (written before they were recorded): "
            "materialize `evaluation` again"
        )
    parsed = {
        row.model: json.loads(row.per_prompt) for row in evaluation.itertuples() if isinstance(row.per_prompt, str)
    }
    if "base" not in parsed:
        raise ValueError("the evaluation table has no per-prompt results for `base`")
    ids = parsed["base"]["prompt_id"]
    mask = np.array([keep(prompt_id) for prompt_id in ids], dtype=bool)
    if not mask.any():
        return pd.DataFrame()
    as_array = lambda values: np.array([np.nan if v is None else v for v in values], dtype=float)[mask]  # noqa: E731
    table = evaluation_table({model: as_array(data["reward"]) for model, data in parsed.items()}, seed=seed)
    dropped = ["seeds", "seed_sd", "groups"]  # per-prompt results hold the seeds' mean: prompts only here
    table = table.drop(columns=dropped)
    if all(SECOND + "reward" in data for data in parsed.values()):
        second = {model: as_array(data[SECOND + "reward"]) for model, data in parsed.items()}
        table = add_second_reward(table, evaluation_table(second, seed=seed))
    guards = {model: {g: as_array(data[g]) for g in JOB_GUARDS if g in data} for model, data in parsed.items()}
    add_guard_differences(table, guards, seed)
    return table


def add_guard_differences(table: pd.DataFrame, guards: dict[str, dict[str, np.ndarray]], seed: int) -> None:
    """``<guard>_vs_base`` for each job guard ``base`` has: each model's per-prompt guard rates against the base's,
    paired over prompts, with a verdict: "not worse" when the interval's lower bound is above GUARD_MARGIN (an
    interval that merely reaches 0 would pass more easily on fewer prompts); rows of models without rates stay empty."""
    for guard in JOB_GUARDS:
        if guard in guards["base"]:
            versus = {
                name: guard_difference(rates[guard], guards["base"][guard], seed) for name, rates in guards.items()
            }
            table[f"{guard}_vs_base"] = table["model"].map(versus)


def guard_difference(model: np.ndarray, base: np.ndarray, seed: int) -> str:
    """Mean per-prompt difference of a guard's rate from the base's, its 95% bootstrap interval and the verdict
    against GUARD_MARGIN, over the prompts where the guard applies ("" where it applies to none)."""
    both = ~np.isnan(model) & ~np.isnan(base)
    if not both.any():
        return ""
    differences = model[both] - base[both]
    low, high = bootstrap_ci(differences, seed=seed)
    verdict = "not worse" if low > GUARD_MARGIN else "may be worse"
    return f"{differences.mean():+.3f} [{low:+.3f}, {high:+.3f}] {verdict}"


def pair_accuracy(chosen_scores: np.ndarray, rejected_scores: np.ndarray) -> float:
    """How often the chosen side scores higher (ties count half); NaN without pairs."""
    if not len(chosen_scores):
        return float("nan")
    return float(np.mean((chosen_scores > rejected_scores) + 0.5 * (chosen_scores == rejected_scores)))
