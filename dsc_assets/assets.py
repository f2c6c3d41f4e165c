"""The self-critique chain: raw_prompts → drafts → critiques → revisions, one partition per task.

Each asset says what to ask; the ``llm`` resource knows how, and caches every call, so a rerun or a resumed
run only generates rows it has never seen.
"""


from typing import Callable

import dagster as dg
import pandas as pd

from dsc_assets.partitions import task_partitions
from dsc_assets.samples import Sample, data_version, generation_metadata, preview, samples_frame
from dsc_assets.tasks import Task, TaskError, load_task, load_task_spec, task_names
from resources.hashing import content_hash
from resources.llm import Generation, LLMResource, SamplingParams
from resources.settings import DscSettings

TABLE_METADATA = {"partition_expr": "task"}  # one DuckDB table per asset, one task's rows per partition


def code_version(logic: str, *fields: str) -> str:
    """Version of an asset: its own logic revision plus the task.yaml fields it reads, over every task."""
    versions = []
    for name in task_names():
        try:
            versions.append((name, load_task_spec(name).version_of(*fields)))
        except TaskError:
            versions.append((name, "invalid"))  # the run itself reports what is wrong
    return content_hash(logic, versions, length=16)


def _task(context: dg.AssetExecutionContext) -> Task:
    try:
        return load_task(context.partition_key)
    except TaskError as error:
        raise dg.Failure(description=str(error)) from None


def sampling_params(task: Task, settings: DscSettings) -> SamplingParams:
    params = task.spec.sampling
    if settings.max_tokens_cap and params.max_tokens > settings.max_tokens_cap:
        params = params.model_copy(update={"max_tokens": settings.max_tokens_cap})
    return params


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
    """Ask the model once per row (cache first) and wrap each answer in the shared Sample schema."""
    records = [row for _, row in rows.iterrows()]
    total = len(records)

    def progress(index: int, generation: Generation) -> None:
        if index % 10 == 9 or index == total - 1:
            context.log.info(f"{task.name} {kind} step {step}: {index + 1}/{total} rows "
                             f"({generation.completion_tokens / max(generation.seconds, 1e-9):.1f} tok/s)")

    generations = llm.chat_many([messages_for(row) for row in records], params, on_generated=progress)
    return [
        Sample.from_generation(
            row, kind, step,
            source=row[source_column] if source_column else "",
            critique=row[critique_column] if critique_column else "",
            generation=generation,
        )
        for row, generation in zip(records, generations)
    ]


def _system(task: Task) -> dict:
    return {"role": "system", "content": task.spec.system_prompt}


def _user(content: str) -> dict:
    return {"role": "user", "content": content}


def _sample_output(df: pd.DataFrame, task: Task, *fields: str) -> dg.Output[pd.DataFrame]:
    metadata = generation_metadata(df)
    metadata["template_version"] = dg.MetadataValue.text(task.version_of(*fields))
    return dg.Output(df, data_version=data_version(df), metadata=metadata)


@dg.asset(
    partitions_def=task_partitions, group_name="generation", metadata=TABLE_METADATA, kinds={"duckdb"},
    code_version=code_version("raw_prompts-1", "split"),
)
def raw_prompts(context: dg.AssetExecutionContext, settings: DscSettings) -> dg.Output[pd.DataFrame]:
    """The task's prompts (first ``max_prompts_per_task`` in file order) with a deterministic train/test split:
    a prompt's split depends only on its id and the split seed, so adding prompts never moves old ones."""
    task = _task(context)
    records = task.prompts[: settings.max_prompts_per_task]
    df = pd.DataFrame(
        {
            "task": task.name,
            "prompt_id": [r.id for r in records],
            "prompt": [r.prompt for r in records],
            "split": [task.split_of(r.id) for r in records],
        }
    )
    counts = df["split"].value_counts()
    return dg.Output(
        df,
        data_version=data_version(df),
        metadata={
            "num_rows": dg.MetadataValue.int(len(df)),
            "train_rows": dg.MetadataValue.int(int(counts.get("train", 0))),
            "test_rows": dg.MetadataValue.int(int(counts.get("test", 0))),
            "prompts_in_file": dg.MetadataValue.int(len(task.prompts)),
            "preview": preview(df, ["prompt_id", "split", "prompt"]),
        },
    )


@dg.asset(
    partitions_def=task_partitions, group_name="generation", metadata=TABLE_METADATA, kinds={"duckdb"},
    code_version=code_version("drafts-1", "system_prompt", "sampling"),
)
def drafts(
    context: dg.AssetExecutionContext, raw_prompts: pd.DataFrame, llm: LLMResource, settings: DscSettings
) -> dg.Output[pd.DataFrame]:
    """First answers to the training prompts, under the task's system prompt."""
    task = _task(context)
    train = raw_prompts[raw_prompts["split"] == "train"]
    samples = generate_step(
        context, llm, sampling_params(task, settings), task, train, "draft", 0, lambda row: [_system(task), _user(row["prompt"])]
    )
    return _sample_output(samples_frame(samples), task, "system_prompt", "sampling")


@dg.asset(
    partitions_def=task_partitions, group_name="generation", metadata=TABLE_METADATA, kinds={"duckdb"},
    code_version=code_version("critiques-1", "system_prompt", "critique_template", "sampling"),
)
def critiques(
    context: dg.AssetExecutionContext, drafts: pd.DataFrame, llm: LLMResource, settings: DscSettings
) -> dg.Output[pd.DataFrame]:
    """The model's critique of each draft (step 1 of the chain), from the task's critique template."""
    task = _task(context)
    template = task.spec.critique_template
    rows = drafts.assign(response=drafts["text"])
    samples = generate_step(
        context, llm, sampling_params(task, settings), task, rows, "critique", 1,
        lambda row: [_system(task), _user(template.format(prompt=row["prompt"], response=row["response"]))],
        source_column="response",
    )
    return _sample_output(samples_frame(samples), task, "system_prompt", "critique_template", "sampling")


@dg.asset(
    partitions_def=task_partitions, group_name="generation", metadata=TABLE_METADATA, kinds={"duckdb"},
    code_version=code_version(
        "revisions-1", "system_prompt", "critique_template", "revision_template", "revision_steps", "sampling"
    ),
)
def revisions(
    context: dg.AssetExecutionContext,
    drafts: pd.DataFrame,
    critiques: pd.DataFrame,
    llm: LLMResource,
    settings: DscSettings,
) -> dg.Output[pd.DataFrame]:
    """Revisions that follow each critique, for ``revision_steps`` Gibbs steps: step k revises step k−1's answer
    after its critique; critiques of steps after the first are generated here (they need the previous revision)."""
    task = _task(context)
    spec = task.spec
    params = sampling_params(task, settings)
    fields = ("system_prompt", "critique_template", "revision_template", "revision_steps", "sampling")

    def revise(row: pd.Series) -> list[dict]:
        content = spec.revision_template.format(prompt=row["prompt"], response=row["response"], critique=row["critique"])
        return [_system(task), _user(content)]

    as_critiques = lambda df: df.drop(columns=["critique"]).rename(columns={"source": "response", "text": "critique"})  # noqa: E731
    current = as_critiques(critiques)
    all_samples: list[Sample] = []
    for step in range(1, spec.revision_steps + 1):
        if step > 1:
            later = generate_step(
                context, llm, params, task, current, "critique", step,
                lambda row: [_system(task), _user(spec.critique_template.format(prompt=row["prompt"], response=row["response"]))],
                source_column="response",
            )
            current = as_critiques(samples_frame(later))
        step_samples = generate_step(
            context, llm, params, task, current, "revision", step, revise, source_column="response", critique_column="critique"
        )
        all_samples.extend(step_samples)
        current = samples_frame(step_samples).rename(columns={"text": "response"}).drop(columns=["critique"])
    return _sample_output(samples_frame(all_samples), task, *fields)
