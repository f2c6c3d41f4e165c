"""From the chain to preferences: the task's external reward for every draft and revision, Metropolis-Hastings
acceptance of each revision, and the preference pairs (chosen = accepted revision, rejected = its draft)."""

import dagster as dg
import numpy as np
import pandas as pd

from dsc_assets.defs.stage import stage
from dsc_assets.defs.steps import partition_task, scoring_progress, table_output
from dsc_assets.lib.acceptance import metropolis_hastings, uniform_draw
from dsc_assets.lib.guards import GUARDS
from dsc_assets.lib.plots import reward_histogram
from dsc_assets.lib.stats import quantiles
from resources.rewards import RewardModels


@stage(group="rewards", reads=("task.scorer", "scorer_model"))
def reward_scores(
    context: dg.AssetExecutionContext, drafts: pd.DataFrame, revisions: pd.DataFrame, rewards: RewardModels
) -> dg.Output[pd.DataFrame]:
    """The task's external reward (task.yaml `scorer`) for every draft (step 0) and every revision step."""
    task = partition_task(context)
    scorer = rewards.for_task(task.spec.scorer)
    rows = pd.concat([drafts, revisions], ignore_index=True)[["task", "prompt_id", "step", "kind", "prompt", "text"]]
    before = (scorer.computed, scorer.cached)
    with scoring_progress(context, f"{task.name} reward_scores"):
        rows["reward"] = scorer.score(rows["prompt"].tolist(), rows["text"].tolist()) if len(rows) else []
    calls, hits = scorer.computed - before[0], scorer.cached - before[1]
    context.log.info(f"{task.name}: {len(rows)} answers scored, {hits} from the cache, {calls} computed")
    rows["scorer"] = task.spec.scorer.name
    low, high = scorer.score_range()
    draft_rewards = rows.loc[rows["step"] == 0, "reward"]
    final_rewards = rows.loc[rows["step"] == rows["step"].max(), "reward"] if len(rows) else draft_rewards
    context.log.info(f"{task.name}: draft reward {draft_rewards.mean():.3f}, final revision {final_rewards.mean():.3f}")
    return table_output(
        context,
        task,
        rows.sort_values(["prompt_id", "step"]).reset_index(drop=True),
        {
            "scorer": dg.MetadataValue.text(task.spec.scorer.name),
            "model_calls": dg.MetadataValue.int(calls),
            "cache_hits": dg.MetadataValue.int(hits),
            "score_range": dg.MetadataValue.text(f"[{low}, {high}]"),
            "draft_reward": dg.MetadataValue.json(quantiles(draft_rewards)),
            "revision_reward": dg.MetadataValue.json(quantiles(final_rewards)),
            "histogram": reward_histogram(draft_rewards, final_rewards, f"{task.name}: {task.spec.scorer.name}"),
        },
        ["prompt_id", "step", "reward", "text"],
    )


ACCEPTED_COLUMNS = [
    "task",
    "prompt_id",
    "prompt",
    "draft",
    "draft_reward",
    "revision",
    "revision_reward",
    "sample",
    "sample_reward",
    "sample_step",
    "accepted",
    "acceptance_probability",
]


def _chain_state(task: str, prompt_id: str, chain: pd.DataFrame, acceptance) -> dict:
    """One prompt's Metropolis-Hastings chain from its draft through its revision steps: the final state."""
    draft = chain.iloc[0]
    current, probabilities = draft, []
    for _, proposal in chain.iloc[1:].iterrows():
        decision = metropolis_hastings(
            float(current["reward"]),
            float(proposal["reward"]),
            acceptance.temperature,
            uniform_draw(acceptance.seed, task, prompt_id, int(proposal["step"])),
        )
        probabilities.append(decision.probability)
        if decision.accepted:
            current = proposal
    last = chain.iloc[-1]
    return {
        "task": task,
        "prompt_id": prompt_id,
        "prompt": draft["prompt"],
        "draft": draft["text"],
        "draft_reward": float(draft["reward"]),
        "revision": last["text"],
        "revision_reward": float(last["reward"]),
        "sample": current["text"],
        "sample_reward": float(current["reward"]),
        "sample_step": int(current["step"]),
        "accepted": bool(current["step"] > 0),
        "acceptance_probability": float(probabilities[-1]) if probabilities else 0.0,
    }


@stage(group="rewards", reads=("task.acceptance.temperature", "task.acceptance.seed"))
def accepted_samples(context: dg.AssetExecutionContext, reward_scores: pd.DataFrame) -> dg.Output[pd.DataFrame]:
    """One Metropolis-Hastings chain per prompt: starting from the draft, each revision step is accepted with
    probability min(1, exp((r_revision − r_current)/T)) (T = task.yaml acceptance.temperature; T = 0 is greedy),
    with a seeded draw per (prompt, step). ``sample`` is the chain's final state; ``accepted`` says it is a revision."""
    task = partition_task(context)
    acceptance = task.spec.acceptance
    records = []
    for prompt_id, chain in reward_scores.sort_values("step").groupby("prompt_id", sort=True):
        records.append(_chain_state(task.name, prompt_id, chain, acceptance))
    df = pd.DataFrame(records, columns=ACCEPTED_COLUMNS)
    rate = float(df["accepted"].mean()) if len(df) else 0.0
    context.log.info(f"{task.name}: acceptance rate {rate:.2f} at T={acceptance.temperature}")
    return table_output(
        context,
        task,
        df,
        {
            "acceptance_rate": dg.MetadataValue.float(round(rate, 4)),
            "acceptance_temperature": dg.MetadataValue.float(acceptance.temperature),
            "reward_before": dg.MetadataValue.json(quantiles(df["draft_reward"])),
            "reward_after": dg.MetadataValue.json(quantiles(df["sample_reward"])),
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
    df = pd.DataFrame(
        {
            "task": task.name,
            "prompt_id": accepted["prompt_id"],
            "prompt": accepted["prompt"],
            "chosen": accepted["sample"],
            "rejected": accepted["draft"],
            "score_chosen": accepted["sample_reward"],
            "score_rejected": accepted["draft_reward"],
            "margin": accepted["sample_reward"] - accepted["draft_reward"],
        }
    ).reset_index(drop=True)
    return table_output(
        context,
        task,
        df,
        {
            "mean_margin": dg.MetadataValue.float(round(float(df["margin"].mean()), 4) if len(df) else 0.0),
            "dropped_unchanged": dg.MetadataValue.int(int(unchanged.sum())),
            "dropped_no_margin": dg.MetadataValue.int(int(no_margin.sum())),
            "dropped_by_guard": dg.MetadataValue.int(int(lost.sum())),
        },
        ["prompt_id", "margin", "chosen", "rejected"],
    )
