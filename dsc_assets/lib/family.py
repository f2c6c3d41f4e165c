"""The study's family of claims and its Holm-Bonferroni correction: every method x task contrast a profile plans,
from each task's evaluation table, so no single verdict is read alone."""

from __future__ import annotations

import math
from dataclasses import dataclass

import duckdb

from dsc_assets.lib.stats import holm_adjusted, subset_table
from dsc_assets.lib.tasks import load_task
from resources.stores import read_table

CONTROLS = ("base", "base_original")  # the reference and the null control: not claims, not in the family
METHOD_MODELS = {
    "sft": ["sft"],
    "dpo": ["dpo"],
    "rdpo": ["rdpo"],
    "dlma": ["dlma"],
    "almost": ["almost_sft", "almost_rl vs almost_sft"],
    "placebo": ["sft vs placebo"],  # the control's claim: critique and revision add to more teacher text
}


@dataclass
class Family:
    """The study's family of claims: every (task, method contrast) the profile plans, with raw and Holm-adjusted
    p-values. A planned contrast without a table yet counts with p = 1, so reporting part of a study never makes the
    correction weaker than the whole study's."""

    raw: dict[tuple[str, str], float]
    adjusted: dict[tuple[str, str], float]
    missing: list[tuple[str, str]]

    @property
    def size(self) -> int:
        return len(self.raw)


def study_family(con: duckdb.DuckDBPyConnection, tasks: list[str], methods: list[str]) -> Family:
    """Holm over every method x task of the profile (``tasks``, ``methods``), from each task's evaluation table."""
    planned = [(task, model) for task in tasks for method in methods for model in METHOD_MODELS[method]]
    raw: dict[tuple[str, str], float] = {}
    for task in tasks:
        evaluation = read_table(con, "evaluation", task)
        if evaluation is None or evaluation.empty:
            continue
        if "p_value" not in evaluation.columns:  # a table from before p-values: recomputed from its per-prompt rows
            try:
                evaluation = subset_table(evaluation, lambda _: True, seed=load_task(task).spec.acceptance.seed)
            except ValueError:  # nor per-prompt results: counted as not measured (p = 1) until it is rerun
                continue
        for row in evaluation.itertuples():
            if row.model not in CONTROLS and not math.isnan(row.p_value):
                raw[(task, row.model)] = float(row.p_value)
    missing = [key for key in planned if key not in raw]
    raw.update({key: 1.0 for key in missing})
    return Family(raw, holm_adjusted(raw), missing)


def holm_verdict(difference: float, adjusted: float) -> str:
    if math.isnan(adjusted):
        return "no test"
    if adjusted < 0.05:
        return "better after Holm" if difference > 0 else "worse after Holm"
    return "not significant after Holm"
