"""The study's summary table: every planned task x method contrast in one table, with its difference from base, its
interval, its Holm-adjusted verdict, the second reward's difference and the two rewards' agreement. Written by
`dsc report` to ``<out>/summary.md`` and into ``reports/README.md`` between two markers, so the table a reader sees
is the one the tables give, never typed by hand."""

from __future__ import annotations

import math
import re
from pathlib import Path

import duckdb
import pandas as pd

from dsc_assets.lib.family import Family, holm_verdict
from dsc_assets.lib.tables import markdown_table
from dsc_assets.lib.verdicts import second_verdict
from resources.stores import read_table

BEGIN, END = "<!-- dsc report: summary of {name} (begin) -->", "<!-- dsc report: summary of {name} (end) -->"


def _interval(row, prefix: str = "") -> str:
    low, high = row.get(f"{prefix}ci95_low", float("nan")), row.get(f"{prefix}ci95_high", float("nan"))
    difference = row.get(f"{prefix}difference_vs_base", float("nan"))
    if any(math.isnan(float(v)) for v in (low, high, difference)):
        return ""
    return f"{difference:+.3f} [{low:+.3f}, {high:+.3f}]"


def summary_table(con: duckdb.DuckDBPyConnection, family: Family) -> pd.DataFrame:
    """One row per contrast of the family, in its planned order; a contrast not measured yet says so."""
    tables = {}
    rows = []
    for task, model in family.raw:
        if task not in tables:
            evaluation = read_table(con, "evaluation", task)
            tables[task] = None if evaluation is None or evaluation.empty else evaluation.set_index("model")
        table = tables[task]
        if (task, model) in family.missing or table is None or model not in table.index:
            rows.append({"task": task, "contrast": model, "difference [95% CI]": "not measured yet"})
            continue
        row = table.loc[model]
        second = _interval(row, "second_")
        rows.append(
            {
                "task": task,
                "contrast": model if " vs " in model else f"{model} vs base",
                "prompts": int(row["prompts"]),
                "seeds": int(row["seeds"]) if "seeds" in row else 1,
                "difference [95% CI]": _interval(row),
                "holm_p": f"{family.adjusted[(task, model)]:.3f}",
                "after Holm": holm_verdict(float(row["difference_vs_base"]), family.adjusted[(task, model)]),
                "second reward [95% CI]": second,
                "second verdict": second_verdict(row["second_ci95_low"], row["second_ci95_high"]) if second else "",
                "spearman": f"{row['rewards_spearman']:.2f}" if "rewards_spearman" in row else "",
            }
        )
    return pd.DataFrame(rows).fillna("")


def write_summary(con: duckdb.DuckDBPyConnection, family: Family, out: Path, name: str, readme: Path | None) -> Path:
    """``<out>/summary.md``; and the same table between the markers of ``name`` in ``readme`` when it has them."""
    table = markdown_table(summary_table(con, family))
    measured = family.size - len(family.missing)
    text = (
        f"# Summary: profile `{name}`\n\nEvery planned contrast of the profile ({family.size}; {measured} measured), "
        "each against base unless it names its control, on the test split. `after Holm` is the verdict at "
        "family-wise error 0.05 over the whole family (a contrast not measured yet counts with p = 1); the second "
        "reward selected no data and is read alone. Written by `dsc report`.\n\n" + table
    )
    out.mkdir(parents=True, exist_ok=True)
    (out / "summary.md").write_text(text)
    if readme is not None and readme.exists():
        begin, end = BEGIN.format(name=name), END.format(name=name)
        body = readme.read_text()
        if begin in body and end in body:
            block = f"{begin}\n{table}\n{end}"
            readme.write_text(re.sub(re.escape(begin) + ".*?" + re.escape(end), lambda _: block, body, flags=re.S))
    return out / "summary.md"
