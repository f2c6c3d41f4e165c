"""The report's "Effective settings": what each training read after every override (profile, `extends`, the task's
``trainer:`` block, the seed), from the checkpoint tables themselves, so a report cannot print the profile's value
where a task's override was used."""

from __future__ import annotations

import json

import duckdb
import pandas as pd

from dsc_assets.lib.methods import CHECKPOINTED
from dsc_assets.lib.tables import markdown_table
from resources.stores import read_table


def effective_settings(con: duckdb.DuckDBPyConnection, task: str) -> dict[str, list[dict]]:
    """Method -> the settings of each of its trained seeds (empty where a table predates the ``settings`` column)."""
    found: dict[str, list[dict]] = {}
    for method in CHECKPOINTED:
        df = read_table(con, f"{method}_checkpoint", task)
        if df is None or "settings" not in df.columns:
            continue
        trained = df[(df["status"] == "trained") & df["settings"].fillna("").astype(bool)]
        if len(trained):
            found[method] = [json.loads(text) for text in trained["settings"]]
    return found


def settings_lines(con: duckdb.DuckDBPyConnection, task: str) -> list[str]:
    """Settings every training shares, then a table of each method's own (and its seeds)."""
    found = effective_settings(con, task)
    lines = ["## Effective settings", ""]
    if not found:
        return lines + ["No checkpoint table of this run records its settings (tables from before the column).", ""]
    firsts = {method: seeds[0] for method, seeds in found.items()}
    keys = sorted({key for settings in firsts.values() for key in settings})
    common = {
        key: firsts[next(iter(firsts))].get(key)
        for key in keys
        if key != "seed"
        and len({json.dumps(s.get(key), sort_keys=True) for s in firsts.values()}) == 1
        and all(key in s for s in firsts.values())
    }
    rows = []
    for method, seeds in found.items():
        own = {k: v for k, v in seeds[0].items() if k not in common and k != "seed"}
        rows.append(
            {
                "method": method,
                "seeds": ", ".join(str(s.get("seed")) for s in seeds),
                "its own settings": ", ".join(f"{k}={_value(v)}" for k, v in sorted(own.items())) or "none",
            }
        )
    lines += [
        "What each training read after the profile, its `extends`, the task's `trainer:` block and the seed (from the "
        "checkpoint tables).",
        "",
        "Shared by every training: " + ", ".join(f"`{k}={_value(v)}`" for k, v in common.items()) + ".",
        "",
        markdown_table(pd.DataFrame(rows)),
    ]
    return lines


def _value(value) -> str:
    return json.dumps(value) if isinstance(value, (list, dict)) else str(value)
