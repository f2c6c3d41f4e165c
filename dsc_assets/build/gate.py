"""`dsc gate`: one verdict per asset and task that covers its whole upstream (OK, FAILED, BLOCKED, STALE or
MISSING), from the same quality suites the blocking checks run (lib/suites.py) on the stored tables."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Collection

import pandas as pd

from dsc_assets.lib.quality import QualityReport
from dsc_assets.lib.suites import CHECKED_ASSETS, report_for
from dsc_assets.lib.tasks import Task
from resources.rewards import RewardModels

OK, FAILED, BLOCKED, STALE, MISSING = "OK", "FAILED", "BLOCKED", "STALE", "MISSING"


@dataclass
class Verdict:
    """One asset's gate verdict for one task. OK only if its own suite passes on the current table, every upstream
    suite passes, and the table was built from the current upstream data."""

    asset: str
    status: str = OK
    reasons: list[str] = field(default_factory=list)
    report: QualityReport | None = None
    failed_checks: list[str] = field(default_factory=list)  # own and upstream checks that failed
    rows: int = 0


def _stale_reasons(verdict: "Verdict", reasons: list[str]) -> list[str]:
    """`dsc plan`'s reasons for one asset in the gate's words; a failed blocking check above it (that Dagster
    recorded) makes the verdict BLOCKED instead."""
    stale = []
    for reason in reasons:
        if reason == "missing":  # rows in the table, but no record of the run that wrote them
            stale.append("no materialization recorded in this DAGSTER_HOME: how the table was built is unknown")
        elif reason.startswith("upstream data changed: "):
            parent = reason.removeprefix("upstream data changed: ")
            stale.append(f"built from an older {parent} ({parent} changed since)")
        elif reason.startswith("blocked"):  # Dagster recorded a failed blocking check above this asset
            if not any(check in reason for check in verdict.failed_checks):  # else said already
                verdict.reasons.append(reason)
            verdict.status = BLOCKED if verdict.status == OK else verdict.status
        elif not reason.startswith("upstream stale"):
            stale.append(reason)
    return stale


def unbuilt_steps_above(
    asset: str,
    upstream: dict[str, list[str]],
    table_of: Callable[[str], pd.DataFrame | None],
    materialized: Callable[[str], bool],
) -> list[str]:
    """Why a table is missing when an unchecked step above it (a checkpoint, the reward model) did not produce:
    each nearest such step that never materialized (its run failed) or skipped itself, with its own reason."""
    reasons, seen, queue = [], set(), list(upstream.get(asset, []))
    while queue:
        parent = queue.pop(0)
        if parent in seen:
            continue
        seen.add(parent)
        table = table_of(parent) if parent not in CHECKED_ASSETS else None
        status = str(table["status"].iloc[0]) if table is not None and "status" in table and len(table) else ""
        if parent not in CHECKED_ASSETS and not materialized(parent):
            reasons.append(
                f"upstream {parent} was not built: its step failed (see `dsc run`'s output or the run in the UI)"
            )
        elif status.startswith("skipped") and "not in the profile's methods" not in status:
            reasons.append(f"upstream {parent} {status}")
        else:
            queue += upstream.get(parent, [])
    return reasons


def gate_verdicts(
    task: Task,
    table_of: Callable[[str], pd.DataFrame | None],
    materialized: Callable[[str], bool],
    stale_reasons: dict[str, list[str]],
    upstream: dict[str, list[str]],
    rewards: RewardModels | None = None,
    overrides: dict | None = None,
    only: set[str] | None = None,
    methods: Collection[str] | None = None,
) -> dict[str, Verdict]:
    """Verdicts for every checked asset, in dependency order. ``table_of``: the task's rows (None: no table);
    ``materialized``: whether Dagster recorded a materialization of the asset for this task; ``stale_reasons``:
    `dsc plan`'s reasons per asset (staleness.plan); ``only``: these assets (with their upstream, for a verdict)."""
    order: list[str] = []

    def visit(asset: str) -> None:  # parents first, whatever the order of CHECKED_ASSETS
        if asset not in order:
            for parent in upstream.get(asset, []):
                if parent in CHECKED_ASSETS:
                    visit(parent)
            order.append(asset)

    for asset in CHECKED_ASSETS:
        visit(asset)
    verdicts: dict[str, Verdict] = {}
    for asset in [a for a in order if only is None or a in only]:
        verdict = verdicts[asset] = Verdict(asset)
        parents = [p for p in upstream.get(asset, []) if p in verdicts]
        table = table_of(asset)
        if table is None or (table.empty and not materialized(asset)):
            verdict.status = MISSING
            verdict.reasons.append("no table yet" if table is None else f"no rows for task '{task.name}'")
            verdict.reasons += unbuilt_steps_above(asset, upstream, table_of, materialized)
        else:
            verdict.rows = len(table)
            if table.empty:  # built, and empty: say which step above stopped short, if one did
                verdict.reasons += unbuilt_steps_above(asset, upstream, table_of, materialized)
            verdict.report = report_for(asset, table, task, rewards, overrides, methods)
            if not verdict.report.success:
                verdict.status = FAILED
                verdict.failed_checks.append(f"{asset}_quality")
                verdict.reasons.append(
                    f"{len(verdict.report.failed())} of {len(verdict.report.outcomes)} expectations failed"
                )
        failed_upstream = sorted({check for p in parents for check in verdicts[p].failed_checks})
        if failed_upstream:
            verdict.failed_checks += [c for c in failed_upstream if c not in verdict.failed_checks]
            verdict.reasons.append(f"upstream check failed: {', '.join(failed_upstream)}")
            if verdict.status == OK:
                verdict.status = BLOCKED
        if verdict.status == MISSING:
            continue
        stale = _stale_reasons(verdict, stale_reasons.get(asset, []))
        stale += [f"upstream {p} is {verdicts[p].status}" for p in parents if verdicts[p].status in (STALE, MISSING)]
        if stale:
            verdict.reasons += stale
            if verdict.status == OK:
                verdict.status = STALE
    return verdicts
