"""This run's evaluation against the report it replaces: the previous table read back from its markdown, and
whether each difference lies inside the previous interval (what "reproduces within its interval" means here)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from dsc_assets.lib.tables import markdown_table


def previous_evaluation(report: Path) -> tuple[pd.DataFrame, str] | None:
    """The evaluation table and the commit line of a report this module wrote before (the committed one, when a
    fresh clone reruns the study); None when there is none or it has no evaluation table."""
    try:
        text = report.read_text()
    except OSError:
        return None
    section = text.split("\n## Evaluation", 1)[1].split("\n## ", 1)[0] if "\n## Evaluation" in text else ""
    rows = [line.strip().strip("|").split("|") for line in section.splitlines() if line.startswith("|")]
    if len(rows) < 3:
        return None
    header = [cell.strip() for cell in rows[0]]
    table = pd.DataFrame([[cell.strip() for cell in row] for row in rows[2:]], columns=header)
    needed = ["model", "difference_vs_base", "ci95_low", "ci95_high"]
    if not set(needed) <= set(table.columns):
        return None
    table = table[needed].copy()
    for column in needed[1:]:
        table[column] = pd.to_numeric(table[column].str.replace("—", "nan"), errors="coerce")
    lines = text.splitlines()
    return table, lines[2] if len(lines) > 2 else ""


def reproduction_table(previous: pd.DataFrame, evaluation: pd.DataFrame) -> pd.DataFrame:
    """Each model in both: the previous difference and interval beside this run's difference, and whether this
    run's difference lies inside the previous interval (what "reproduces within its interval" means here)."""
    now = evaluation.set_index("model")["difference_vs_base"]
    rows = []
    for row in previous.itertuples():
        if row.model == "base" or row.model not in now.index:
            continue
        inside = bool(row.ci95_low <= now[row.model] <= row.ci95_high)
        rows.append(
            {
                "model": row.model,
                "previous difference": row.difference_vs_base,
                "previous 95% CI": f"[{row.ci95_low:.3f}, {row.ci95_high:.3f}]",
                "this run": float(now[row.model]),
                "inside the previous interval": "yes" if inside else "NO",
            }
        )
    return pd.DataFrame(rows)


def previous_report_section(previous_report: Path, evaluation: pd.DataFrame) -> list[str]:
    """This run against the report it replaces, model by model (nothing when there is none)."""
    lines: list[str] = []
    previous = previous_evaluation(previous_report)
    if previous is not None:
        compared = reproduction_table(previous[0], evaluation)
        if len(compared):
            outside = compared.loc[compared["inside the previous interval"] == "NO", "model"].tolist()
            lines += [
                "## Against the previous report",
                "",
                f"The report this one replaces ({previous[1].rstrip('.') or 'no commit line'}), model by model: "
                f"{'every difference lies inside its previous interval' if not outside else 'outside: ' + ', '.join(outside)}.",
                "",
                markdown_table(compared),
            ]
    return lines
