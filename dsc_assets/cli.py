"""``dsc``: one obvious entry point per job. Plain Dagster CLI usage keeps working beside it.

    dsc run [--tasks safety,sentiment] [--profile test]   materialize the main job, one partition per task
    dsc plan [--tasks ...]                                what is stale, why, and how many model calls a refresh costs
    dsc refresh [--tasks ...]                             rebuild only what is stale, until nothing is
    dsc gate --partition sentiment [--check-only]         quality gate: failed expectations, exit 1 on failure
    dsc doctor [--profile test] [--force]                 can llama.cpp generate on this CPU? (child-process probe)
"""

from __future__ import annotations

import argparse
import os
import sys
import time


INSTANCE_MARKER = "# Written by dsc"


def _prepare_environment(profile: str | None) -> None:
    """Profile and DAGSTER_HOME for this process, and the instance's dagster.yaml that `make ui` (dagster dev) and
    every dsc command share: runs from the UI, backfills and the sensor go through one queue, one run at a time.
    (Each run already uses every core; two at once only share them, and load a model each.) A dagster.yaml without
    dsc's first line is the user's own and is left alone."""
    if profile:
        os.environ["DSC_PROFILE"] = profile
    from dsc_assets.profiles import dsc_home

    # Runs land in a persistent instance, so `dagster dev` (same DAGSTER_HOME) shows their history.
    dagster_home = os.environ.setdefault("DAGSTER_HOME", str(dsc_home() / "dagster"))
    os.makedirs(dagster_home, exist_ok=True)
    config = os.path.join(dagster_home, "dagster.yaml")
    wanted = (
        f"{INSTANCE_MARKER} (dsc_assets/cli.py); delete this first line to keep your own edits.\n"
        "telemetry:\n  enabled: false\n"  # an offline tool
        "concurrency:\n"
        "  runs:\n"
        "    max_concurrent_runs: 1\n"  # the queue: UI launches and backfill runs wait their turn
        "    tag_concurrency_limits:\n"
        "      - key: dsc/trigger\n"  # the refresh sensor's runs, one at a time whatever the limit above
        "        value: refresh_sensor\n"
        "        limit: 1\n"
    )
    current = open(config).read() if os.path.exists(config) else None
    old_default = current is not None and current.strip() == "telemetry:\n  enabled: false"
    if current is None or old_default or (current.startswith(INSTANCE_MARKER) and current != wanted):
        with open(config, "w") as handle:
            handle.write(wanted)


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
    if not _healthy(profile):
        return 1
    job = defs.resolve_job_def("dsc_job")
    selection = [dg.AssetKey(name) for name in sorted(_selection(args, defs) or [])] or None
    instance = dg.DagsterInstance.get()
    failed = []
    for task in tasks:
        started = time.perf_counter()
        print(f"dsc run: task '{task}' ...", flush=True)
        result = job.execute_in_process(partition_key=task, instance=instance, raise_on_error=False,
                                        asset_selection=selection)
        seconds = time.perf_counter() - started
        materialized = [e.asset_key.to_user_string() for e in result.get_asset_materialization_events()]
        print(f"dsc run: task '{task}' {'succeeded' if result.success else 'FAILED'} in {seconds:.0f}s; "
              f"materialized: {', '.join(materialized) or 'nothing'}", flush=True)
        if not result.success:
            failed.append(task)
            _print_failures(result)
    if failed:
        print(f"dsc run: failed tasks: {', '.join(failed)} (everything already generated is kept in the cache)",
              file=sys.stderr)
        return 1
    return 0


def _healthy(profile, force: bool = False, verbose: bool = False) -> bool:
    """The llama.cpp self-check before the first model call: a crash in a child beats a dead interpreter."""
    from dsc_assets.doctor import DoctorError, check_models, profile_models
    from dsc_assets.profiles import dsc_home
    from resources.models import ModelError

    try:
        results = check_models(profile_models(profile, dsc_home()), dsc_home(), force=force)
    except (DoctorError, ModelError) as error:
        print(str(error), file=sys.stderr)
        return False
    for result in results:
        if verbose or not result.cached:
            speed = f"{result.tokens / result.seconds:.1f} tok/s" if result.seconds else "-"
            note = " (remembered pass)" if result.cached else ""
            print(f"dsc doctor: {result.model}: generated {result.tokens} tokens, {speed}{note}", flush=True)
    return True


def cmd_doctor(args: argparse.Namespace) -> int:
    """Print the llama.cpp build and the CPU, then probe every model of the profile in a child process."""
    _prepare_environment(args.profile)
    from dsc_assets.profiles import load_profile
    from resources.llama_build import build_key, chosen_features, cmake_args, cpu_flags, installed_marker

    flags = cpu_flags()
    features = [name for name, on in chosen_features(flags).items() if on]
    amx = sorted(f for f in flags if f.startswith("amx"))
    print(f"dsc doctor: CPU features used by a dsc build here: {' '.join(features) or 'none'}"
          f"{'; AMX present (' + ' '.join(amx) + '), never compiled in' if amx else ''}")
    marker = installed_marker()
    expected = build_key(cmake_args())
    if marker is None:
        print("dsc doctor: llama-cpp-python was not installed by dsc's build; fix: make llama-rebuild")
    elif marker.get("key") != expected:
        print(f"dsc doctor: the installed llama.cpp build (key {marker.get('key')}) was made for another CPU "
              f"(this CPU's key: {expected}); fix: make llama-rebuild")
    else:
        print(f"dsc doctor: llama.cpp build {marker['key']} matches this CPU")
    return 0 if _healthy(load_profile(), force=args.force, verbose=True) else 1


def _print_failures(result) -> None:
    """Failed checks with their failed expectations, then failed steps: what a person needs to act."""
    for evaluation in result.get_asset_check_evaluations():
        if not evaluation.passed:
            print(f"  check {evaluation.check_name} FAILED: {evaluation.description or ''}", file=sys.stderr)
    for event in result.all_events:
        if event.is_step_failure:
            error = event.step_failure_data.user_failure_data or event.step_failure_data.error
            message = getattr(error, "description", None) or getattr(error, "message", "")
            print(f"  step {event.step_key} failed: {message.strip().splitlines()[0] if message else ''}", file=sys.stderr)


def cmd_gate(args: argparse.Namespace) -> int:
    """Materialize the data assets (unless --check-only), then run every quality suite on the stored tables and
    print a table of failed expectations with example rows. Exit 1 on any failure or missing table."""
    dg, defs, profile = _load(args)
    import duckdb

    from dsc_assets.checks import CHECKED_ASSETS, report_for
    from dsc_assets.profiles import dsc_home
    from dsc_assets.tasks import load_task

    tasks = _task_list(args.tasks, profile.tasks)
    selected = [a.strip() for a in args.assets.split(",")] if args.assets else CHECKED_ASSETS
    unknown = sorted(set(selected) - set(CHECKED_ASSETS))
    if unknown:
        raise SystemExit(f"dsc gate: no quality suite for {', '.join(unknown)}; checked: {', '.join(CHECKED_ASSETS)}")
    if not args.check_only:
        job = defs.resolve_implicit_global_asset_job_def()
        data_assets = [key for key in job.asset_layer.asset_graph.materializable_asset_keys
                       if key.path[-1] not in TRAINING_ASSETS]
        instance = dg.DagsterInstance.get()
        for task in tasks:
            print(f"dsc gate: materializing the data assets of '{task}' ...", flush=True)
            job.execute_in_process(partition_key=task, instance=instance, asset_selection=data_assets,
                                   raise_on_error=False)
    failures = 0
    database = dsc_home() / "warehouse.duckdb"
    with duckdb.connect(str(database), read_only=True) if database.exists() else _nothing() as con:
        for task_name in tasks:
            task = load_task(task_name)
            print(f"\n== {task_name}")
            for asset in selected:
                try:
                    table = con.execute(f"SELECT * FROM dsc.{asset} WHERE task = ?", [task_name]).df()
                except Exception:  # noqa: BLE001  the table does not exist yet
                    table = None
                if table is None or (table.empty and asset != "preference_pairs"):
                    print(f"  {asset:<18} MISSING  (not materialized: blocked upstream or never run)")
                    failures += 1
                    continue
                report = report_for(asset, table, task, defs.resources["rewards"],
                                    defs.resources["settings"].quality_overrides)
                print(f"  {asset:<18} {'ok' if report.success else 'FAILED'}  "
                      f"({len(report.outcomes) - len(report.failed())}/{len(report.outcomes)} expectations met)")
                for outcome in report.failed():
                    failures += 1
                    print(f"      - {outcome.expectation} [{outcome.column or 'table'}]: observed {outcome.observed}")
                    for example in outcome.examples:
                        text = " ".join(str(example.get("value")).split())[:100]
                        print(f"          {example.get('prompt_id')}: {text}")
    print(f"\ndsc gate: {'FAILED' if failures else 'passed'} ({failures} problem(s))")
    return 1 if failures else 0


class _nothing:
    def __enter__(self):
        raise SystemExit(f"dsc gate: no tables yet; run without --check-only first")

    def __exit__(self, *exc):
        return False


TRAINING_ASSETS = {"sft_checkpoint", "dpo_checkpoint", "rdpo_checkpoint", "dlma_checkpoint", "evaluation"}


def _load(args: argparse.Namespace):
    _prepare_environment(args.profile)
    import dagster as dg

    from dsc_assets.definitions import defs, profile

    return dg, defs, profile


def _print_plan(entries, costs) -> None:
    if not entries:
        print("dsc plan: nothing is stale")
        return
    width = max(len(e.asset) for e in entries)
    print(f"{'asset':<{width}}  {'task':<12} {'model calls':>11}  reasons")
    for entry in entries:
        cost = costs.get((entry.asset, entry.task))
        calls = f"{cost.calls} (+{cost.cached} cached)" if cost else "-"
        print(f"{entry.asset:<{width}}  {entry.task:<12} {calls:>11}  {'; '.join(entry.reasons)}")
    total = [c for key, c in costs.items() if any((e.asset, e.task) == key for e in entries)]
    print(f"\nrefresh would make {sum(c.calls for c in total)} model calls "
          f"(~{sum(c.prompt_tokens for c in total)} prompt tokens, at most {sum(c.max_completion_tokens for c in total)} "
          f"completion tokens); {sum(c.cached for c in total)} calls come from the cache")


def _plan(args: argparse.Namespace):
    dg, defs, profile = _load(args)
    from dsc_assets.staleness import generation_cost, plan
    from dsc_assets.tasks import TaskError, load_task

    tasks = _task_list(args.tasks, profile.tasks)
    resources = defs.resources
    instance = dg.DagsterInstance.get()
    only = _selection(args, defs)
    entries = plan(defs, instance, tasks, resources["settings"], resources["llm"], only)
    costs = {}
    for task_name in {e.task for e in entries}:
        try:
            task = load_task(task_name)
        except TaskError:
            continue
        for asset, cost in generation_cost(task, resources["settings"], resources["llm"]).items():
            costs[(asset, task_name)] = cost
    return dg, defs, instance, tasks, entries, costs, only


def _selection(args: argparse.Namespace, defs) -> set[str] | None:
    if not getattr(args, "select", None):
        return None
    from dsc_assets.staleness import asset_order

    known = set(asset_order(defs)[0])
    chosen = {name.strip() for name in args.select.split(",") if name.strip()}
    if chosen - known:
        raise SystemExit(f"dsc: unknown asset(s) {', '.join(sorted(chosen - known))}; known: {', '.join(sorted(known))}")
    return chosen


def cmd_plan(args: argparse.Namespace) -> int:
    *_, entries, costs, _only = _plan(args)
    _print_plan(entries, costs)
    return 0


def cmd_refresh(args: argparse.Namespace) -> int:
    """Materialize stale roots, re-plan, repeat: data-aware, so an unchanged output stops the wave."""
    dg, defs, instance, tasks, entries, costs, only = _plan(args)
    job = defs.resolve_implicit_global_asset_job_def()
    previous: set[tuple[str, str]] = set()
    for _round in range(50):
        roots = [e for e in entries if e.root]
        if not roots:
            print("dsc refresh: nothing is stale")
            return 0
        if {(e.asset, e.task) for e in roots} == previous:  # rebuilt and still stale: report instead of looping
            for entry in roots:
                print(f"dsc refresh: {entry.task}: {entry.asset} is still stale after a rebuild: "
                      f"{'; '.join(entry.reasons)}", file=sys.stderr)
            return 1
        previous = {(e.asset, e.task) for e in roots}
        for task in sorted({e.task for e in roots}):
            selection = [dg.AssetKey(e.asset) for e in roots if e.task == task]
            print(f"dsc refresh: {task}: {', '.join(k.path[-1] for k in selection)}", flush=True)
            result = job.execute_in_process(partition_key=task, instance=instance, asset_selection=selection,
                                            raise_on_error=False)
            if not result.success:
                print(f"dsc refresh: {task} failed; see the run in the Dagster UI", file=sys.stderr)
                return 1
        from dsc_assets.staleness import plan

        entries = plan(defs, instance, tasks, defs.resources["settings"], defs.resources["llm"], only)
    print("dsc refresh: gave up after 50 rounds", file=sys.stderr)
    return 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="dsc", description="Align a language model with synthetic data.")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="materialize the main job for each task (partition)")
    run.add_argument("--tasks", help="comma-separated task names (default: the profile's list)")
    run.add_argument("--profile", help="profile name under profiles/ or a YAML path (default: $DSC_PROFILE or 'default')")
    run.add_argument("--select", help="comma-separated asset names (default: the whole graph)")
    run.set_defaults(func=cmd_run)

    for name, func, text in (("plan", cmd_plan, "what is stale per asset and task, why, and what a refresh costs"),
                             ("refresh", cmd_refresh, "materialize only stale asset partitions until nothing is stale")):
        command = sub.add_parser(name, help=text)
        command.add_argument("--tasks", help="comma-separated task names (default: the profile's list)")
        command.add_argument("--profile", help="profile name or YAML path")
        command.add_argument("--select", help="comma-separated asset names to consider (default: all)")
        command.set_defaults(func=func)

    gate = sub.add_parser("gate", help="quality gate for CI: materialize data assets, check, exit 1 on failure")
    gate.add_argument("--tasks", "--partition", dest="tasks", help="comma-separated task names (default: the profile's)")
    gate.add_argument("--profile", help="profile name or YAML path")
    gate.add_argument("--check-only", action="store_true", help="only re-check the stored tables")
    gate.add_argument("--assets", help="comma-separated checked assets (default: all checked assets)")
    gate.set_defaults(func=cmd_gate)

    doctor = sub.add_parser("doctor", help="check that llama.cpp generates on this CPU with the profile's models")
    doctor.add_argument("--profile", help="profile name or YAML path")
    doctor.add_argument("--force", action="store_true", help="probe again even if this build passed before")
    doctor.set_defaults(func=cmd_doctor)

    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
