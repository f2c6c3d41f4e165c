"""`dsc report`: a finished run's study report per task, from the warehouse (read-only)."""

from __future__ import annotations

import argparse
import sys

from dsc_assets.cli.common import dagster_instance, prepare_environment, task_list


def cmd_report(args: argparse.Namespace) -> int:
    """Write each task's study report from the warehouse (read-only: a running job keeps writing its own tables)."""
    prepare_environment(args.profile)
    from pathlib import Path

    import duckdb

    from dsc_assets.build.provenance import provenance
    from dsc_assets.lib.paths import PROJECT_ROOT
    from dsc_assets.lib.profiles import dsc_home, load_profile, profile_file
    from dsc_assets.lib.report import (
        ReportError,
        consistency_problems,
        prompt_selection,
        study_family,
        write_report,
    )

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
    database = dsc_home() / "warehouse.duckdb"
    if not database.exists():
        print(f"dsc report: no warehouse at {database}: nothing has run under this DSC_HOME", file=sys.stderr)
        return 1
    try:
        con = duckdb.connect(str(database), read_only=True)
    except duckdb.IOException as error:
        print(
            f"dsc report: cannot open {database} read-only (a running job may be writing it; retry when it "
            f"ends): {' '.join(str(error).split())}",
            file=sys.stderr,
        )
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
        for task in tasks:
            problems = consistency_problems(con, task, path)
            runs = provenance(instance, task) if instance is not None else None
            try:
                written = write_report(task, con, path, out, problems, runs, prompt_subset=args.prompts, family=family)
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
