"""``dsc``: one obvious entry point per job. Plain Dagster CLI usage keeps working beside it.

    dsc run [--tasks safety,sentiment] [--profile test]   materialize the main job, one partition per task
    dsc plan [--tasks ...]                                what is stale, why, and how many model calls a refresh costs
    dsc refresh [--tasks ...]                             rebuild only what is stale, until nothing is
    dsc gate --partition sentiment [--check-only]         quality gate: failed expectations, exit 1 on failure
    dsc doctor [--profile test] [--force]                 can llama.cpp generate on this CPU? (child-process probe)
    dsc report [--profile study] [--tasks ...] [--prompts IDS]  a finished run's study report per task (report.py)

Before anything runs, `run`, `plan`, `gate` and `refresh` check what can be known without a model call (task files,
scorers, models, prompt lengths against n_ctx, DuckDB locks; see preflight.py). Errors print their root cause on the
first line (exception type and message, asset, task); ``--verbose`` adds the full trace.
Exit codes: 0 ok; 1 a run failed, or (gate) an asset is FAILED, BLOCKED, STALE or MISSING; 2 a usage or configuration
error (unknown option, task or asset; a task file, profile or model problem): nothing was run.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import traceback


class UsageError(Exception):
    """A command line that names something that does not exist: exit 2, nothing ran."""


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
        raise UsageError(f"unknown task(s) {', '.join(unknown)}; known: {', '.join(task_names())}")
    return tasks


def cmd_run(args: argparse.Namespace) -> int:
    _prepare_environment(args.profile)
    import dagster as dg

    from dsc_assets.definitions import defs, profile

    tasks = _task_list(args.tasks, profile.tasks)
    _preflight(profile, tasks)
    if not _healthy(profile):
        return 1
    job = _quiet(defs.resolve_job_def("dsc_job"), args)
    selection = [dg.AssetKey(name) for name in sorted(_selection(args, defs) or [])] or None
    instance = dg.DagsterInstance.get()
    failed = []
    for task in tasks:
        started = time.perf_counter()
        print(f"dsc run: task '{task}' ...", flush=True)
        result = job.execute_in_process(run_config=QUIET_RUN_CONFIG, partition_key=task, instance=instance, raise_on_error=False,
                                        asset_selection=selection)
        seconds = time.perf_counter() - started
        materialized = [e.asset_key.to_user_string() for e in result.get_asset_materialization_events()]
        print(f"dsc run: task '{task}' {'succeeded' if result.success else 'FAILED'} in {seconds:.0f}s; "
              f"materialized: {', '.join(materialized) or 'nothing'}", flush=True)
        if not result.success:
            failed.append(task)
            _print_failures(result, "dsc run", task, args.verbose)
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


def cmd_report(args: argparse.Namespace) -> int:
    """Write each task's study report from the warehouse (read-only: a running job keeps writing its own tables)."""
    _prepare_environment(args.profile)
    from pathlib import Path

    import duckdb

    from dsc_assets.profiles import PROJECT_ROOT, dsc_home, load_profile, profile_file
    from dsc_assets.report import ReportError, consistency_problems, prompt_selection, provenance, write_report

    if args.prompts is not None:
        try:
            prompt_selection(args.prompts)
        except ValueError as error:
            print(f"dsc report: {error}", file=sys.stderr)
            return 2

    tasks = _task_list(args.tasks, load_profile().tasks)
    path = profile_file()
    out = Path(args.out) if args.out else PROJECT_ROOT / "reports" / path.stem
    database = dsc_home() / "warehouse.duckdb"
    if not database.exists():
        print(f"dsc report: no warehouse at {database}: nothing has run under this DSC_HOME", file=sys.stderr)
        return 1
    try:
        con = duckdb.connect(str(database), read_only=True)
    except duckdb.IOException as error:
        print(f"dsc report: cannot open {database} read-only (a running job may be writing it; retry when it "
              f"ends): {' '.join(str(error).split())}", file=sys.stderr)
        return 1
    failed = []
    try:
        import dagster as dg

        instance = dg.DagsterInstance.get()  # DAGSTER_HOME: the one `dsc run` and `make ui` record runs in
    except Exception as error:  # noqa: BLE001 - the report is still worth writing without run history
        print(f"dsc report: no Dagster run history ({error}); the report will not name the runs", file=sys.stderr)
        instance = None
    try:
        for task in tasks:
            problems = consistency_problems(con, task, path)
            runs = provenance(instance, task) if instance is not None else None
            try:
                written = write_report(task, con, path, out, problems, runs, prompt_subset=args.prompts)
                print(f"dsc report: {task}: wrote {written}")
            except ReportError as error:
                print(f"dsc report: {error}; nothing written", file=sys.stderr)
                failed.append(task)
                continue
            for problem in problems:
                print(f"dsc report: {task}: warning: {problem} (tables from different runs?)", file=sys.stderr)
    finally:
        con.close()
    return 1 if failed else 0


def _print_failures(result, command: str, task: str, verbose: bool = False) -> None:
    """The root cause of each failed step first (type, message, asset, task), then failed checks; the trace only
    with --verbose (it is always in the run's log in the Dagster UI)."""
    from dsc_assets.errors import step_failures

    failures = step_failures(result)
    for step, kind, message, _info in failures:
        print(f"{command}: {task}: {step} failed: {kind}: {message}", file=sys.stderr)
    for evaluation in result.get_asset_check_evaluations():
        if not evaluation.passed:
            print(f"{command}: {task}: check {evaluation.check_name} FAILED: {evaluation.description or ''}",
                  file=sys.stderr)
    if verbose:
        for step, _kind, _message, info in failures:
            print(f"\n--- {step}: full trace\n{info.to_string()}", file=sys.stderr)
    elif failures:
        print(f"{command}: the full trace: add --verbose, or open the run in the Dagster UI", file=sys.stderr)


QUIET_RUN_CONFIG = {"loggers": {"console": {"config": {}}}}  # a job's own logger runs only when configured


def _quiet(job, args: argparse.Namespace):
    """The job with a console logger that leaves error traces to --verbose (and to the Dagster UI)."""
    from dsc_assets.errors import quiet_console_logger

    return job.with_logger_defs({"console": quiet_console_logger(getattr(args, "verbose", False))})


def _preflight(profile, tasks: list[str], locks: bool = True) -> None:
    """Everything that can be known before the first model call (preflight.py); raises PreflightError."""
    from dsc_assets.preflight import preflight
    from dsc_assets.profiles import dsc_home, profile_file

    preflight(profile, tasks, dsc_home(), profile_file(), profile.max_tokens_cap, locks=locks)


GATE_HELP = """Exit codes: 0 every printed asset is OK; 1 one is FAILED (its own suite), BLOCKED (an upstream suite
failed), STALE (built from older upstream data or older task files) or MISSING (no table or no rows for the task);
2 usage or configuration error. --assets narrows what is printed, never what must hold: an asset is OK only if
everything upstream of it is."""


def cmd_gate(args: argparse.Namespace) -> int:
    """Materialize the data assets (unless --check-only), then judge each asset with its whole upstream."""
    dg, defs, profile = _load(args)
    from dsc_assets.checks import CHECKED_ASSETS

    tasks = _task_list(args.tasks, profile.tasks)
    selected = [a.strip() for a in args.assets.split(",") if a.strip()] if args.assets else CHECKED_ASSETS
    unknown = sorted(set(selected) - set(CHECKED_ASSETS))
    if unknown:
        raise UsageError(f"no quality suite for {', '.join(unknown)}; checked: {', '.join(CHECKED_ASSETS)}")
    _preflight(profile, tasks, locks=True)
    instance = dg.DagsterInstance.get()
    from dsc_assets.staleness import asset_order

    _, upstream = asset_order(defs)
    needed, queue = set(), list(selected)  # the printed assets and everything upstream of them
    while queue:
        asset = queue.pop()
        if asset not in needed:
            needed.add(asset)
            queue += upstream.get(asset, [])
    if not args.check_only:
        job = _quiet(defs.resolve_implicit_global_asset_job_def(), args)
        # the checked assets and whatever they are built from (ALMoST's best-of-N needs its trained reward model)
        data_assets = [dg.AssetKey(name) for name in sorted(needed)]
        for task in tasks:
            print(f"dsc gate: materializing the data assets of '{task}' ...", flush=True)
            result = job.execute_in_process(run_config=QUIET_RUN_CONFIG, partition_key=task, instance=instance, asset_selection=data_assets,
                                            raise_on_error=False)
            if not result.success:
                _print_failures(result, "dsc gate", task, args.verbose)
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
    import duckdb

    from dsc_assets.checks import OK, gate_verdicts
    from dsc_assets.profiles import dsc_home
    from dsc_assets.staleness import asset_order, plan
    from dsc_assets.tasks import load_task

    task = load_task(task_name)
    resources = defs.resources
    _, upstream = asset_order(defs)
    stale = {e.asset: e.reasons for e in plan(defs, instance, [task_name], observe=False)}
    database = dsc_home() / "warehouse.duckdb"
    con = duckdb.connect(str(database), read_only=True) if database.exists() else None

    def table_of(asset: str):
        if con is None:
            return None
        try:
            return con.execute(f"SELECT * FROM dsc.{asset} WHERE task = ?", [task_name]).df()
        except duckdb.CatalogException:  # the table does not exist yet
            return None

    def materialized(asset: str) -> bool:
        return bool(instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=dg.AssetKey(asset), asset_partitions=[task_name]), limit=1).records)

    try:
        verdicts = gate_verdicts(task, table_of, materialized, stale, upstream, resources["rewards"],
                                 resources["settings"].quality_overrides, only=needed,
                                 methods=resources["settings"].methods)
    finally:
        if con is not None:
            con.close()
    print(f"\n== {task_name}")
    shown_upstream: set[str] = set()
    for asset in selected:
        verdict = verdicts[asset]
        met = (f"{len(verdict.report.outcomes) - len(verdict.report.failed())}/{len(verdict.report.outcomes)} "
               "expectations met; " if verdict.report else "")
        print(f"  {asset:<18} {verdict.status:<8} {met}{'; '.join(verdict.reasons) or 'upstream OK, up to date'}")
        if verdict.report:
            _print_outcomes(verdict.report.failed(), "      ", examples=True)
        for check in verdict.failed_checks:  # why an upstream failed, once, when that asset is not printed itself
            parent = check.removesuffix("_quality")
            if parent != asset and parent not in selected and parent not in shown_upstream:
                shown_upstream.add(parent)
                print(f"      upstream {parent} FAILED:")
                _print_outcomes(verdicts[parent].report.failed(), "        ", examples=False)
    return [f"{task_name}: {asset} {verdicts[asset].status}" for asset in selected if verdicts[asset].status != OK]


def _print_outcomes(outcomes, indent: str, examples: bool) -> None:
    for outcome in outcomes:
        print(f"{indent}- {outcome.expectation} [{outcome.column or 'table'}]: observed {outcome.observed}")
        for example in outcome.examples if examples else []:
            text = " ".join(str(example.get("value")).split())[:100]
            print(f"{indent}    {example.get('prompt_id')}: {text}")


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
    only = _selection(args, defs)
    _preflight(profile, tasks, locks=args.command == "refresh")
    resources = defs.resources
    instance = dg.DagsterInstance.get()
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
        raise UsageError(f"unknown asset(s) {', '.join(sorted(chosen - known))}; known: {', '.join(sorted(known))}")
    return chosen


def cmd_plan(args: argparse.Namespace) -> int:
    *_, entries, costs, _only = _plan(args)
    _print_plan(entries, costs)
    return 0


def _nothing_to_rebuild(entries) -> int:
    """What refresh says when no stale asset can be rebuilt now: 0 when nothing is stale; 1 when what is stale waits
    below a failed blocking check (rebuilding it would use data the check rejected), naming each and its check."""
    from dsc_assets.staleness import BLOCKED

    blocked = [e for e in entries if e.blocked]
    if not blocked:
        print("dsc refresh: nothing is stale")
        return 0
    print(f"dsc refresh: {len(blocked)} stale asset partition(s) wait below a failed blocking check; fix the data or "
          "the check's thresholds upstream, then refresh again (`dsc gate` prints the failed expectations):",
          file=sys.stderr)
    for entry in blocked:
        reason = next(r for r in entry.reasons if r.startswith(BLOCKED))
        print(f"  {entry.task}: {entry.asset}: {reason}", file=sys.stderr)
    return 1


def cmd_refresh(args: argparse.Namespace) -> int:
    """Materialize stale roots, re-plan, repeat: data-aware, so an unchanged output stops the wave."""
    dg, defs, instance, tasks, entries, costs, only = _plan(args)
    job = _quiet(defs.resolve_implicit_global_asset_job_def(), args)
    previous: set[tuple[str, str]] = set()
    for _round in range(50):
        roots = [e for e in entries if e.root]
        if not roots:
            return _nothing_to_rebuild(entries)
        if {(e.asset, e.task) for e in roots} == previous:  # rebuilt and still stale: report instead of looping
            for entry in roots:
                print(f"dsc refresh: {entry.task}: {entry.asset} is still stale after a rebuild: "
                      f"{'; '.join(entry.reasons)}", file=sys.stderr)
            return 1
        previous = {(e.asset, e.task) for e in roots}
        for task in sorted({e.task for e in roots}):
            selection = [dg.AssetKey(e.asset) for e in roots if e.task == task]
            print(f"dsc refresh: {task}: {', '.join(k.path[-1] for k in selection)}", flush=True)
            result = job.execute_in_process(run_config=QUIET_RUN_CONFIG, partition_key=task, instance=instance, asset_selection=selection,
                                            raise_on_error=False)
            if not result.success:
                _print_failures(result, "dsc refresh", task, args.verbose)
                return 1
        from dsc_assets.staleness import plan

        entries = plan(defs, instance, tasks, defs.resources["settings"], defs.resources["llm"], only)
    print("dsc refresh: gave up after 50 rounds", file=sys.stderr)
    return 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="dsc", description="Align a language model with synthetic data.",
                                     epilog="Exit codes: 0 ok, 1 failed, 2 usage or configuration error.")
    sub = parser.add_subparsers(dest="command", required=True)
    verbose = argparse.ArgumentParser(add_help=False)
    verbose.add_argument("--verbose", "-v", action="store_true", help="print the full trace of an error")

    run = sub.add_parser("run", help="materialize the main job for each task (partition)", parents=[verbose])
    run.add_argument("--tasks", help="comma-separated task names (default: the profile's list)")
    run.add_argument("--profile", help="profile name under profiles/ or a YAML path (default: $DSC_PROFILE or 'default')")
    run.add_argument("--select", help="comma-separated asset names (default: the whole graph)")
    run.set_defaults(func=cmd_run)

    for name, func, text in (("plan", cmd_plan, "what is stale per asset and task, why, and what a refresh costs"),
                             ("refresh", cmd_refresh, "materialize only stale asset partitions until nothing is stale")):
        command = sub.add_parser(name, help=text, parents=[verbose])
        command.add_argument("--tasks", help="comma-separated task names (default: the profile's list)")
        command.add_argument("--profile", help="profile name or YAML path")
        command.add_argument("--select", help="comma-separated asset names to consider (default: all)")
        command.set_defaults(func=func)

    gate = sub.add_parser("gate", help="quality gate for CI: exit 1 unless every asset and its upstream is OK",
                          parents=[verbose], epilog=GATE_HELP)
    gate.add_argument("--tasks", "--partition", dest="tasks", help="comma-separated task names (default: the profile's)")
    gate.add_argument("--profile", help="profile name or YAML path")
    gate.add_argument("--check-only", action="store_true", help="only judge the stored tables (materialize nothing)")
    gate.add_argument("--assets", help="comma-separated assets to print (default: every checked asset); their "
                      "upstream must hold all the same")
    gate.set_defaults(func=cmd_gate)

    doctor = sub.add_parser("doctor", help="check that llama.cpp generates on this CPU with the profile's models",
                            parents=[verbose])
    doctor.add_argument("--profile", help="profile name or YAML path")
    doctor.add_argument("--force", action="store_true", help="probe again even if this build passed before")
    doctor.set_defaults(func=cmd_doctor)

    report = sub.add_parser("report", help="write each task's study report (markdown + effects plot) from the "
                            "finished run's tables", parents=[verbose])
    report.add_argument("--tasks", help="comma-separated task names (default: the profile's list)")
    report.add_argument("--profile", help="profile name or YAML path")
    report.add_argument("--out", help="output folder (default: reports/<profile name>)")
    report.add_argument("--prompts", help="also recompute the evaluation over these test prompts alone: comma-separated "
                                          "ids and inclusive ranges first..last (e.g. privacy-121..privacy-216)")
    report.set_defaults(func=cmd_report)

    args = parser.parse_args(argv)
    if not args.verbose:  # Dagster's beta/preview notices are not the user's business; errors come first
        import warnings

        warnings.filterwarnings("ignore", message=r".*(is currently in beta|is currently in preview|preview).*")
    try:
        return _guarded(args)
    finally:
        from resources import stores

        stores.close_all()  # a cache connection alive at exit made DuckDB print ~80 lines of "nanobind: leaked ..."


def _guarded(args: argparse.Namespace) -> int:
    """Run a command; any error becomes its root cause on the first line (the trace only with --verbose)."""
    from dsc_assets.preflight import PreflightError
    from dsc_assets.profiles import ProfileError
    from dsc_assets.tasks import TaskError
    from resources.models import ModelError

    command = f"dsc {args.command}"
    try:
        return args.func(args)
    except UsageError as error:
        print(f"{command}: {error}", file=sys.stderr)
        return 2
    except PreflightError as error:
        for problem in error.problems:
            print(f"{command}: {problem}", file=sys.stderr)
        print(f"{command}: {len(error.problems)} problem(s) found before any model call; nothing was run",
              file=sys.stderr)
        return 2
    except (ProfileError, TaskError, ModelError) as error:
        print(f"{command}: {type(error).__name__}: {error}", file=sys.stderr)
        if args.verbose:
            traceback.print_exc()
        return 2
    except Exception as error:  # noqa: BLE001  the root cause first; the trace on request
        print(f"{command}: {type(error).__name__}: {' '.join(str(error).split())}", file=sys.stderr)
        if args.verbose:
            traceback.print_exc()
        else:
            print(f"{command}: the full trace: add --verbose", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
