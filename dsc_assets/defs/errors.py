"""One line that says why: an asset body's exception becomes a failure whose description is its root cause
(exception type and message, asset, task), so the run failure in the UI reads like the CLI's first error line."""

from __future__ import annotations

import functools
from typing import Any, Callable

import dagster as dg


def describe(error: BaseException, asset: str, task: str | None) -> str:
    """``GenerationError: <message> (asset drafts, task sentiment)``: type and message first, where it happened last."""
    message = " ".join(str(error).split()) or "(no message)"
    return f"{type(error).__name__}: {message} (asset {asset}{f', task {task}' if task else ''})"


def explained(fn: Callable) -> Callable:
    """Wrap an asset body so that any exception becomes a ``dg.Failure`` whose description is the root cause: the run
    failure in the UI then reads like the CLI's first line (the original trace stays chained, in the step's log)."""

    @functools.wraps(fn)
    def wrapper(context: dg.AssetExecutionContext, *args: Any, **kwargs: Any) -> Any:
        try:
            return fn(context, *args, **kwargs)
        except (dg.Failure, dg.DagsterError):
            raise
        except Exception as error:  # noqa: BLE001  re-raised with its cause, after naming it
            asset = context.asset_key.path[-1] if context.has_assets_def else context.op_def.name
            task = context.partition_key if context.has_partition_key else None
            raise dg.Failure(
                description=describe(error, asset, task), metadata={"error_type": type(error).__name__}
            ) from error

    return wrapper
