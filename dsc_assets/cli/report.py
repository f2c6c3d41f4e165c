"""`dsc report`: a finished run's study report per task, from the warehouse (read-only)."""

from __future__ import annotations

import argparse
import sys

from dsc_assets.cli.common import dagster_instance, prepare_environment, task_list


def cmd_report(args: argparse.Namespace) -> int:
    """Write each task's study report from the warehouse (read-only: a running job keeps writing its own tables)."""
    prepare_environment(args.profile)
    from pathlib import Path

    from dsc_assets.build.provenance import provenance
    from dsc_assets.lib.family import study_family
    from dsc_assets.lib.paths import PROJECT_ROOT
    from dsc_assets.lib.profiles import dsc_home, load_profile, profile_file, warehouse_location
    from dsc_assets.lib.report import ReportError, consistency_problems, prompt_selection, write_report
    from dsc_assets.lib.report_summary import write_summary

    if args.prompts is not None:
        try:
            prompt_selection(args.prompts)
        except ValueError as error:
            print(f"dsc report: {error}", file=sys.stderr)
            return 2

    profile = load_profile()
    tasks = task_list(args.tasks, profile.tasks)
    path = profile_file()
    out = Path(args.out) if args.out else PROJECT_ROOT / "reports" / path.stem
    con = _open_warehouse(warehouse_location(profile, dsc_home()))
    if con is None:
        return 1
    failed = []
    try:
        instance = dagster_instance()  # DAGSTER_HOME: the one `dsc run` and `make ui` record runs in
    except Exception as error:  # noqa: BLE001 - the report is still worth writing without run history
        print(f"dsc report: no Dagster run history ({error}); the report will not name the runs", file=sys.stderr)
        instance = None
    try:
        family_tasks = list(dict.fromkeys([*profile.tasks, *tasks]))  # every task of the study, not only these
        family = study_family(con, family_tasks, profile.methods)
        ledger_path = _merged_ledger(out)
        for task in tasks:
            problems = consistency_problems(con, task, path)
            runs = provenance(instance, task) if instance is not None else None
            try:
                written = write_report(
                    task, con, path, out, problems, runs, args.prompts, family=family, ledger_path=ledger_path
                )
                print(f"dsc report: {task}: wrote {written}")
            except ReportError as error:
                print(f"dsc report: {error}; nothing written", file=sys.stderr)
                failed.append(task)
                continue
            for problem in problems:
                print(f"dsc report: {task}: warning: {problem} (tables from different runs?)", file=sys.stderr)
        if len(failed) < len(tasks):  # the summary beside the reports it sums up, never alone
            readme = PROJECT_ROOT / "reports" / "README.md"
            inside = out.resolve().parent == readme.parent
            summary = write_summary(con, family, out, path.stem, readme if inside else None)
            print(f"dsc report: wrote {summary} ({family.size} contrasts planned, {len(family.missing)} not measured)")
    finally:
        con.close()
    return 1 if failed else 0


def _merged_ledger(out):
    """The committed ledger beside the reports (``reports/ledger.jsonl``, or in ``--out`` elsewhere), with every look
    at the test split this home made added."""
    from dsc_assets.lib import ledger
    from dsc_assets.lib.paths import PROJECT_ROOT
    from dsc_assets.lib.profiles import dsc_home

    reports = PROJECT_ROOT / "reports"
    path = (reports if out.resolve().is_relative_to(reports) else out) / ledger.FILE
    copied = ledger.merge(dsc_home() / ledger.FILE, path)
    if copied:
        print(f"dsc report: {copied} look(s) at the test split added to {path}")
    return path


def _open_warehouse(database: str):
    """The warehouse, read-only; None (and why, on stderr) when there is none or a running job holds it."""
    import duckdb

    from resources.stores import open_warehouse

    try:
        con = open_warehouse(database)
        if con is None:
            print(f"dsc report: no warehouse at {database}: nothing has run under this DSC_HOME", file=sys.stderr)
        return con
    except duckdb.IOException as error:
        print(
            f"dsc report: cannot open {database} read-only (a running job may be writing it; retry when it "
            f"ends): {' '.join(str(error).split())}",
            file=sys.stderr,
        )
        return None
