"""One line that says why: the root cause of a failed step (exception type and message, asset, task), for the CLI's
first error line and for the run failure Dagster shows in the UI.

Dagster wraps an asset's exception in ``DagsterExecutionStepExecutionError: Error occurred while executing op ...``;
the cause a person can act on is the first error in the chain that is not Dagster's own.
"""

from __future__ import annotations

from typing import Any

import dagster as dg


def root_cause(error_info: Any) -> tuple[str, str]:
    """(type name, message) of the first non-Dagster error in a ``SerializableErrorInfo`` chain."""
    info = error_info
    while info is not None and (info.cls_name or "").startswith("Dagster") and info.cause is not None:
        info = info.cause
    info = info or error_info
    text = " ".join((info.message or "").split())
    head, _, rest = text.partition(": ")
    if rest and head.split(".")[-1] == info.cls_name:  # "resources.llm.GenerationError: ..." -> the message alone
        text = rest
    return info.cls_name or "Error", text


def step_failures(result) -> list[tuple[str, str, str, Any]]:
    """(step, error type, message, error info) for each failed step of an in-process run, root cause first."""
    failures = []
    for event in result.all_events:
        if not event.is_step_failure:
            continue
        data = event.step_failure_data
        if data.error and data.error.cls_name == "DagsterAssetCheckFailedError":
            continue  # a failed blocking check, reported with its expectations, not as a crash
        description = getattr(data.user_failure_data, "description", None)
        if description:  # a dg.Failure: its description is the message (explained() puts the type in front)
            kind, _, message = description.partition(": ")
            if not message or not kind.isidentifier():
                kind, message = "Failure", description
        else:
            kind, message = root_cause(data.error)
        failures.append((event.step_key, kind, message, data.error))
    return failures


def quiet_console_logger(verbose: bool) -> dg.LoggerDefinition:
    """Dagster's console logger without its error events (each a ~100-line trace) unless ``verbose``: progress still
    shows, the CLI prints each failure's root cause itself, and the full trace stays in the run's log in the UI."""
    import logging

    from dsc_assets.lib.dagster_private import colored_console_logger

    @dg.logger(colored_console_logger.config_schema, description="Console logger; errors only with --verbose.")
    def console(init_context):
        logger = colored_console_logger.logger_fn(init_context)
        if not verbose:
            for handler in logger.handlers:
                handler.addFilter(lambda record: record.levelno < logging.ERROR)
        return logger

    return console
