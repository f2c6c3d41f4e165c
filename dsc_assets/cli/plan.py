"""`dsc plan` (what is stale, why, what a refresh costs) and `dsc refresh` (rebuild only that, until nothing is)."""

from __future__ import annotations

import argparse
import sys

from dsc_assets.cli.common import (
    dagster_instance,
    execute,
    load,
    print_failures,
    quiet,
    run_preflight,
    selection,
    task_list,
)


def _print_plan(entries, costs) -> None:
    if not entries:
        print("dsc plan: nothing is stale")
        return
    width = max(len(e.asset) for e in entries)
    print(f"{'asset':<{width}}  {'task':<12} {'model calls':>16} {'minutes':>8}  reasons")
    for entry in entries:
        cost = costs.get((entry.asset, entry.task))
        calls = f"{cost.model_calls} (+{cost.cached} cached)" if cost and (cost.model_calls or cost.cached) else "-"
        minutes = f"{cost.seconds / 60:.1f}" if cost and cost.seconds else "-"
        reasons = ["never built" if r == "missing" else r for r in entry.reasons]
        print(f"{entry.asset:<{width}}  {entry.task:<12} {calls:>16} {minutes:>8}  {'; '.join(reasons)}")
    total = [c for key, c in costs.items() if any((e.asset, e.task) == key for e in entries)]
    never = sum(1 for e in entries if "missing" in e.reasons)
    print(
        f"\n{never} asset partition(s) never built, {len(entries) - never} stale. A refresh would make "
        f"{sum(c.calls for c in total)} generations and {sum(c.scores for c in total)} scores "
        f"({sum(c.model_calls for c in total)} model calls; ~{sum(c.prompt_tokens for c in total)} prompt tokens, at "
        f"most {sum(c.max_completion_tokens for c in total)} completion tokens) and {sum(c.steps for c in total)} "
        f"training steps; {sum(c.cached for c in total)} calls come from the cache. {_time(total)} Counts of what "
        "depends on texts not generated yet are upper bounds (two answers may share a score)."
    )


def _time(costs) -> str:
    seconds = sum(c.seconds for c in costs)
    if not seconds:
        return "No time estimate: this home has measured no call or training step yet."
    return f"Estimated time at the rates this home measured: {seconds / 60:.1f} min."


def _plan(args: argparse.Namespace):
    dg, defs, profile = load(args)
    from dsc_assets.build.cost import run_cost
    from dsc_assets.build.staleness import plan
    from dsc_assets.defs.inputs import Environment
    from dsc_assets.lib.task_spec import TaskError
    from dsc_assets.lib.tasks import load_task

    tasks = task_list(args.tasks, profile.tasks)
    only = selection(args, defs)
    run_preflight(profile, tasks, locks=args.command == "refresh")
    resources = defs.resources
    instance = dagster_instance()
    entries = plan(defs, instance, tasks, resources["settings"], resources["llm"], only)
    costs = {}
    for task_name in {e.task for e in entries}:
        try:
            task = load_task(task_name)
        except TaskError:
            continue
        for asset, cost in run_cost(task, Environment(resources)).items():
            costs[(asset, task_name)] = cost
    return dg, defs, instance, tasks, entries, costs, only


def cmd_plan(args: argparse.Namespace) -> int:
    from dsc_assets.build.plan_check import compare, write_estimate

    _dg, _defs, instance, _tasks, entries, costs, _only = _plan(args)
    _print_plan(entries, costs)
    if args.json:
        stale = {(e.asset, e.task) for e in entries}
        write_estimate(args.json, {key: cost for key, cost in costs.items() if key in stale}, args.profile)
        print(f"dsc plan: the estimate per asset is in {args.json}")
    if args.against:
        compare(args.against, instance)
    return 0


def _nothing_to_rebuild(entries) -> int:
    """What refresh says when no stale asset can be rebuilt now: 0 when nothing is stale; 1 when what is stale waits
    below a failed blocking check (rebuilding it would use data the check rejected), naming each and its check."""
    from dsc_assets.build.staleness import BLOCKED

    blocked = [e for e in entries if e.blocked]
    if not blocked:
        print("dsc refresh: nothing is stale")
        return 0
    print(
        f"dsc refresh: {len(blocked)} stale asset partition(s) wait below a failed blocking check; fix the data or "
        "the check's thresholds upstream, then refresh again (`dsc gate` prints the failed expectations):",
        file=sys.stderr,
    )
    for entry in blocked:
        reason = next(r for r in entry.reasons if r.startswith(BLOCKED))
        print(f"  {entry.task}: {entry.asset}: {reason}", file=sys.stderr)
    return 1


def cmd_refresh(args: argparse.Namespace) -> int:
    """Materialize stale roots, re-plan, repeat: data-aware, so an unchanged output stops the wave."""
    dg, defs, instance, tasks, entries, costs, only = _plan(args)
    job = quiet(defs.resolve_implicit_global_asset_job_def(), args)
    previous: set[tuple[str, str]] = set()
    for _round in range(50):
        roots = [e for e in entries if e.root]
        if not roots:
            return _nothing_to_rebuild(entries)
        if {(e.asset, e.task) for e in roots} == previous:  # rebuilt and still stale: report instead of looping
            for entry in roots:
                print(
                    f"dsc refresh: {entry.task}: {entry.asset} is still stale after a rebuild: "
                    f"{'; '.join(entry.reasons)}",
                    file=sys.stderr,
                )
            return 1
        previous = {(e.asset, e.task) for e in roots}
        for task in sorted({e.task for e in roots}):
            selection = [dg.AssetKey(e.asset) for e in roots if e.task == task]
            print(f"dsc refresh: {task}: {', '.join(k.path[-1] for k in selection)}", flush=True)
            result = execute(job, task, instance, selection)
            if not result.success:
                print_failures(result, "dsc refresh", task, args.verbose)
                return 1
        from dsc_assets.build.staleness import plan

        entries = plan(defs, instance, tasks, defs.resources["settings"], defs.resources["llm"], only)
    print("dsc refresh: gave up after 50 rounds", file=sys.stderr)
    return 1
