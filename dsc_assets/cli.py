"""``dsc``: one obvious entry point per job. Plain Dagster CLI usage keeps working beside it.

    dsc run [--tasks safety,sentiment] [--profile test]   materialize the main job, one partition per task
"""

from __future__ import annotations

import argparse
import os
import sys
import time


def _prepare_environment(profile: str | None) -> None:
    if profile:
        os.environ["DSC_PROFILE"] = profile
    from dsc_assets.profiles import dsc_home

    # Runs land in a persistent instance, so `dagster dev` (same DAGSTER_HOME) shows their history.
    dagster_home = os.environ.setdefault("DAGSTER_HOME", str(dsc_home() / "dagster"))
    os.makedirs(dagster_home, exist_ok=True)


def _task_list(value: str | None, default: list[str]) -> list[str]:
    from dsc_assets.tasks import task_names

    tasks = [t.strip() for t in value.split(",") if t.strip()] if value else default or task_names()
    unknown = sorted(set(tasks) - set(task_names()))
    if unknown:
        raise SystemExit(f"dsc: unknown task(s) {', '.join(unknown)}; known: {', '.join(task_names())}")
    return tasks


def cmd_run(args: argparse.Namespace) -> int:
    _prepare_environment(args.profile)
    import dagster as dg

    from dsc_assets.definitions import defs, profile

    tasks = _task_list(args.tasks, profile.tasks)
    job = defs.resolve_job_def("dsc_job")
    instance = dg.DagsterInstance.get()
    failed = []
    for task in tasks:
        started = time.perf_counter()
        print(f"dsc run: task '{task}' ...", flush=True)
        result = job.execute_in_process(partition_key=task, instance=instance, raise_on_error=False)
        seconds = time.perf_counter() - started
        materialized = [e.asset_key.to_user_string() for e in result.get_asset_materialization_events()]
        print(f"dsc run: task '{task}' {'succeeded' if result.success else 'FAILED'} in {seconds:.0f}s; "
              f"materialized: {', '.join(materialized) or 'nothing'}", flush=True)
        if not result.success:
            failed.append(task)
            for event in result.all_events:
                if event.is_failure and event.step_failure_data:
                    print(f"  {event.step_key}: {event.step_failure_data.error.message.strip()}", file=sys.stderr)
    if failed:
        print(f"dsc run: failed tasks: {', '.join(failed)} (everything already generated is kept in the cache)",
              file=sys.stderr)
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="dsc", description="Align a language model with synthetic data.")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="materialize the main job for each task (partition)")
    run.add_argument("--tasks", help="comma-separated task names (default: the profile's list)")
    run.add_argument("--profile", help="profile name under profiles/ or a YAML path (default: $DSC_PROFILE or 'default')")
    run.set_defaults(func=cmd_run)

    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
