"""`dsc run`: materialize the main job, one partition (task) at a time."""

from __future__ import annotations

import argparse
import sys
import time

from dsc_assets.cli.common import (
    dagster_instance,
    execute,
    healthy,
    prepare_environment,
    print_failures,
    quiet,
    run_preflight,
    selection,
    task_list,
)


def cmd_run(args: argparse.Namespace) -> int:
    prepare_environment(args.profile)
    import dagster as dg

    from dsc_assets.definitions import defs, profile

    tasks = task_list(args.tasks, profile.tasks)
    run_preflight(profile, tasks)
    if not healthy(profile):
        return 1
    job = quiet(defs.resolve_job_def("dsc_job"), args)
    chosen = [dg.AssetKey(name) for name in sorted(selection(args, defs) or [])] or None
    instance = dagster_instance()
    failed = []
    for task in tasks:
        started = time.perf_counter()
        print(f"dsc run: task '{task}' ...", flush=True)
        result = execute(job, task, instance, chosen)
        seconds = time.perf_counter() - started
        materialized = [e.asset_key.to_user_string() for e in result.get_asset_materialization_events()]
        print(
            f"dsc run: task '{task}' {'succeeded' if result.success else 'FAILED'} in {seconds:.0f}s; "
            f"materialized: {', '.join(materialized) or 'nothing'}",
            flush=True,
        )
        if not result.success:
            failed.append(task)
            print_failures(result, "dsc run", task, args.verbose)
    _print_verdicts(profile, tasks)
    if failed:
        print(
            f"dsc run: failed tasks: {', '.join(failed)} (everything already generated is kept in the cache)",
            file=sys.stderr,
        )
        return 1
    return 0


def _print_verdicts(profile, tasks: list[str]) -> None:
    """End with the evaluation: each method against base, its interval and its verdict after Holm."""
    from dsc_assets.cli.verdicts import print_verdicts
    from dsc_assets.lib.profiles import dsc_home, warehouse_location
    from resources.stores import close_all

    close_all()  # the run's own warehouse connection, before a read-only one opens the file
    try:
        print_verdicts(
            warehouse_location(profile, dsc_home()), tasks, profile.tasks, profile.methods, profile.eval_split
        )
    except Exception as error:  # noqa: BLE001 - the run's result stands; the summary is a convenience
        print(f"dsc run: could not print the evaluation summary ({error}); `dsc report` writes it", file=sys.stderr)
