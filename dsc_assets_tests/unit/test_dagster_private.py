"""The private Dagster APIs dsc wraps (dsc_assets/lib/dagster_private.py) still exist and still do what dsc relies
on: this fails loudly on a Dagster upgrade that moves or changes one, instead of dsc silently losing the feature."""

from __future__ import annotations

import inspect

import dagster as dg

from dsc_assets.lib import dagster_private


def test_check_history_reads_one_partitions_evaluations():
    partitions = dg.StaticPartitionsDefinition(["a", "b"])

    @dg.asset(partitions_def=partitions)
    def table() -> int:
        return 1

    @dg.asset_check(asset=table, partitions_def=partitions, blocking=True)
    def table_ok(context) -> dg.AssetCheckResult:
        return dg.AssetCheckResult(passed=context.partition_key == "a")

    instance = dg.DagsterInstance.ephemeral()
    for key in ("a", "b"):
        dg.materialize([table, table_ok], partition_key=key, instance=instance, raise_on_error=False)
    by_partition = {key: dagster_private.check_history(instance, table_ok.check_key, key) for key in ("a", "b")}
    assert [r.status for r in by_partition["b"]] == [dagster_private.FAILED]
    assert by_partition["a"] and by_partition["a"][0].status != dagster_private.FAILED
    assert dagster_private.PLANNED.name == "PLANNED"


def test_forget_input_version_reaches_the_step_context():
    seen = []

    @dg.asset
    def upstream() -> int:
        return 1

    @dg.asset(deps=[upstream])
    def downstream(context) -> int:
        step = getattr(context.op_execution_context, "_step_execution_context", None)
        seen.append(hasattr(step, "wipe_input_asset_version_info"))  # else forget_input_version does nothing
        dagster_private.forget_input_version(context, upstream.key)
        return 2

    assert dg.materialize([upstream, downstream], instance=dg.DagsterInstance.ephemeral()).success
    assert seen == [True]


def test_colored_console_logger_is_a_logger_definition_with_its_config():
    logger = dagster_private.colored_console_logger
    assert isinstance(logger, dg.LoggerDefinition) and logger.config_schema is not None
    assert "init_context" in inspect.signature(logger.logger_fn).parameters


def test_python_entry_point_names_this_interpreter_in_the_step_command():
    """A step delegated to another process (Ray) is started with the command the job's origin gives."""
    import sys

    from dagster._grpc.types import ExecuteStepArgs

    from dsc_assets.definitions import dsc_job_definition

    job = dagster_private.python_entry_point(dg.reconstructable(dsc_job_definition))
    args = ExecuteStepArgs(job.get_python_origin(), "run-id", ["drafts"])
    assert list(args.get_command_args(skip_serialized_namedtuple=True)) == [
        sys.executable,
        "-m",
        "dagster",
        "api",
        "execute_step",
    ]
