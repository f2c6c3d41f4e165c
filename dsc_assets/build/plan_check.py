"""`dsc plan --json` and `--against`: a plan's time estimate per asset partition, written before a run, and later
set beside the wall time each of those steps measured (Dagster's step start and end in the instance), so the
estimate's error is a number per asset, not an impression."""

from __future__ import annotations

import json
import time
from pathlib import Path


def write_estimate(path: str, costs: dict, profile: str | None) -> None:
    """``costs``: {(asset, task): Cost} of what the plan would build (dsc_assets.build.cost)."""
    rows = [
        {
            "asset": asset,
            "task": task,
            "model_calls": cost.model_calls,
            "cached": cost.cached,
            "steps": cost.steps,
            "seconds": round(cost.seconds, 1),
        }
        for (asset, task), cost in costs.items()
    ]
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps({"created": time.time(), "profile": profile, "entries": rows}, indent=1) + "\n")


def measured_seconds(instance, asset: str, task: str, after: float) -> float | None:
    """Wall seconds of the step that materialized ``asset``'s ``task`` partition last, if that was after ``after``."""
    import dagster as dg

    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey(asset), asset_partitions=[task], after_timestamp=after), limit=1
    ).records
    if not records:
        return None
    entry = records[0].event_log_entry
    stats = instance.get_run_step_stats(entry.run_id, step_keys=[entry.step_key]) if entry.step_key else []
    if not stats or stats[0].start_time is None or stats[0].end_time is None:
        return None
    return stats[0].end_time - stats[0].start_time


def compare(path: str, instance) -> list[dict]:
    """Print each planned asset partition's estimate beside its measured step time; the total over those measured."""
    plan = json.loads(Path(path).read_text())
    rows = []
    for row in plan["entries"]:
        seconds = measured_seconds(instance, row["asset"], row["task"], plan["created"])
        rows.append({**row, "measured": seconds})
    width = max([len(r["asset"]) for r in rows] + [5])
    print(f"\n{'asset':<{width}}  {'task':<12} {'estimated min':>13} {'measured min':>12} {'ratio':>6}")
    for r in rows:
        measured = "-" if r["measured"] is None else f"{r['measured'] / 60:.1f}"
        ratio = f"{r['measured'] / r['seconds']:.2f}" if r["measured"] and r["seconds"] else "-"
        print(f"{r['asset']:<{width}}  {r['task']:<12} {r['seconds'] / 60:>13.1f} {measured:>12} {ratio:>6}")
    done = [r for r in rows if r["measured"] is not None]
    estimated, measured = sum(r["seconds"] for r in done), sum(r["measured"] for r in done)
    left = sum(r["seconds"] for r in rows if r["measured"] is None)
    ratio = f"measured/estimated {measured / estimated:.2f}" if estimated else "nothing estimated"
    print(
        f"\n{len(done)} of {len(rows)} planned asset partition(s) built since the plan: estimated "
        f"{estimated / 60:.1f} min, measured {measured / 60:.1f} min ({ratio}); {left / 60:.1f} min estimated for the rest."
    )
    return rows
