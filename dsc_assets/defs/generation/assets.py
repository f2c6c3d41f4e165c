"""The self-critique chain: raw_prompts → drafts → critiques → revisions, one partition per task.

Each asset says what to ask; the ``llm`` resource knows how, and caches every call, so a rerun or a resumed
run only generates rows it has never seen.
"""

import dagster as dg
import pandas as pd

from dsc_assets.defs.stage import stage, version_metadata
from dsc_assets.defs.steps import generate_step, partition_task, sample_output, sampling_params
from dsc_assets.lib.chat import ChainMessages
from dsc_assets.lib.samples import Sample, data_version, samples_frame
from dsc_assets.lib.tables import preview
from resources.llm import LLMResource
from resources.settings import DscSettings


@stage(
    group="generation",
    reads=("task.split", "prompts_file", "max_prompts_per_task", "max_eval_prompts_per_task", "eval_split"),
)
def raw_prompts(context: dg.AssetExecutionContext, settings: DscSettings) -> dg.Output[pd.DataFrame]:
    """The task's prompts with a deterministic train/dev/test split (a prompt's split depends only on its group and
    the split seed: adding a prompt that links no group never moves old ones); the first ``max_prompts_per_task``
    train prompts and the first ``max_eval_prompts_per_task`` of the evaluated split (the profile's ``eval_split``),
    in file order."""
    task = partition_task(context)
    splits = [(record, task.split_of(record.id)) for record in task.prompts]
    train = [(r, s) for r, s in splits if s == "train"][: settings.max_prompts_per_task]
    evaluated = [(r, s) for r, s in splits if s == settings.eval_split][: settings.max_eval_prompts_per_task]
    kept = {r.id for r, _ in train + evaluated}
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
            "train_rows": dg.MetadataValue.int(int(counts.get("train", 0))),
            "test_rows": dg.MetadataValue.int(int(counts.get("test", 0))),
            "dev_rows": dg.MetadataValue.int(int(counts.get("dev", 0))),
            "groups": dg.MetadataValue.int(len(set(task.groups.values()))),
            "prompts_in_file": dg.MetadataValue.int(len(task.prompts)),
            "preview": preview(df, ["prompt_id", "split", "prompt"]),
            **version_metadata(context, task),
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
    return sample_output(context, samples_frame(samples), task)


@stage(group="generation", reads=("task.system_prompt", "task.critique_template", "sampling", "generator"))
def critiques(
    context: dg.AssetExecutionContext, drafts: pd.DataFrame, llm: LLMResource, settings: DscSettings
) -> dg.Output[pd.DataFrame]:
    """The model's critique of each draft (step 1 of the chain), from the task's critique template."""
    task = partition_task(context)
    chain = ChainMessages(task)
    rows = drafts.assign(response=drafts["text"])
    samples = generate_step(
        context,
        llm,
        sampling_params(task, settings),
        task,
        rows,
        "critique",
        1,
        lambda row: chain.critique(row["prompt"], row["response"]),
        source_column="response",
    )
    return sample_output(context, samples_frame(samples), task)


@stage(
    group="generation",
    reads=(
        "task.system_prompt",
        "task.critique_template",
        "task.revision_template",
        "task.revision_steps",
        "sampling",
        "generator",
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
                context,
                llm,
                params,
                task,
                current,
                "critique",
                step,
                lambda row: chain.critique(row["prompt"], row["response"]),
                source_column="response",
            )
            current = as_critiques(samples_frame(later))
        step_samples = generate_step(
            context,
            llm,
            params,
            task,
            current,
            "revision",
            step,
            revise,
            source_column="response",
            critique_column="critique",
        )
        all_samples.extend(step_samples)
        current = samples_frame(step_samples).rename(columns={"text": "response"}).drop(columns=["critique"])
    return sample_output(context, samples_frame(all_samples), task)
