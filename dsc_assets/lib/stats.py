"""Statistics of the study: summaries of a reward column, the paired bootstrap of the evaluation, per-prompt
results and their subsets. Pure numpy and pandas."""

from __future__ import annotations

import json
from typing import Callable

import numpy as np
import pandas as pd

from dsc_assets.lib.guards import JOB_GUARDS

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


def bootstrap_ci(
    differences: np.ndarray, seed: int = 0, samples: int = 2000, level: float = 0.95
) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of paired differences."""
    if len(differences) == 0:
        return (float("nan"), float("nan"))
    rng = np.random.default_rng(seed)
    means = rng.choice(differences, size=(samples, len(differences)), replace=True).mean(axis=1)
    tail = (1 - level) / 2 * 100
    return float(np.percentile(means, tail)), float(np.percentile(means, 100 - tail))


def evaluation_table(rewards_by_model: dict[str, np.ndarray], seed: int = 0) -> pd.DataFrame:
    """Mean reward per model; win rate and bootstrap 95% interval of the paired difference against ``base``."""
    base = rewards_by_model["base"]
    rows = []
    for model, rewards in rewards_by_model.items():
        differences = rewards - base
        low, high = bootstrap_ci(differences, seed=seed)
        wins = float(np.mean((differences > 0) + 0.5 * (differences == 0))) if len(rewards) else float("nan")
        rows.append(
            {
                "model": model,
                "prompts": len(rewards),
                "mean_reward": float(np.mean(rewards)) if len(rewards) else float("nan"),
                "difference_vs_base": float(np.mean(differences)) if len(rewards) else float("nan"),
                "ci95_low": low,
                "ci95_high": high,
                "win_rate_vs_base": wins,
            }
        )
    return pd.DataFrame(rows)


def _number(value: float) -> float | None:
    return None if np.isnan(value) else float(value)  # full precision: a subset over every prompt is the table


def per_prompt_json(prompt_ids: list[str], rewards: np.ndarray, guards: dict[str, np.ndarray]) -> str:
    """One model's per-prompt results: the sample-mean reward and each job guard's per-prompt rate (null where the
    guard does not apply), aligned with ``prompt_ids``."""
    return json.dumps(
        {
            "prompt_id": list(prompt_ids),
            "reward": [_number(v) for v in rewards],
            **{guard: [_number(v) for v in values] for guard, values in guards.items()},
        }
    )


def subset_table(evaluation: pd.DataFrame, keep: Callable[[str], bool], seed: int = 0) -> pd.DataFrame:
    """The evaluation's rows recomputed over the test prompts ``keep`` accepts (from the ``per_prompt`` column):
    prompts, mean reward, difference from ``base`` with its 95% bootstrap interval, win rate, and each job guard
    against base. Empty when no prompt is kept; ValueError when the table has no per-prompt results."""
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
    guards = {model: {g: as_array(data[g]) for g in JOB_GUARDS if g in data} for model, data in parsed.items()}
    add_guard_differences(table, guards, seed)
    return table


def add_guard_differences(table: pd.DataFrame, guards: dict[str, dict[str, np.ndarray]], seed: int) -> None:
    """``<guard>_vs_base`` for each job guard ``base`` has: each model's per-prompt guard rates against the base's,
    paired over prompts ("not worse" is an interval that reaches 0); rows of models without rates stay empty."""
    for guard in JOB_GUARDS:
        if guard in guards["base"]:
            versus = {
                name: guard_difference(rates[guard], guards["base"][guard], seed) for name, rates in guards.items()
            }
            table[f"{guard}_vs_base"] = table["model"].map(versus)


def guard_difference(model: np.ndarray, base: np.ndarray, seed: int) -> str:
    """Mean per-prompt difference of a guard's rate from the base's, with its 95% bootstrap interval, over the
    prompts where the guard applies ("" where it applies to none)."""
    both = ~np.isnan(model) & ~np.isnan(base)
    if not both.any():
        return ""
    differences = model[both] - base[both]
    low, high = bootstrap_ci(differences, seed=seed)
    return f"{differences.mean():+.3f} [{low:+.3f}, {high:+.3f}]"


def pair_accuracy(chosen_scores: np.ndarray, rejected_scores: np.ndarray) -> float:
    """How often the chosen side scores higher (ties count half); NaN without pairs."""
    if not len(chosen_scores):
        return float("nan")
    return float(np.mean((chosen_scores > rejected_scores) + 0.5 * (chosen_scores == rejected_scores)))
