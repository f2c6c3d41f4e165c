"""What every asset body does: find its task, its sampling, ask the model once per row (cache first), and return its
table as an Output with the metadata every stage records."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Callable, Iterator

import dagster as dg
import pandas as pd

from dsc_assets.defs.stage import version_metadata
from dsc_assets.lib.samples import Sample, data_version, generation_metadata
from dsc_assets.lib.tables import preview
from dsc_assets.lib.task_spec import TaskError
from dsc_assets.lib.tasks import Task, load_task
from resources.llm import GenerationProgress, LLMResource, SamplingParams
from resources.scorer import SCORE_PROGRESS
from resources.settings import DscSettings
from resources.train_result import TRAINING_PROGRESS


def partition_task(context: dg.AssetExecutionContext) -> Task:
    try:
        return load_task(context.partition_key)
    except TaskError as error:
        raise dg.Failure(description=str(error)) from None


def sampling_params(task: Task, settings: DscSettings) -> SamplingParams:
    return task.sampling_for(settings.max_tokens_cap)


def generate_step(
    context: dg.AssetExecutionContext,
    llm: LLMResource,
    params: SamplingParams,
    task: Task,
    rows: pd.DataFrame,
    kind: str,
    step: int,
    messages_for: "Callable[[pd.Series], list[dict]]",
    source_column: str | None = None,
    critique_column: str | None = None,
) -> list[Sample]:
    """Ask the model once per row (cache first) and wrap each answer in the shared Sample schema. Logs progress
    (rows done / to generate, tokens/s over the step so far) while the model works."""
    records = [row for _, row in rows.iterrows()]
    requests = [messages_for(row) for row in records]
    to_generate = llm.count_missing(requests, params)
    label = f"{task.name} {kind} step {step}"
    context.log.info(
        f"{label}: {len(records)} rows, {len(records) - to_generate} from the cache, {to_generate} to generate"
    )
    progress = GenerationProgress(lambda line: context.log.info(f"{label}: {line}"), to_generate)
    generations = llm.chat_many(requests, params, on_generated=progress)
    return [
        Sample.from_generation(
            row,
            kind,
            step,
            source=row[source_column] if source_column else "",
            critique=row[critique_column] if critique_column else "",
            generation=generation,
        )
        for row, generation in zip(records, generations)
    ]


def generation_progress(context, label: str, llm: LLMResource, requests: list, seeded: list[SamplingParams]):
    """``on_generated`` for answering ``requests`` once per sampling in ``seeded``: first a line saying how many
    answers come from the cache, then one as answers land (rows done / to generate, tokens/s), so a branch of
    several minutes shows where it is in the run log and on the ``dsc`` line."""
    total, missing = len(requests) * len(seeded), sum(llm.count_missing(requests, p) for p in seeded)
    context.log.info(f"{label}: {total} answers, {total - missing} from the cache, {missing} to generate")
    return GenerationProgress(lambda line: context.log.info(f"{label}: {line}"), missing)


@contextmanager
def _progress_in_log(variable, context, label: str) -> Iterator[None]:
    """Route the lines a resource reports through ``variable`` (a ContextVar) into the run log, prefixed."""
    token = variable.set(lambda line: context.log.info(f"{label}: {line}"))
    try:
        yield
    finally:
        variable.reset(token)


def scoring_progress(context, label: str):
    """Scores computed inside report their progress in the run log (count, rate, minutes left): a judge's hour of
    scoring is otherwise a silent step."""
    return _progress_in_log(SCORE_PROGRESS, context, label)


def training_progress(context, label: str):
    """A training inside reports its step, loss and minutes left in the run log (resources/train_result.py)."""
    return _progress_in_log(TRAINING_PROGRESS, context, label)


def sample_output(context, df: pd.DataFrame, task: Task) -> dg.Output[pd.DataFrame]:
    metadata = {**generation_metadata(df), **version_metadata(context, task)}
    return dg.Output(df, data_version=data_version(df), metadata=metadata)


def table_output(
    context: dg.AssetExecutionContext,
    task: Task,
    df: pd.DataFrame,
    metadata: dict,
    preview_columns: list[str],
) -> dg.Output[pd.DataFrame]:
    return dg.Output(
        df,
        data_version=data_version(df),
        metadata={
            **metadata,
            "preview": preview(df, preview_columns),
            **version_metadata(context, task),
        },
    )
