"""The table `dsc run` ends with: each evaluated method against the base student, with its interval, its p-value and
its verdict after Holm over the profile's family (every planned task x method), read back from the warehouse."""

from __future__ import annotations

import math

import pandas as pd

from dsc_assets.lib.family import CONTROLS, Family, holm_verdict
from dsc_assets.lib.tables import markdown_table
from resources.stores import read_table


def verdict_rows(evaluation: pd.DataFrame, task: str, family: Family) -> pd.DataFrame:
    """One row per contrast of ``task``'s evaluation table: difference, 95% interval, raw and Holm-adjusted p, the
    verdict (computed, never asserted), mean answer words; the null control's row says whether the export is exact."""
    rows = []
    for row in evaluation.itertuples():
        if row.model == "base":
            continue
        adjusted = family.adjusted.get((task, row.model), float("nan"))
        if row.model in CONTROLS:
            verdict = (
                "null control: export changes nothing" if row.ci95_low <= 0 <= row.ci95_high else "null control FAILS"
            )
        else:
            verdict = holm_verdict(row.difference_vs_base, adjusted)
        rows.append(
            {
                "model": row.model,
                "prompts": row.prompts,
                "difference_vs_base": f"{row.difference_vs_base:+.3f}",
                "ci95": f"[{row.ci95_low:+.3f}, {row.ci95_high:+.3f}]",
                "p": _p(getattr(row, "p_value", float("nan"))),
                "holm_p": _p(adjusted),
                "verdict": verdict,
                "words": f"{getattr(row, 'mean_answer_words', float('nan')):.0f}",
            }
        )
        if hasattr(row, "second_difference_vs_base"):  # the task's second reward, which selected no data
            rows[-1]["second reward"] = (
                f"{row.second_difference_vs_base:+.3f} [{row.second_ci95_low:+.3f}, {row.second_ci95_high:+.3f}]"
            )
            rows[-1]["spearman"] = _p(getattr(row, "rewards_spearman", float("nan")))
    return pd.DataFrame(rows)


def _p(value: float) -> str:
    if value is None or math.isnan(value):
        return ""
    return "<0.001" if value < 0.001 else f"{value:.3f}"  # a bootstrap p is never 0: at least 1 / (resamples + 1)


def print_verdicts(database: str, tasks: list[str], planned_tasks: list[str], methods: list[str], split: str) -> bool:
    """Print the verdict table of every task in ``tasks`` that has an evaluation; False when none has one.
    ``database``: the warehouse's DuckDB file or postgresql:// URL."""
    from dsc_assets.lib.family import study_family
    from resources.stores import open_warehouse

    con = open_warehouse(str(database))
    if con is None:
        return False
    try:
        family = study_family(con, list(dict.fromkeys([*planned_tasks, *tasks])), methods)
        shown = False
        for task in tasks:
            evaluation = read_table(con, "evaluation", task)
            if evaluation is None or evaluation.empty:
                continue
            print(
                f"\ndsc run: {task}, {split} split: each model against the base student (95% bootstrap interval; "
                f"Holm over the family's {family.size} contrasts)\n{markdown_table(verdict_rows(evaluation, task, family))}",
                flush=True,
            )
            shown = True
        return shown
    finally:
        con.close()
