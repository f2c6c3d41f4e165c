"""The training sets, as DuckDB tables that point at Hugging Face dataset folders (content-addressed): dSC's SFT
set, the placebo control's set, the DPO/rDPO pairs and DLMA's pairs, each in the chat format TRL reads."""

import json

import dagster as dg
import pandas as pd

from dsc_assets.defs.stage import stage
from dsc_assets.defs.steps import partition_task, table_output
from dsc_assets.lib.chat import ChainMessages, assistant_message
from dsc_assets.lib.tasks import Task
from resources.datasets import save_dataset
from resources.settings import DscSettings


def _dataset_output(
    context: dg.AssetExecutionContext,
    settings: DscSettings,
    df: pd.DataFrame,
    name: str,
    task: Task,
    records: list[dict],
    columns: list[str],
) -> dg.Output:
    path, digest = save_dataset(settings.artifact_path("datasets", name, task.name), records)
    return table_output(
        context,
        task,
        df.assign(dataset_path=str(path)),
        {"path": dg.MetadataValue.path(str(path)), "dataset_hash": dg.MetadataValue.text(digest)},
        columns,
    )


@stage(group="datasets", reads=("task.system_prompt",), kinds=("duckdb", "huggingface"))
def sft_dataset(
    context: dg.AssetExecutionContext, accepted_samples: pd.DataFrame, settings: DscSettings
) -> dg.Output[pd.DataFrame]:
    """dSC distillation set: accepted revisions in chat ``messages`` format (system, user, assistant)."""
    task = partition_task(context)
    return _messages_output(context, settings, "sft_dataset", task, _distilled(accepted_samples), "sample")


@stage(group="datasets", reads=("task.system_prompt", "methods.placebo"), kinds=("duckdb", "huggingface"))
def placebo_dataset(
    context: dg.AssetExecutionContext, accepted_samples: pd.DataFrame, settings: DscSettings
) -> dg.Output[pd.DataFrame]:
    """The placebo control's set: the teacher's unrevised draft of every prompt in dSC's SFT set (same prompts, same
    count, same format). SFT on it against SFT on the revisions separates what critique and revision add from "more
    teacher text". No rows when the profile's methods leave the placebo out."""
    task = partition_task(context)
    rows = _distilled(accepted_samples) if settings.builds("placebo") else accepted_samples.iloc[:0]
    return _messages_output(context, settings, "placebo_dataset", task, rows, "draft")


def _distilled(accepted_samples: pd.DataFrame) -> pd.DataFrame:
    """The accepted chains dSC distils: accepted revisions that differ from their draft."""
    accepted = accepted_samples[accepted_samples["accepted"]]
    # A revision identical to its draft (an aligned model's refusal, revised into the same refusal) states no
    # preference: DPO's margin for it is 0 by construction, so it would only dilute the batch.
    unchanged = accepted["sample"].astype(str).str.strip() == accepted["draft"].astype(str).str.strip()
    return accepted[~unchanged]


def _messages_output(context, settings: DscSettings, name: str, task: Task, rows: pd.DataFrame, answer: str):
    """A chat ``messages`` set (system, user, assistant) with ``answer``'s column as the assistant turn."""
    records = [
        {"prompt_id": row.prompt_id, "messages": ChainMessages(task).answered(row.prompt, getattr(row, answer))}
        for row in rows.itertuples()
    ]
    df = pd.DataFrame(
        {
            "task": task.name,
            "prompt_id": [r["prompt_id"] for r in records],
            "messages": [json.dumps(r["messages"], ensure_ascii=False) for r in records],
        }
    )
    return _dataset_output(context, settings, df, name, task, records, ["prompt_id", "messages"])


@stage(group="datasets", reads=("task.system_prompt",), kinds=("duckdb", "huggingface"))
def dpo_dataset(
    context: dg.AssetExecutionContext, preference_pairs: pd.DataFrame, settings: DscSettings
) -> dg.Output[pd.DataFrame]:
    """rDPO / DPO set in TRL's conversational format (prompt = system + user turns; chosen/rejected = one assistant
    turn), with both reward scores so rDPO can soften each pair's label."""
    task = partition_task(context)
    records = [
        {
            "prompt_id": row.prompt_id,
            "prompt": ChainMessages(task).draft(row.prompt),
            "chosen": [assistant_message(row.chosen)],
            "rejected": [assistant_message(row.rejected)],
            "score_chosen": float(row.score_chosen),
            "score_rejected": float(row.score_rejected),
        }
        for row in preference_pairs.itertuples()
    ]
    df = preference_pairs[
        ["task", "prompt_id", "prompt", "chosen", "rejected", "score_chosen", "score_rejected"]
    ].copy()
    return _dataset_output(
        context,
        settings,
        df.reset_index(drop=True),
        "dpo_dataset",
        task,
        records,
        ["prompt_id", "score_chosen", "score_rejected", "chosen"],
    )


@stage(group="datasets", reads=("task.system_prompt",), kinds=("duckdb", "huggingface"))
def dlma_pairs(
    context: dg.AssetExecutionContext, self_reward_scores: pd.DataFrame, settings: DscSettings
) -> dg.Output[pd.DataFrame]:
    """DLMA training set: chosen = the positive-affix answer, rejected = the negative one, kept where the
    self-reward agrees (R > 0) and ranked by R; R is the DPO margin at training time. Conversational format."""
    task = partition_task(context)
    kept = self_reward_scores[self_reward_scores["self_reward"] > 0]
    records = [
        {
            "prompt_id": row.prompt_id,
            "prompt": ChainMessages(task).draft(row.prompt),
            "chosen": [assistant_message(row.positive)],
            "rejected": [assistant_message(row.negative)],
            "self_reward": float(row.self_reward),
        }
        for row in kept.itertuples()
    ]
    df = pd.DataFrame(
        {
            "task": task.name,
            "prompt_id": kept["prompt_id"],
            "prompt": kept["prompt"],
            "chosen": kept["positive"],
            "rejected": kept["negative"],
            "self_reward": kept["self_reward"],
        }
    ).reset_index(drop=True)
    context.log.info(f"{task.name}: kept {len(df)} of {len(self_reward_scores)} contrastive pairs (R > 0)")
    return _dataset_output(context, settings, df, "dlma_pairs", task, records, ["prompt_id", "self_reward", "chosen"])
