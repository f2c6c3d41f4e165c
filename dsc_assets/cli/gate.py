"""`dsc gate`: the quality gate for CI, one verdict per asset and task with everything upstream."""

from __future__ import annotations

import argparse

from dsc_assets.cli.common import (
    UsageError,
    dagster_instance,
    execute,
    load,
    print_failures,
    quiet,
    run_preflight,
    task_list,
)

GATE_HELP = """Exit codes: 0 every printed asset is OK; 1 one is FAILED (its own suite), BLOCKED (an upstream suite
failed), STALE (built from older upstream data or older task files) or MISSING (no table or no rows for the task);
2 usage or configuration error. --assets narrows what is printed, never what must hold: an asset is OK only if
everything upstream of it is."""


def cmd_gate(args: argparse.Namespace) -> int:
    """Materialize the data assets (unless --check-only), then judge each asset with its whole upstream."""
    dg, defs, profile = load(args)
    from dsc_assets.lib.suites import CHECKED_ASSETS

    tasks = task_list(args.tasks, profile.tasks)
    selected = [a.strip() for a in args.assets.split(",") if a.strip()] if args.assets else CHECKED_ASSETS
    unknown = sorted(set(selected) - set(CHECKED_ASSETS))
    if unknown:
        raise UsageError(f"no quality suite for {', '.join(unknown)}; checked: {', '.join(CHECKED_ASSETS)}")
    run_preflight(profile, tasks, locks=True)
    instance = dagster_instance()
    from dsc_assets.build.staleness import asset_order

    _, upstream = asset_order(defs)
    needed, queue = set(), list(selected)  # the printed assets and everything upstream of them
    while queue:
        asset = queue.pop()
        if asset not in needed:
            needed.add(asset)
            queue += upstream.get(asset, [])
    if not args.check_only:
        job = quiet(defs.resolve_implicit_global_asset_job_def(), args)
        # the checked assets and whatever they are built from (ALMoST's best-of-N needs its trained reward model)
        data_assets = [dg.AssetKey(name) for name in sorted(needed)]
        for task in tasks:
            print(f"dsc gate: materializing the data assets of '{task}' ...", flush=True)
            result = execute(job, task, instance, data_assets)
            if not result.success:
                print_failures(result, "dsc gate", task, args.verbose)
    problems = []
    for task_name in tasks:
        problems += _gate_task(defs, instance, task_name, selected, needed)
    if problems:
        print(f"\ndsc gate: FAILED: {'; '.join(problems)}")
        return 1
    print(f"\ndsc gate: passed ({len(selected)} asset(s) x {len(tasks)} task(s) OK, with everything upstream)")
    return 0


def _gate_task(defs, instance, task_name: str, selected: list[str], needed: set[str]) -> list[str]:
    """Print the verdicts of one task's selected assets; return '<task>: <asset> <STATUS>' for each that is not OK."""
    import dagster as dg

    from dsc_assets.build.gate import OK, gate_verdicts
    from dsc_assets.build.staleness import asset_order, plan
    from dsc_assets.lib.profiles import dsc_home, load_profile, warehouse_location
    from dsc_assets.lib.tasks import load_task
    from resources.stores import open_warehouse, read_table

    task = load_task(task_name)
    resources = defs.resources
    _, upstream = asset_order(defs)
    stale = {e.asset: e.reasons for e in plan(defs, instance, [task_name], observe=False)}
    con = open_warehouse(warehouse_location(load_profile(), dsc_home()))

    def table_of(asset: str):
        return read_table(con, asset, task_name)

    def materialized(asset: str) -> bool:
        return bool(
            instance.fetch_materializations(
                dg.AssetRecordsFilter(asset_key=dg.AssetKey(asset), asset_partitions=[task_name]), limit=1
            ).records
        )

    try:
        verdicts = gate_verdicts(
            task,
            table_of,
            materialized,
            stale,
            upstream,
            resources["rewards"],
            resources["settings"].quality_overrides,
            only=needed,
            methods=resources["settings"].methods,
        )
    finally:
        if con is not None:
            con.close()
    _print_verdicts(task_name, verdicts, selected)
    return [f"{task_name}: {asset} {verdicts[asset].status}" for asset in selected if verdicts[asset].status != OK]


def _print_verdicts(task_name: str, verdicts: dict, selected: list[str]) -> None:
    """Each selected asset's verdict with its failed expectations, and why an unprinted upstream failed (once)."""
    print(f"\n== {task_name}")
    shown_upstream: set[str] = set()
    for asset in selected:
        verdict = verdicts[asset]
        met = (
            f"{len(verdict.report.outcomes) - len(verdict.report.failed())}/{len(verdict.report.outcomes)} "
            "expectations met; "
            if verdict.report
            else ""
        )
        print(f"  {asset:<18} {verdict.status:<8} {met}{'; '.join(verdict.reasons) or 'upstream OK, up to date'}")
        if verdict.report:
            _print_outcomes(verdict.report.failed(), "      ", examples=True)
        for check in verdict.failed_checks:  # why an upstream failed, once, when that asset is not printed itself
            parent = check.removesuffix("_quality")
            if parent != asset and parent not in selected and parent not in shown_upstream:
                shown_upstream.add(parent)
                print(f"      upstream {parent} FAILED:")
                _print_outcomes(verdicts[parent].report.failed(), "        ", examples=False)


def _print_outcomes(outcomes, indent: str, examples: bool) -> None:
    for outcome in outcomes:
        print(f"{indent}- {outcome.expectation} [{outcome.column or 'table'}]: observed {outcome.observed}")
        for example in outcome.examples if examples else []:
            text = " ".join(str(example.get("value")).split())[:100]
            print(f"{indent}    {example.get('prompt_id')}: {text}")
