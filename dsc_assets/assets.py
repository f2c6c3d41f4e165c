"""The self-critique chain: raw_prompts → drafts → critiques → revisions, one partition per task.

Each asset says what to ask; the ``llm`` resource knows how, and caches every call, so a rerun or a resumed
run only generates rows it has never seen.
"""


from typing import Callable

import dagster as dg
import pandas as pd

from dsc_assets.samples import Sample, data_version, generation_metadata, preview, samples_frame
from dsc_assets.tasks import Task, TaskError, load_task
from dsc_assets.versions import TABLE_METADATA, stage, upstream_data_versions, version_metadata  # noqa: F401  (re-exported)
from resources.llm import GenerationProgress, LLMResource, SamplingParams
from resources.settings import DscSettings

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
    context.log.info(f"{label}: {len(records)} rows, {len(records) - to_generate} from the cache, {to_generate} to generate")
    progress = GenerationProgress(lambda line: context.log.info(f"{label}: {line}"), to_generate)
    generations = llm.chat_many(requests, params, on_generated=progress)
    return [
        Sample.from_generation(
            row, kind, step,
            source=row[source_column] if source_column else "",
            critique=row[critique_column] if critique_column else "",
            generation=generation,
        )
        for row, generation in zip(records, generations)
    ]


class ChainMessages:
    """The one place that turns a task's templates into chat messages, for the assets and for `dsc plan`'s replay."""

    def __init__(self, task: Task):
        self.spec = task.spec
        self.system = {"role": "system", "content": task.spec.system_prompt}

    def draft(self, prompt: str) -> list[dict]:
        return [self.system, user_message(prompt)]

    def critique(self, prompt: str, response: str) -> list[dict]:
        return [self.system, user_message(self.spec.critique_template.format(prompt=prompt, response=response))]

    def revision(self, prompt: str, response: str, critique: str) -> list[dict]:
        content = self.spec.revision_template.format(prompt=prompt, response=response, critique=critique)
        return [self.system, user_message(content)]

    def contrastive(self, prompt: str, affix: str) -> list[dict]:
        system = {"role": "system", "content": f"{self.spec.system_prompt} {affix}".strip()}
        return [system, user_message(prompt)]


def system_message(task: Task) -> dict:
    return {"role": "system", "content": task.spec.system_prompt}


def user_message(content: str) -> dict:
    return {"role": "user", "content": content}


def _sample_output(context, df: pd.DataFrame, task: Task, settings: DscSettings, llm: LLMResource) -> dg.Output[pd.DataFrame]:
    metadata = {**generation_metadata(df), **version_metadata(context, task, settings, llm)}
    return dg.Output(df, data_version=data_version(df), metadata=metadata)


@stage(group="generation", reads=("task.split", "prompts_file", "max_prompts_per_task", "max_eval_prompts_per_task"))
def raw_prompts(context: dg.AssetExecutionContext, settings: DscSettings) -> dg.Output[pd.DataFrame]:
    """The task's prompts with a deterministic train/test split (a prompt's split depends only on its id and the
    split seed, so adding prompts never moves old ones); the first ``max_prompts_per_task`` train prompts and the
    first ``max_eval_prompts_per_task`` test prompts, in file order."""
    task = partition_task(context)
    splits = [(record, task.split_of(record.id)) for record in task.prompts]
    train = [(r, s) for r, s in splits if s == "train"][: settings.max_prompts_per_task]
    test = [(r, s) for r, s in splits if s == "test"][: settings.max_eval_prompts_per_task]
    kept = {r.id for r, _ in train + test}
    chosen = [(r, s) for r, s in splits if r.id in kept]
    df = pd.DataFrame(
        {
            "task": task.name,
            "prompt_id": [r.id for r, _ in chosen],
            "prompt": [r.prompt for r, _ in chosen],
            "split": [s for _, s in chosen],
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
            **version_metadata(context, task, settings),
        },
    )


@stage(group="generation", reads=("task.system_prompt", "sampling", "generator"))
def drafts(
    context: dg.AssetExecutionContext, raw_prompts: pd.DataFrame, llm: LLMResource, settings: DscSettings
) -> dg.Output[pd.DataFrame]:
    """First answers to the training prompts, under the task's system prompt."""
    task = partition_task(context)
    train = raw_prompts[raw_prompts["split"] == "train"]
    chain = ChainMessages(task)
    samples = generate_step(
        context, llm, sampling_params(task, settings), task, train, "draft", 0, lambda row: chain.draft(row["prompt"])
    )
    return _sample_output(context, samples_frame(samples), task, settings, llm)


@stage(group="generation", reads=("task.system_prompt", "task.critique_template", "sampling", "generator"))
def critiques(
    context: dg.AssetExecutionContext, drafts: pd.DataFrame, llm: LLMResource, settings: DscSettings
) -> dg.Output[pd.DataFrame]:
    """The model's critique of each draft (step 1 of the chain), from the task's critique template."""
    task = partition_task(context)
    chain = ChainMessages(task)
    rows = drafts.assign(response=drafts["text"])
    samples = generate_step(
        context, llm, sampling_params(task, settings), task, rows, "critique", 1,
        lambda row: chain.critique(row["prompt"], row["response"]), source_column="response",
    )
    return _sample_output(context, samples_frame(samples), task, settings, llm)


@stage(group="generation", reads=("task.system_prompt", "task.critique_template", "task.revision_template",
                                      "task.revision_steps", "sampling", "generator"))
def revisions(
    context: dg.AssetExecutionContext,
    drafts: pd.DataFrame,
    critiques: pd.DataFrame,
    llm: LLMResource,
    settings: DscSettings,
) -> dg.Output[pd.DataFrame]:
    """Revisions that follow each critique, for ``revision_steps`` Gibbs steps: step k revises step k−1's answer
    after its critique; critiques of steps after the first are generated here (they need the previous revision)."""
    task = partition_task(context)
    spec = task.spec
    params = sampling_params(task, settings)

    chain = ChainMessages(task)

    def revise(row: pd.Series) -> list[dict]:
        return chain.revision(row["prompt"], row["response"], row["critique"])

    as_critiques = lambda df: df.drop(columns=["critique"]).rename(columns={"source": "response", "text": "critique"})  # noqa: E731
    current = as_critiques(critiques)
    all_samples: list[Sample] = []
    for step in range(1, spec.revision_steps + 1):
        if step > 1:
            later = generate_step(
                context, llm, params, task, current, "critique", step,
                lambda row: chain.critique(row["prompt"], row["response"]), source_column="response",
            )
            current = as_critiques(samples_frame(later))
        step_samples = generate_step(
            context, llm, params, task, current, "revision", step, revise, source_column="response", critique_column="critique"
        )
        all_samples.extend(step_samples)
        current = samples_frame(step_samples).rename(columns={"text": "response"}).drop(columns=["critique"])
    return _sample_output(context, samples_frame(all_samples), task, settings, llm)
