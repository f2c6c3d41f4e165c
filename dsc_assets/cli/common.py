"""What every `dsc` command shares: the environment (profile, DAGSTER_HOME, the instance's run queue), task and
asset names from the command line, the preflight and the llama.cpp self-check, and how failures are printed."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path


class UsageError(Exception):
    """A command line that names something that does not exist: exit 2, nothing ran."""


INSTANCE_MARKER = "# Written by dsc"


def prepare_environment(profile: str | None) -> None:
    """Profile and DAGSTER_HOME for this process, and the instance's dagster.yaml that `make ui` (dagster dev) and
    every dsc command share: runs from the UI, backfills and the sensor go through one queue, one run at a time
    unless DSC_MAX_CONCURRENT_RUNS says more.
    (Each run already uses every core; two at once only share them, and load a model each.) A dagster.yaml without
    dsc's first line is the user's own and is left alone."""
    if profile:
        os.environ["DSC_PROFILE"] = profile
    from pathlib import Path

    from dsc_assets.lib.profiles import dsc_home, usable_home

    usable_home(dsc_home())  # first: every later step writes there
    # Runs land in a persistent instance, so `dagster dev` (same DAGSTER_HOME) shows their history.
    dagster_home = os.environ["DAGSTER_HOME"] = os.environ.get("DAGSTER_HOME") or str(dsc_home() / "dagster")
    usable_home(Path(dagster_home), "DAGSTER_HOME")
    config = os.path.join(dagster_home, "dagster.yaml")
    from dsc_assets.lib.execution import execution_settings

    runs_at_once = execution_settings().max_concurrent_runs  # DSC_MAX_CONCURRENT_RUNS: 1 unless the cores are there
    wanted = (
        f"{INSTANCE_MARKER} (dsc_assets/cli/common.py); delete this first line to keep your own edits.\n"
        "telemetry:\n  enabled: false\n"  # an offline tool
        f"{_shared_storage()}"  # the shared deployment's PostgreSQL, if the profile or DSC_INSTANCE_URL asks
        "concurrency:\n"
        "  runs:\n"
        f"    max_concurrent_runs: {runs_at_once}\n"  # the queue: UI launches and backfill runs wait their turn
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


def _shared_storage() -> str:
    """The instance's storage section for the shared deployment: runs, event log and schedules in PostgreSQL
    (dagster-postgres), so runs launched from several machines share one history and one UI; "" for the embedded
    SQLite under DAGSTER_HOME. The URL names psycopg2, the driver dagster-postgres installs (SQLAlchemy 2.1 takes a
    plain postgresql:// URL to mean psycopg 3, which nothing installs). A password never goes into the file: libpq
    reads it from PGPASSWORD or ~/.pgpass."""
    from urllib.parse import urlsplit

    from dsc_assets.lib.profiles import INSTANCE_URL_ENV, instance_url, load_profile

    url = instance_url(None if os.environ.get(INSTANCE_URL_ENV) else load_profile())
    if not url:
        return ""
    if not url.startswith(("postgresql://", "postgres://")):
        raise UsageError(f"{INSTANCE_URL_ENV}={url}: the Dagster instance needs a postgresql:// URL")
    if urlsplit(url).password is not None:
        raise UsageError(
            "the Dagster instance's URL holds a password, which dsc would write into DAGSTER_HOME/dagster.yaml: "
            "leave it out of the URL and set PGPASSWORD or a ~/.pgpass line (libpq reads either)"
        )
    return f"storage:\n  postgres:\n    postgres_url: postgresql+psycopg2://{url.split('://', 1)[1]}\n"


def task_list(value: str | None, default: list[str]) -> list[str]:
    from dsc_assets.lib.tasks import task_names

    tasks = [t.strip() for t in value.split(",") if t.strip()] if value else default or task_names()
    unknown = sorted(set(tasks) - set(task_names()))
    if unknown:
        raise UsageError(f"unknown task(s) {', '.join(unknown)}; known: {', '.join(task_names())}")
    return tasks


def healthy(profile, force: bool = False, verbose: bool = False) -> bool:
    """The llama.cpp self-check before the first model call: a crash in a child beats a dead interpreter."""
    from dsc_assets.build.doctor import DoctorError, check_models, profile_models
    from dsc_assets.lib.profiles import dsc_home
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


def print_failures(result, command: str, task: str, verbose: bool = False) -> None:
    """The root cause of each failed step first (type, message, asset, task), then failed checks; the trace only
    with --verbose (it is always in the run's log in the Dagster UI)."""
    from dsc_assets.build.failures import step_failures

    failures = step_failures(result)
    for step, kind, message, _info in failures:
        print(f"{command}: {task}: {step} failed: {kind}: {message}", file=sys.stderr)
    for evaluation in result.get_asset_check_evaluations():
        if not evaluation.passed:
            print(
                f"{command}: {task}: check {evaluation.check_name} FAILED: {evaluation.description or ''}",
                file=sys.stderr,
            )
    if verbose:
        for step, _kind, _message, info in failures:
            print(f"\n--- {step}: full trace\n{info.to_string()}", file=sys.stderr)
    elif failures:
        print(f"{command}: the full trace: add --verbose, or open the run in the Dagster UI", file=sys.stderr)


QUIET_RUN_CONFIG = {"loggers": {"console": {"config": {}}}}  # a job's own logger runs only when configured


def execute(job, task: str, instance, selection) -> object:
    """One task's run of ``job`` (``selection``: asset keys, None for all), failures returned: in this process, or
    with DSC_EXECUTOR=ray orchestrated here while each step runs as a Ray job (loaded from definitions.py)."""
    from dsc_assets.lib.execution import execution_settings

    if execution_settings().on_ray:
        import dagster as dg

        from dsc_assets.definitions import dsc_job_definition
        from dsc_assets.lib.dagster_private import python_entry_point

        return dg.execute_job(
            python_entry_point(dg.reconstructable(dsc_job_definition)),
            instance,
            run_config={"loggers": {"console": {"config": {"log_level": "WARNING"}}}},  # steps log to the UI
            tags={"dagster/partition": task},
            asset_selection=selection,
            raise_on_error=False,
        )
    return job.execute_in_process(
        run_config=QUIET_RUN_CONFIG,
        partition_key=task,
        instance=instance,
        asset_selection=selection,
        raise_on_error=False,
    )


def quiet(job, args: argparse.Namespace):
    """The job with a console logger that leaves error traces to --verbose (and to the Dagster UI)."""
    from dsc_assets.build.failures import quiet_console_logger

    return job.with_logger_defs({"console": quiet_console_logger(getattr(args, "verbose", False))})


def run_preflight(profile, tasks: list[str], locks: bool = True) -> None:
    """Everything that can be known before the first model call (preflight.py); raises PreflightError."""
    from dsc_assets.build.preflight import preflight
    from dsc_assets.lib.profiles import dsc_home, profile_file

    preflight(profile, tasks, dsc_home(), profile_file(), profile.max_tokens_cap, locks=locks)


def load(args: argparse.Namespace):
    prepare_environment(args.profile)
    import dagster as dg

    from dsc_assets.definitions import defs, profile

    return dg, defs, profile


def selection(args: argparse.Namespace, defs) -> set[str] | None:
    if not getattr(args, "select", None):
        return None
    from dsc_assets.build.staleness import asset_order

    known = set(asset_order(defs)[0])
    chosen = {name.strip() for name in args.select.split(",") if name.strip()}
    if chosen - known:
        raise UsageError(f"unknown asset(s) {', '.join(sorted(chosen - known))}; known: {', '.join(sorted(known))}")
    return chosen


def dagster_instance():
    """The DAGSTER_HOME instance, created under a lock on that folder: Dagster creates its SQLite run and schedule
    storage without a retry (unlike its event log), so two commands starting together in a new DAGSTER_HOME could
    both try to create the same tables ("table … already exists")."""
    import dagster as dg

    from resources.artifacts import artifact_lock

    with artifact_lock(Path(os.environ["DAGSTER_HOME"]) / "instance"):
        return dg.DagsterInstance.get()
