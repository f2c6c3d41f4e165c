"""DLMA (Liu et al., 2024): contrastive answers under a positive and a negative system affix, scored by the model's
own log-probabilities (the self-reward)."""

import dagster as dg
import pandas as pd

from dsc_assets.defs.stage import stage
from dsc_assets.defs.steps import generate_step, partition_task, sampling_params, table_output
from dsc_assets.lib.chat import ChainMessages
from dsc_assets.lib.samples import generation_metadata, samples_frame
from dsc_assets.lib.stats import quantiles
from resources.llm import LLMResource
from resources.rewards import RewardModels
from resources.settings import DscSettings


@stage(group="dlma", reads=("task.system_prompt", "task.contrastive", "sampling", "generator", "methods.dlma"))
def contrastive_pairs(
    context: dg.AssetExecutionContext, raw_prompts: pd.DataFrame, llm: LLMResource, settings: DscSettings
) -> dg.Output[pd.DataFrame]:
    """DLMA: one answer to each training prompt under the task's positive affix and one under its negative affix."""
    task = partition_task(context)
    if task.spec.contrastive is None:
        raise dg.Failure(
            description=f"{task.folder / 'task.yaml'}: field 'contrastive' is missing "
            "(expected a mapping with positive_affix and negative_affix)"
        )
    train = raw_prompts[raw_prompts["split"] == "train"]
    params = sampling_params(task, settings)
    if not settings.builds("dlma"):
        context.log.info(f"{task.name}: DLMA is not in this profile's methods; it builds nothing")
        train = train.iloc[:0]

    chain, affixes = ChainMessages(task), task.spec.contrastive
    positive = samples_frame(
        generate_step(
            context,
            llm,
            params,
            task,
            train,
            "positive",
            0,
            lambda row: chain.contrastive(row["prompt"], affixes.positive_affix),
        )
    )
    negative = samples_frame(
        generate_step(
            context,
            llm,
            params,
            task,
            train,
            "negative",
            0,
            lambda row: chain.contrastive(row["prompt"], affixes.negative_affix),
        )
    )
    df = positive[["task", "prompt_id", "prompt"]].assign(positive=positive["text"], negative=negative["text"].values)
    stats = generation_metadata(pd.concat([positive, negative], ignore_index=True))
    stats.pop("preview")
    return table_output(context, task, df, stats, ["prompt_id", "positive", "negative"])


@stage(group="dlma", reads=("task.system_prompt", "task.contrastive", "self_reward_model"))
def self_reward_scores(
    context: dg.AssetExecutionContext, contrastive_pairs: pd.DataFrame, rewards: RewardModels
) -> dg.Output[pd.DataFrame]:
    """DLMA self-reward with the model's own log-probabilities (prompt tokens masked):
    R = [log π(a1|p+,q) − log π(a1|p−,q)] − [log π(a2|p+,q) − log π(a2|p−,q)]."""
    task = partition_task(context)
    scorer = rewards.self_reward()
    affix = lambda a: f"{task.spec.system_prompt} {a}".strip()  # noqa: E731  same system text as generation
    before = scorer.computed
    values = scorer.self_reward_many(
        contrastive_pairs["prompt"].tolist(),
        affix(task.spec.contrastive.positive_affix),
        affix(task.spec.contrastive.negative_affix),
        contrastive_pairs["positive"].tolist(),
        contrastive_pairs["negative"].tolist(),
    )
    df = contrastive_pairs.assign(self_reward=values).sort_values("self_reward", ascending=False).reset_index(drop=True)
    calls = scorer.computed - before  # four log-probabilities per pair
    context.log.info(
        f"{task.name}: {4 * len(df)} log-probabilities, {4 * len(df) - calls} from the cache, {calls} computed"
    )
    return table_output(
        context,
        task,
        df,
        {
            "self_reward": dg.MetadataValue.json(quantiles(df["self_reward"])),
            "model_calls": dg.MetadataValue.int(calls),
            "cache_hits": dg.MetadataValue.int(4 * len(df) - calls),
            "positive_share": dg.MetadataValue.float(
                round(float((df["self_reward"] > 0).mean()), 4) if len(df) else 0.0
            ),
        },
        ["prompt_id", "self_reward", "positive", "negative"],
    )
