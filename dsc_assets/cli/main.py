"""``dsc``: one obvious entry point per job. Plain Dagster CLI usage keeps working beside it.

    dsc run [--tasks safety,sentiment] [--profile test]   materialize the main job, one partition per task
    dsc plan [--tasks ...]                                what is stale, why, and how many model calls a refresh costs
    dsc refresh [--tasks ...]                             rebuild only what is stale, until nothing is
    dsc gate --partition sentiment [--check-only]         quality gate: failed expectations, exit 1 on failure
    dsc doctor [--profile test] [--force]                 can llama.cpp generate on this CPU? (child-process probe)
    dsc report [--profile study] [--tasks ...] [--prompts IDS]  a finished run's study report per task (report.py)
    dsc cache copy --from A --to B                        the call cache between DuckDB and PostgreSQL (cache.py)
    dsc checkpoints pack --to DIR / unpack --from DIR     finished checkpoints carried between homes (checkpoints.py)

Before anything runs, `run`, `plan`, `gate` and `refresh` check what can be known without a model call (task files,
scorers, models, prompt lengths against n_ctx, DuckDB locks; see preflight.py). Errors print their root cause on the
first line (exception type and message, asset, task); ``--verbose`` adds the full trace.
Exit codes: 0 ok; 1 a run failed, or (gate) an asset is FAILED, BLOCKED, STALE or MISSING; 2 a usage or configuration
error (unknown option, task or asset; a task file, profile or model problem): nothing was run.
"""

from __future__ import annotations

import argparse
import sys
import traceback

from dsc_assets.cli.cache import add_cache
from dsc_assets.cli.checkpoints import add_checkpoints
from dsc_assets.cli.common import UsageError
from dsc_assets.cli.doctor import cmd_doctor
from dsc_assets.cli.gate import GATE_HELP, cmd_gate
from dsc_assets.cli.plan import cmd_plan, cmd_refresh
from dsc_assets.cli.report import cmd_report
from dsc_assets.cli.run import cmd_run

EXIT_CODES = """exit codes:
  0  ok
  1  a run failed (everything already generated is kept in the cache), or `dsc gate` found an asset that is not OK
  2  a usage or configuration error: unknown option, task or asset; a task file, profile, model or DSC_HOME
     problem; nothing was run"""
ENVIRONMENT = """environment:
  DSC_PROFILE        the profile when --profile is not given (default: default)
  DSC_HOME           where tables, the call cache, datasets, checkpoints and models go (default: .dsc)
  DSC_PROMPTS_DIR    the tasks folder (default: prompts/)
  DAGSTER_HOME       the Dagster instance: run history and the run queue (default: $DSC_HOME/dagster)
  DSC_LLAMA_THREADS  threads per llama.cpp context (default: every core this process may use)
  DSC_CACHE_URL      the call cache on PostgreSQL (postgresql://...), over the profile's shared.cache_url
  DSC_INSTANCE_URL   the Dagster instance on PostgreSQL (postgresql://...), over the profile's shared.instance_url
  DSC_WAREHOUSE_URL  the asset tables on PostgreSQL (postgresql://...), over the profile's shared.warehouse_url
  DSC_EXECUTOR       in_process (default) or ray: every step a Ray job at DSC_RAY_ADDRESS (docs/scale-out.md)
  DSC_MAX_CONCURRENT_RUNS  runs the instance's queue starts at once (default: 1)"""
HELP_EPILOG = f"{EXIT_CODES}\n\n{ENVIRONMENT}"


def _subcommands(top: argparse.ArgumentParser):
    """``add_parser`` that gives every subcommand the exit codes and environment in its --help."""
    sub = top.add_subparsers(dest="command", required=True)
    add = sub.add_parser

    def add_parser(name: str, **kwargs):
        kwargs["epilog"] = f"{kwargs['epilog']}\n\n{HELP_EPILOG}" if "epilog" in kwargs else HELP_EPILOG
        return add(name, formatter_class=argparse.RawDescriptionHelpFormatter, **kwargs)

    sub.add_parser = add_parser
    return sub


def parser() -> argparse.ArgumentParser:
    """The command line: one subcommand per job, each with ``--verbose``."""
    top = argparse.ArgumentParser(
        prog="dsc",
        description="Align a language model with synthetic data.",
        epilog=HELP_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = _subcommands(top)
    verbose = argparse.ArgumentParser(add_help=False)
    verbose.add_argument("--verbose", "-v", action="store_true", help="print the full trace of an error")
    for add in (_add_run, _add_plan_and_refresh, _add_gate, _add_doctor, _add_report, add_cache, add_checkpoints):
        add(sub, verbose)
    return top


def _add_run(sub, verbose) -> None:
    """`dsc run`."""
    run = sub.add_parser("run", help="materialize the main job for each task (partition)", parents=[verbose])
    run.add_argument("--tasks", help="comma-separated task names (default: the profile's list)")
    run.add_argument(
        "--profile", help="profile name under profiles/ or a YAML path (default: $DSC_PROFILE or 'default')"
    )
    run.add_argument("--select", help="comma-separated asset names (default: the whole graph)")
    run.set_defaults(func=cmd_run)


def _add_plan_and_refresh(sub, verbose) -> None:
    """`dsc plan` and `dsc refresh`."""
    for name, func, text in (
        ("plan", cmd_plan, "what is stale per asset and task, why, and what a refresh costs"),
        ("refresh", cmd_refresh, "materialize only stale asset partitions until nothing is stale"),
    ):
        command = sub.add_parser(name, help=text, parents=[verbose])
        command.add_argument("--tasks", help="comma-separated task names (default: the profile's list)")
        command.add_argument("--profile", help="profile name or YAML path")
        command.add_argument("--select", help="comma-separated asset names to consider (default: all)")
        if name == "plan":
            command.add_argument("--json", help="also write the estimate per asset and task to this JSON file")
            command.add_argument(
                "--against",
                help="a plan's JSON written earlier: print its estimate beside the measured time of each step since",
            )
        command.set_defaults(func=func)


def _add_gate(sub, verbose) -> None:
    """`dsc gate`."""
    gate = sub.add_parser(
        "gate",
        help="quality gate for CI: exit 1 unless every asset and its upstream is OK",
        parents=[verbose],
        epilog=GATE_HELP,
    )
    gate.add_argument(
        "--tasks", "--partition", dest="tasks", help="comma-separated task names (default: the profile's)"
    )
    gate.add_argument("--profile", help="profile name or YAML path")
    gate.add_argument("--check-only", action="store_true", help="only judge the stored tables (materialize nothing)")
    gate.add_argument(
        "--assets",
        help="comma-separated assets to print (default: every checked asset); their upstream must hold all the same",
    )
    gate.set_defaults(func=cmd_gate)


def _add_doctor(sub, verbose) -> None:
    """`dsc doctor`."""
    doctor = sub.add_parser(
        "doctor", help="check that llama.cpp generates on this CPU with the profile's models", parents=[verbose]
    )
    doctor.add_argument("--profile", help="profile name or YAML path")
    doctor.add_argument("--force", action="store_true", help="probe again even if this build passed before")
    doctor.set_defaults(func=cmd_doctor)


def _add_report(sub, verbose) -> None:
    """`dsc report`."""
    report = sub.add_parser(
        "report",
        help="write each task's study report (markdown + effects plot) from the finished run's tables",
        parents=[verbose],
    )
    report.add_argument("--tasks", help="comma-separated task names (default: the profile's list)")
    report.add_argument("--profile", help="profile name or YAML path")
    report.add_argument("--out", help="output folder (default: reports/<profile name>)")
    report.add_argument(
        "--prompts",
        help="also recompute the evaluation over these test prompts alone: comma-separated "
        "ids and inclusive ranges first..last (e.g. privacy-121..privacy-216)",
    )
    report.set_defaults(func=cmd_report)


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
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
    from dsc_assets.build.preflight import PreflightError
    from dsc_assets.lib.execution import ExecutionError
    from dsc_assets.lib.profiles import HomeError, ProfileError
    from dsc_assets.lib.task_spec import TaskError
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
        print(
            f"{command}: {len(error.problems)} problem(s) found before any model call; nothing was run", file=sys.stderr
        )
        return 2
    except (ProfileError, TaskError, ModelError, HomeError, ExecutionError) as error:
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
