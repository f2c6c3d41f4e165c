"""From the chain to alignment data: rewards, Metropolis-Hastings acceptance, preference pairs, DLMA pairs, and the
training sets as Hugging Face datasets in versioned folders."""

import json
from pathlib import Path

import dagster as dg
import numpy as np
import pandas as pd

from dsc_assets.acceptance import metropolis_hastings, uniform_draw
from dsc_assets.assets import ChainMessages, version_metadata, partition_task, system_message, user_message, generate_step, sampling_params
from dsc_assets.guards import GUARDS
from dsc_assets.versions import stage
from dsc_assets.plots import reward_histogram
from dsc_assets.tasks import Task
from dsc_assets.samples import data_version, generation_metadata, preview, samples_frame
from resources.hashing import content_hash
from resources.llm import LLMResource
from resources.rewards import RewardModels
from resources.settings import DscSettings


def _quantiles(values: pd.Series) -> dict:
    if values.empty:
        return {}
    q = values.quantile([0.1, 0.5, 0.9])
    return {"mean": round(float(values.mean()), 4), "p10": round(float(q[0.1]), 4),
            "p50": round(float(q[0.5]), 4), "p90": round(float(q[0.9]), 4)}


def _output(
    context: dg.AssetExecutionContext, task: Task, df: pd.DataFrame, metadata: dict, preview_columns: list[str],
    **run_context,
) -> dg.Output[pd.DataFrame]:
    return dg.Output(
        df, data_version=data_version(df),
        metadata={"num_rows": dg.MetadataValue.int(len(df)), **metadata, "preview": preview(df, preview_columns),
                  **version_metadata(context, task, **run_context)},
    )


@stage(group="rewards", reads=("task.scorer", "scorer_model"))
def reward_scores(
    context: dg.AssetExecutionContext, drafts: pd.DataFrame, revisions: pd.DataFrame, rewards: RewardModels
) -> dg.Output[pd.DataFrame]:
    """The task's external reward (task.yaml `scorer`) for every draft (step 0) and every revision step."""
    task = partition_task(context)
    scorer = rewards.for_task(task.spec.scorer)
    rows = pd.concat([drafts, revisions], ignore_index=True)[["task", "prompt_id", "step", "kind", "prompt", "text"]]
    rows["reward"] = scorer.score(rows["prompt"].tolist(), rows["text"].tolist()) if len(rows) else []
    rows["scorer"] = task.spec.scorer.name
    low, high = scorer.score_range()
    draft_rewards = rows.loc[rows["step"] == 0, "reward"]
    final_rewards = rows.loc[rows["step"] == rows["step"].max(), "reward"] if len(rows) else draft_rewards
    context.log.info(f"{task.name}: draft reward {draft_rewards.mean():.3f}, final revision {final_rewards.mean():.3f}")
    return _output(
        context, task,
        rows.sort_values(["prompt_id", "step"]).reset_index(drop=True),
        {
            "scorer": dg.MetadataValue.text(task.spec.scorer.name),
            "score_range": dg.MetadataValue.text(f"[{low}, {high}]"),
            "draft_reward": dg.MetadataValue.json(_quantiles(draft_rewards)),
            "revision_reward": dg.MetadataValue.json(_quantiles(final_rewards)),
            "histogram": reward_histogram(draft_rewards, final_rewards, f"{task.name}: {task.spec.scorer.name}"),
        },
        ["prompt_id", "step", "reward", "text"],
    )


@stage(group="rewards", reads=("task.acceptance.temperature", "task.acceptance.seed"))
def accepted_samples(context: dg.AssetExecutionContext, reward_scores: pd.DataFrame) -> dg.Output[pd.DataFrame]:
    """One Metropolis-Hastings chain per prompt: starting from the draft, each revision step is accepted with
    probability min(1, exp((r_revision − r_current)/T)) (T = task.yaml acceptance.temperature; T = 0 is greedy),
    with a seeded draw per (prompt, step). ``sample`` is the chain's final state; ``accepted`` says it is a revision."""
    task = partition_task(context)
    acceptance = task.spec.acceptance
    records = []
    for prompt_id, chain in reward_scores.sort_values("step").groupby("prompt_id", sort=True):
        draft = chain.iloc[0]
        current, probabilities = draft, []
        for _, proposal in chain.iloc[1:].iterrows():
            decision = metropolis_hastings(
                float(current["reward"]), float(proposal["reward"]), acceptance.temperature,
                uniform_draw(acceptance.seed, task.name, prompt_id, int(proposal["step"])),
            )
            probabilities.append(decision.probability)
            if decision.accepted:
                current = proposal
        last = chain.iloc[-1]
        records.append({
            "task": task.name, "prompt_id": prompt_id, "prompt": draft["prompt"],
            "draft": draft["text"], "draft_reward": float(draft["reward"]),
            "revision": last["text"], "revision_reward": float(last["reward"]),
            "sample": current["text"], "sample_reward": float(current["reward"]), "sample_step": int(current["step"]),
            "accepted": bool(current["step"] > 0),
            "acceptance_probability": float(probabilities[-1]) if probabilities else 0.0,
        })
    df = pd.DataFrame(records, columns=[
        "task", "prompt_id", "prompt", "draft", "draft_reward", "revision", "revision_reward", "sample",
        "sample_reward", "sample_step", "accepted", "acceptance_probability",
    ])
    rate = float(df["accepted"].mean()) if len(df) else 0.0
    context.log.info(f"{task.name}: acceptance rate {rate:.2f} at T={acceptance.temperature}")
    return _output(
        context, task,
        df,
        {
            "acceptance_rate": dg.MetadataValue.float(round(rate, 4)),
            "acceptance_temperature": dg.MetadataValue.float(acceptance.temperature),
            "reward_before": dg.MetadataValue.json(_quantiles(df["draft_reward"])),
            "reward_after": dg.MetadataValue.json(_quantiles(df["sample_reward"])),
            "mean_reward_gain": dg.MetadataValue.float(
                round(float((df["sample_reward"] - df["draft_reward"]).mean()), 4) if len(df) else 0.0
            ),
            "histogram": reward_histogram(df["draft_reward"], df["sample_reward"], f"{task.name}: draft vs accepted"),
        },
        ["prompt_id", "accepted", "draft_reward", "sample_reward", "sample"],
    )


@stage(group="rewards", revision=2, reads=("task.pair_guards",))
def preference_pairs(context: dg.AssetExecutionContext, accepted_samples: pd.DataFrame) -> dg.Output[pd.DataFrame]:
    """Preference pairs from the chain: chosen = accepted revision, rejected = its draft, with both rewards and the
    margin (rDPO's soft label is computed from these at training time). A pair states a preference only where the
    reward does: the revision scores strictly higher than its draft."""
    task = partition_task(context)
    accepted = accepted_samples[accepted_samples["accepted"]]
    # A revision identical to its draft (an aligned model's refusal, revised into the same refusal) states no
    # preference: DPO's margin for it is 0 by construction, so it would only dilute the batch.
    unchanged = accepted["sample"].astype(str).str.strip() == accepted["draft"].astype(str).str.strip()
    accepted = accepted[~unchanged]
    # Metropolis-Hastings keeps ties and, at T > 0, some slightly worse revisions: right for SFT's samples (the chain's
    # distribution), wrong as a DPO pair, which would teach "the revision's wording wins" where the reward saw no
    # gain (privacy's integer PII counts: 25 of 54 pairs; the reference code's pairs are "strictly improves").
    no_margin = (accepted["sample_reward"] - accepted["draft_reward"]) <= 0
    accepted = accepted[~no_margin]
    lost = pd.Series(False, index=accepted.index)
    for name in task.spec.pair_guards:  # the chosen answer fails a guard its rejected passes: no clean preference
        check = GUARDS[name]
        chosen = np.array([float(check(p, a)) for p, a in zip(accepted["prompt"], accepted["sample"])])
        rejected = np.array([float(check(p, a)) for p, a in zip(accepted["prompt"], accepted["draft"])])
        lost |= (rejected == 1.0) & (chosen == 0.0)
    accepted = accepted[~lost]
    df = pd.DataFrame({
        "task": task.name, "prompt_id": accepted["prompt_id"], "prompt": accepted["prompt"],
        "chosen": accepted["sample"], "rejected": accepted["draft"],
        "score_chosen": accepted["sample_reward"], "score_rejected": accepted["draft_reward"],
        "margin": accepted["sample_reward"] - accepted["draft_reward"],
    }).reset_index(drop=True)
    return _output(
        context, task,
        df, {"mean_margin": dg.MetadataValue.float(round(float(df["margin"].mean()), 4) if len(df) else 0.0),
             "dropped_unchanged": dg.MetadataValue.int(int(unchanged.sum())),
             "dropped_no_margin": dg.MetadataValue.int(int(no_margin.sum())),
             "dropped_by_guard": dg.MetadataValue.int(int(lost.sum()))},
        ["prompt_id", "margin", "chosen", "rejected"],
    )


@stage(group="dlma", reads=("task.system_prompt", "task.contrastive", "sampling", "generator", "methods.dlma"))
def contrastive_pairs(
    context: dg.AssetExecutionContext, raw_prompts: pd.DataFrame, llm: LLMResource, settings: DscSettings
) -> dg.Output[pd.DataFrame]:
    """DLMA: one answer to each training prompt under the task's positive affix and one under its negative affix."""
    task = partition_task(context)
    if task.spec.contrastive is None:
        raise dg.Failure(description=f"{task.folder / 'task.yaml'}: field 'contrastive' is missing "
                                     "(expected a mapping with positive_affix and negative_affix)")
    train = raw_prompts[raw_prompts["split"] == "train"]
    params = sampling_params(task, settings)
    if not settings.builds("dlma"):
        context.log.info(f"{task.name}: DLMA is not in this profile's methods; it builds nothing")
        train = train.iloc[:0]

    chain, affixes = ChainMessages(task), task.spec.contrastive
    positive = samples_frame(generate_step(
        context, llm, params, task, train, "positive", 0, lambda row: chain.contrastive(row["prompt"], affixes.positive_affix)
    ))
    negative = samples_frame(generate_step(
        context, llm, params, task, train, "negative", 0, lambda row: chain.contrastive(row["prompt"], affixes.negative_affix)
    ))
    df = positive[["task", "prompt_id", "prompt"]].assign(positive=positive["text"], negative=negative["text"].values)
    stats = generation_metadata(pd.concat([positive, negative], ignore_index=True))
    stats.pop("preview")
    return _output(context, task, df, stats, ["prompt_id", "positive", "negative"], settings=settings, llm=llm)


@stage(group="dlma", reads=("task.system_prompt", "task.contrastive", "self_reward_model"))
def self_reward_scores(
    context: dg.AssetExecutionContext, contrastive_pairs: pd.DataFrame, rewards: RewardModels
) -> dg.Output[pd.DataFrame]:
    """DLMA self-reward with the model's own log-probabilities (prompt tokens masked):
    R = [log π(a1|p+,q) − log π(a1|p−,q)] − [log π(a2|p+,q) − log π(a2|p−,q)]."""
    task = partition_task(context)
    scorer = rewards.self_reward()
    affix = lambda a: f"{task.spec.system_prompt} {a}".strip()  # noqa: E731  same system text as generation
    values = scorer.self_reward_many(
        contrastive_pairs["prompt"].tolist(), affix(task.spec.contrastive.positive_affix),
        affix(task.spec.contrastive.negative_affix), contrastive_pairs["positive"].tolist(),
        contrastive_pairs["negative"].tolist(),
    )
    df = contrastive_pairs.assign(self_reward=values).sort_values("self_reward", ascending=False).reset_index(drop=True)
    return _output(
        context, task,
        df,
        {"self_reward": dg.MetadataValue.json(_quantiles(df["self_reward"])),
         "positive_share": dg.MetadataValue.float(round(float((df["self_reward"] > 0).mean()), 4) if len(df) else 0.0)},
        ["prompt_id", "self_reward", "positive", "negative"],
    )


def save_dataset(settings: DscSettings, name: str, task: str, records: list[dict]) -> tuple[Path, str]:
    """Save records as a Hugging Face dataset under ``<artifacts>/datasets/<name>/<task>/<content hash>``."""
    from datasets import Dataset

    digest = content_hash(records, length=16)
    path = settings.artifact_path("datasets", name, task, digest)
    if not (path / "dataset_info.json").exists():  # content-addressed: an existing folder already holds this data
        partial = path.with_name(digest + ".partial")
        Dataset.from_list(records).save_to_disk(str(partial))
        partial.rename(path)
    return path, digest


def _dataset_output(
    context: dg.AssetExecutionContext, settings: DscSettings, df: pd.DataFrame, name: str, task: Task,
    records: list[dict], columns: list[str],
) -> dg.Output:
    path, digest = save_dataset(settings, name, task.name, records)
    return _output(
        context, task,
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
    accepted = accepted_samples[accepted_samples["accepted"]]
    # A revision identical to its draft (an aligned model's refusal, revised into the same refusal) states no
    # preference: DPO's margin for it is 0 by construction, so it would only dilute the batch.
    unchanged = accepted["sample"].astype(str).str.strip() == accepted["draft"].astype(str).str.strip()
    accepted = accepted[~unchanged]
    records = [
        {"prompt_id": row.prompt_id, "messages": [system_message(task), user_message(row.prompt), {"role": "assistant", "content": row.sample}]}
        for row in accepted.itertuples()
    ]
    df = pd.DataFrame({"task": task.name, "prompt_id": [r["prompt_id"] for r in records],
                       "messages": [json.dumps(r["messages"], ensure_ascii=False) for r in records]})
    return _dataset_output(context, settings, df, "sft_dataset", task, records, ["prompt_id", "messages"])


@stage(group="datasets", reads=("task.system_prompt",), kinds=("duckdb", "huggingface"))
def dpo_dataset(
    context: dg.AssetExecutionContext, preference_pairs: pd.DataFrame, settings: DscSettings
) -> dg.Output[pd.DataFrame]:
    """rDPO / DPO set in TRL's conversational format (prompt = system + user turns; chosen/rejected = one assistant
    turn), with both reward scores so rDPO can soften each pair's label."""
    task = partition_task(context)
    records = [
        {"prompt_id": row.prompt_id, "prompt": [system_message(task), user_message(row.prompt)],
         "chosen": [{"role": "assistant", "content": row.chosen}],
         "rejected": [{"role": "assistant", "content": row.rejected}],
         "score_chosen": float(row.score_chosen), "score_rejected": float(row.score_rejected)}
        for row in preference_pairs.itertuples()
    ]
    df = preference_pairs[["task", "prompt_id", "prompt", "chosen", "rejected", "score_chosen", "score_rejected"]].copy()
    return _dataset_output(context, settings, df.reset_index(drop=True), "dpo_dataset", task, records,
                           ["prompt_id", "score_chosen", "score_rejected", "chosen"])


@stage(group="datasets", reads=("task.system_prompt",), kinds=("duckdb", "huggingface"))
def dlma_pairs(
    context: dg.AssetExecutionContext, self_reward_scores: pd.DataFrame, settings: DscSettings
) -> dg.Output[pd.DataFrame]:
    """DLMA training set: chosen = the positive-affix answer, rejected = the negative one, kept where the
    self-reward agrees (R > 0) and ranked by R; R is the DPO margin at training time. Conversational format."""
    task = partition_task(context)
    kept = self_reward_scores[self_reward_scores["self_reward"] > 0]
    records = [
        {"prompt_id": row.prompt_id, "prompt": [system_message(task), user_message(row.prompt)],
         "chosen": [{"role": "assistant", "content": row.positive}],
         "rejected": [{"role": "assistant", "content": row.negative}], "self_reward": float(row.self_reward)}
        for row in kept.itertuples()
    ]
    df = pd.DataFrame({
        "task": task.name, "prompt_id": kept["prompt_id"], "prompt": kept["prompt"],
        "chosen": kept["positive"], "rejected": kept["negative"], "self_reward": kept["self_reward"],
    }).reset_index(drop=True)
    context.log.info(f"{task.name}: kept {len(df)} of {len(self_reward_scores)} contrastive pairs (R > 0)")
    return _dataset_output(context, settings, df, "dlma_pairs", task, records, ["prompt_id", "self_reward", "chosen"])
