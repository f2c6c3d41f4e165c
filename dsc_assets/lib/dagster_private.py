"""Every private Dagster API dsc uses, in one place: Dagster has no public way yet to do these. Each is pinned by
dsc_assets_tests/unit/test_dagster_private.py, which fails loudly when an upgrade moves or changes one."""

from __future__ import annotations

import sys
from typing import Any

from dagster._core.event_api import PartitionKeyFilter
from dagster._core.storage.asset_check_execution_record import AssetCheckExecutionRecordStatus
from dagster._loggers import colored_console_logger

PLANNED, FAILED = AssetCheckExecutionRecordStatus.PLANNED, AssetCheckExecutionRecordStatus.FAILED

__all__ = [
    "FAILED",
    "PLANNED",
    "check_history",
    "colored_console_logger",
    "forget_input_version",
    "python_entry_point",
]


def check_history(instance: Any, check_key: Any, partition: str, limit: int = 5) -> list:
    """The latest evaluations of an asset check on one partition, newest first (no public filter for check history
    by partition yet)."""
    return instance.event_log_storage.get_asset_check_execution_history(
        check_key, limit=limit, partition_filter=PartitionKeyFilter(key=partition)
    )


def forget_input_version(context: Any, asset_key: Any) -> None:
    """Drop the step's cached provenance of an input asset, so the materialization records the observation this step
    really read (Dagster fetched it when the step started, possibly before a task file was edited and observed)."""
    step = getattr(context.op_execution_context, "_step_execution_context", None)
    if step is None:  # invoked directly (a test calling the asset's function): no step, no cached provenance
        return
    step.wipe_input_asset_version_info(asset_key)  # in a real step: an AttributeError when Dagster moved it


def python_entry_point(job: Any) -> Any:
    """A reconstructable job whose steps start as ``<this interpreter> -m dagster api execute_step`` rather than a
    ``dagster`` looked up on the worker's PATH (``dg.reconstructable`` sets no interpreter in the command): a Ray
    worker started without the virtualenv on its PATH still runs the step in the project's environment."""
    python = job.repository.executable_path or sys.executable
    return job._replace(repository=job.repository._replace(entry_point=[python, "-m", "dagster"]))
