"""ALMoST (Kim et al., 2023): alignment from synthetic comparisons, with no judge and no human label.

The data says "a larger, better-prompted model answers better than a smaller, worse-prompted one": answers from
four ranked configurations become comparisons, a heuristic filter drops implausible ones, a reward model learns the
ranking, picks the best of N samples per prompt (reward-model-guided self-play, single turn), and the student is
distilled on those demonstrations (SFT) and then trained against the reward model (RL). Needs an ``almost:`` block
in the task's ``task.yaml``; a task without one builds empty ALMoST tables. The four configurations (A, the
teacher best prompted, to D, the student plainly prompted) and the comparison rules are in lib/almost.py.
"""

import json

import dagster as dg
import numpy as np
import pandas as pd

from dsc_assets.defs.stage import stage, version_metadata
from dsc_assets.defs.steps import generation_progress, partition_task, sampling_params, table_output, training_progress
from dsc_assets.defs.training.checkpoint import checkpoint_output
from dsc_assets.lib.almost import COMPARISON_COLUMNS, CONFIGS, RESPONSE_COLUMNS, config_messages, synthesize_comparisons
from dsc_assets.lib.chat import ChainMessages, assistant_message
from dsc_assets.lib.samples import data_version
from dsc_assets.lib.stats import pair_accuracy
from resources.checkpoints import train_or_reuse
from resources.hashing import content_hash
from resources.llm import LlamaCppLLM, LLMResource
from resources.reward_model import cached_scores, reward_scorer
from resources.settings import DscSettings
from resources.train_result import NothingToTrain
from resources.trainer import LoRATrainer


def _train_prompts(raw_prompts: pd.DataFrame) -> pd.DataFrame:
    return raw_prompts[raw_prompts["split"] == "train"]


@stage(
    group="almost",
    reads=(
        "task.system_prompt",
        "task.contrastive",
        "task.almost.demonstrations",
        "sampling",
        "generator",
        "student",
        "methods.almost",
    ),
)
def almost_responses(
    context: dg.AssetExecutionContext,
    raw_prompts: pd.DataFrame,
    llm: LLMResource,
    student: LlamaCppLLM,
    settings: DscSettings,
) -> dg.Output[pd.DataFrame]:
    """One answer per train prompt from each of the four ranked configurations (A > B > C > D): teacher or student,
    with or without the positive affix and the task's demonstrations. B asks exactly what a dSC draft asks, so it
    comes from the cache when the drafts exist."""
    task = partition_task(context)
    train = _train_prompts(raw_prompts)
    params = sampling_params(task, settings)
    rows, hits = [], 0
    if not settings.builds("almost"):
        context.log.info(f"{task.name}: ALMoST is not in this profile's methods; it builds nothing")
    elif task.spec.almost is not None:
        for config, (role, _) in CONFIGS.items():
            model = llm if role == "teacher" else student
            requests = [config_messages(task, config, prompt) for prompt in train["prompt"]]
            progress = generation_progress(context, f"{task.name} ALMoST {config} ({role})", model, requests, [params])
            for (_, row), generation in zip(train.iterrows(), model.chat_many(requests, params, on_generated=progress)):
                hits += generation.cached
                rows.append(
                    {
                        "task": task.name,
                        "prompt_id": row["prompt_id"],
                        "prompt": row["prompt"],
                        "config": config,
                        "model_role": role,
                        "text": generation.text,
                        "finish_reason": generation.finish_reason,
                        "completion_tokens": generation.completion_tokens,
                    }
                )
            context.log.info(f"{task.name} ALMoST configuration {config} ({role}): {len(requests)} answers")
    else:
        context.log.warning(f"{task.name}: task.yaml has no 'almost:' block; ALMoST builds nothing for it")
    df = pd.DataFrame(rows, columns=RESPONSE_COLUMNS)
    words = df.assign(words=df["text"].str.split().str.len()).groupby("config")["words"].mean().round(1).to_dict()
    metadata = {
        "mean_words_by_config": dg.MetadataValue.json(words),
        "model_calls": dg.MetadataValue.int(len(df) - hits),
    }
    metadata["cache_hits"] = dg.MetadataValue.int(hits)
    return table_output(context, task, df, metadata, ["prompt_id", "config", "text"])


@stage(
    group="almost",
    reads=("task.almost.rules", "task.almost.heldout_fraction", "task.almost.drop_truncated", "task.split"),
)
def synthetic_comparisons(context: dg.AssetExecutionContext, almost_responses: pd.DataFrame) -> dg.Output[pd.DataFrame]:
    """Comparisons implied by the rules (prompt: A>B, C>D; size: A>C, B>D; both: A>D; never B vs C), each naming
    its rule, with the heuristic filter's verdict (``kept``, ``drop_reason``) and a prompt-disjoint fold."""
    task = partition_task(context)
    almost = task.spec.almost
    df = (
        synthesize_comparisons(almost_responses, almost, task.spec.split.seed)
        if almost is not None and len(almost_responses)
        else pd.DataFrame(columns=COMPARISON_COLUMNS)
    )
    kept = df[df["kept"].astype(bool)] if len(df) else df
    metadata = {
        "kept": dg.MetadataValue.int(len(kept)),
        "dropped_by_reason": dg.MetadataValue.json(
            df.loc[~df["kept"].astype(bool), "drop_reason"].value_counts().to_dict() if len(df) else {}
        ),
        "kept_by_rule_and_fold": dg.MetadataValue.json(
            {f"{r}/{f}": int(n) for (r, f), n in kept.groupby(["rule", "fold"]).size().items()} if len(kept) else {}
        ),
    }
    return table_output(
        context, task, df, metadata, ["prompt_id", "rule", "chosen_config", "kept", "drop_reason", "chosen"]
    )


def _rm_prompt(task, prompt: str) -> list[dict]:
    """What the reward model sees before an answer: the task's plain request, whatever configuration answered."""
    return ChainMessages(task).draft(prompt)


def _rm_scores(cache_path: str, model: pd.Series, prompts: list[list[dict]], answers: list[str]) -> np.ndarray:
    return np.asarray(cached_scores(cache_path, model["version"], model["model_dir"], prompts, answers))


REWARD_MODEL_COLUMNS = [
    "task",
    "status",
    "version",
    "train_pairs",
    "heldout_pairs",
    "heldout_accuracy",
    "longer_wins_accuracy",
    "accuracy_by_rule",
    "steps",
    "first_loss",
    "last_loss",
    "model_dir",
]


def _folds(comparisons: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The kept comparisons of the train fold and of the held-out fold."""
    kept = comparisons[comparisons["kept"].astype(bool)] if len(comparisons) else comparisons
    return (kept[kept["fold"] == "train"], kept[kept["fold"] == "heldout"]) if len(kept) else (kept, kept)


def _comparison_records(task, train: pd.DataFrame) -> list[dict]:
    """The reward model's training pairs in TRL's conversational format."""
    return [
        {
            "prompt": _rm_prompt(task, r.prompt),
            "chosen": [assistant_message(r.chosen)],
            "rejected": [assistant_message(r.rejected)],
        }
        for r in train.itertuples()
    ]


def _heldout_accuracy(task, heldout: pd.DataFrame, model: pd.Series, cache_path: str) -> tuple[float, float, dict]:
    """The reward model's pair accuracy on the held-out fold, the "longer answer wins" baseline's, and per rule."""
    by_rule, accuracy, longer = {}, float("nan"), float("nan")
    if len(heldout):
        prompts = [_rm_prompt(task, p) for p in heldout["prompt"]]
        chosen = _rm_scores(cache_path, model, prompts, heldout["chosen"].tolist())
        rejected = _rm_scores(cache_path, model, prompts, heldout["rejected"].tolist())
        accuracy = pair_accuracy(chosen, rejected)
        longer = pair_accuracy(
            heldout["chosen"].str.split().str.len().to_numpy(), heldout["rejected"].str.split().str.len().to_numpy()
        )
        for rule in heldout["rule"].unique():
            mask = (heldout["rule"] == rule).to_numpy()
            by_rule[rule] = {
                "pairs": int(mask.sum()),
                "accuracy": round(pair_accuracy(chosen[mask], rejected[mask]), 4),
            }
    return accuracy, longer, by_rule


def _skipped_reward_model(context, task, row: dict, reason: str) -> dg.Output[pd.DataFrame]:
    context.log.warning(f"{task.name}: reward_model skipped: {reason}")
    status = f"skipped: {reason}"
    df = pd.DataFrame([{**row, "status": status, "model_dir": ""}], columns=REWARD_MODEL_COLUMNS)
    metadata = {"status": dg.MetadataValue.text(status), **version_metadata(context, task)}
    return dg.Output(df, data_version=data_version(df), metadata=metadata)


@stage(group="almost", reads=("task.system_prompt", "trainer.reward_model"), kinds=("pytorch", "duckdb"))
def reward_model(
    context: dg.AssetExecutionContext,
    synthetic_comparisons: pd.DataFrame,
    trainer: LoRATrainer,
    settings: DscSettings,
    llm: LLMResource,
) -> dg.Output[pd.DataFrame]:
    """A scalar head on the student with LoRA, trained with TRL's RewardTrainer (−log σ(r_chosen − r_rejected)) on
    the kept train-fold comparisons; accuracy on the held-out fold, overall and per rule, next to the "longer answer
    wins" baseline."""
    from datasets import Dataset

    task = partition_task(context)
    train, heldout = _folds(synthetic_comparisons)
    records = _comparison_records(task, train)
    data_hash = content_hash(records, length=16)
    version = content_hash("reward_model", data_hash, trainer.settings_identity("reward_model"), length=16)
    row = {"task": task.name, "version": version, "train_pairs": len(train), "heldout_pairs": len(heldout)}
    folder = settings.artifact_path("checkpoints", "reward_model", task.name, version)
    try:
        if not records:
            raise NothingToTrain("no kept train-fold comparisons to train a reward model on")
        with training_progress(context, f"{task.name} reward model"):  # step, loss, minutes left in the run log
            summary = train_or_reuse(
                folder,
                lambda: trainer.train_reward_model(Dataset.from_list(records), str(folder)),
                lambda result: {"model_dir": result.merged_dir},
            ).summary
    except NothingToTrain as reason:  # ALMoST stops here for this task; the gate names this step and why
        return _skipped_reward_model(context, task, row, str(reason))
    row.update(
        status="trained",
        steps=summary["steps"],
        model_dir=summary["model_dir"],
        first_loss=summary["losses"][0] if summary["losses"] else np.nan,
        last_loss=summary["losses"][-1] if summary["losses"] else np.nan,
    )
    accuracy, longer, by_rule = _heldout_accuracy(task, heldout, pd.Series(row), llm.cache_path)
    row.update(heldout_accuracy=accuracy, longer_wins_accuracy=longer, accuracy_by_rule=json.dumps(by_rule))
    df = pd.DataFrame([row], columns=REWARD_MODEL_COLUMNS)
    context.log.info(
        f"{task.name} reward model: held-out accuracy {accuracy:.3f} (longer wins: {longer:.3f}) {by_rule}"
    )
    return dg.Output(
        df,
        data_version=dg.DataVersion(version),
        metadata={
            "path": dg.MetadataValue.path(str(folder)),
            "heldout_accuracy": dg.MetadataValue.float(accuracy),
            "longer_wins_accuracy": dg.MetadataValue.float(longer),
            "accuracy_by_rule": dg.MetadataValue.json(by_rule),
            "train_pairs": dg.MetadataValue.int(len(train)),
            "heldout_pairs": dg.MetadataValue.int(len(heldout)),
            **version_metadata(context, task),
        },
    )


@stage(group="almost", reads=("task.system_prompt",))
def reward_model_agreement(
    context: dg.AssetExecutionContext,
    reward_model: pd.DataFrame,
    preference_pairs: pd.DataFrame,
    llm: LLMResource,
) -> dg.Output[pd.DataFrame]:
    """Diagnostic only (the external reward never enters ALMoST's data): how often the reward model prefers the
    answer that the task's external reward preferred in the dSC preference pairs."""
    task = partition_task(context)
    model = reward_model.iloc[0]
    agreement, pairs = float("nan"), 0
    if model["status"] == "trained" and len(preference_pairs):
        prompts = [_rm_prompt(task, p) for p in preference_pairs["prompt"]]
        chosen = _rm_scores(llm.cache_path, model, prompts, preference_pairs["chosen"].tolist())
        rejected = _rm_scores(llm.cache_path, model, prompts, preference_pairs["rejected"].tolist())
        agreement, pairs = pair_accuracy(chosen, rejected), len(preference_pairs)
    df = pd.DataFrame([{"task": task.name, "pairs": pairs, "agreement_with_external_reward": agreement}])
    return dg.Output(
        df,
        data_version=data_version(df),
        metadata={
            "agreement_with_external_reward": dg.MetadataValue.float(agreement),
            "pairs": dg.MetadataValue.int(pairs),
            **version_metadata(context, task),
        },
    )


@stage(
    group="almost",
    reads=(
        "task.system_prompt",
        "task.contrastive",
        "task.almost.demonstrations",
        "task.almost.best_of_n",
        "sampling",
        "generator",
    ),
)
def rmsp_demonstrations(
    context: dg.AssetExecutionContext,
    raw_prompts: pd.DataFrame,
    reward_model: pd.DataFrame,
    llm: LLMResource,
    settings: DscSettings,
) -> dg.Output[pd.DataFrame]:
    """Reward-model-guided self-play, single turn: ``best_of_n`` samples per train prompt from the best configuration
    (A), each scored by the reward model; the best-scored one is kept as the demonstration."""
    task = partition_task(context)
    model = reward_model.iloc[0]
    columns = ["task", "prompt_id", "prompt", "response", "rm_score", "candidates", "candidate_scores"]
    rows = []
    if task.spec.almost is not None and model["status"] == "trained":
        train = _train_prompts(raw_prompts)
        params = sampling_params(task, settings)
        requests = [config_messages(task, "A", prompt) for prompt in train["prompt"]]
        n = task.spec.almost.best_of_n
        seeded = [params.model_copy(update={"seed": params.seed + k}) for k in range(n)]
        progress = generation_progress(context, f"{task.name} ALMoST best-of-{n}", llm, requests, seeded)
        candidates = [[g.text for g in llm.chat_many(requests, p, on_generated=progress)] for p in seeded]  # k=0: A's
        for i, (_, row) in enumerate(train.iterrows()):
            texts = [candidates[k][i] for k in range(len(candidates))]
            scores = _rm_scores(llm.cache_path, model, [_rm_prompt(task, row["prompt"])] * len(texts), texts).tolist()
            best = int(np.argmax(scores))
            rows.append(
                {
                    "task": task.name,
                    "prompt_id": row["prompt_id"],
                    "prompt": row["prompt"],
                    "response": texts[best],
                    "rm_score": scores[best],
                    "candidates": json.dumps(texts),
                    "candidate_scores": json.dumps(scores),
                }
            )
    df = pd.DataFrame(rows, columns=columns)
    gain = (
        (df["rm_score"] - df["candidate_scores"].map(lambda s: float(np.mean(json.loads(s))))).mean()
        if len(df)
        else 0.0
    )
    return table_output(
        context,
        task,
        df,
        {"mean_gain_over_candidates": dg.MetadataValue.float(round(float(gain), 4))},
        ["prompt_id", "rm_score", "response"],
    )


@stage(
    name="almost_sft_checkpoint",
    group="almost",
    reads=("task.system_prompt", "trainer.almost_sft", "training_seeds"),
    kinds=("pytorch", "duckdb"),
)
def almost_sft_checkpoint(
    context: dg.AssetExecutionContext,
    rmsp_demonstrations: pd.DataFrame,
    trainer: LoRATrainer,
    settings: DscSettings,
) -> dg.Output[pd.DataFrame]:
    """ALMoST SFT: LoRA supervised fine-tuning of the student on the reward-model-chosen demonstrations."""
    task = partition_task(context)
    records = [
        {"messages": ChainMessages(task).answered(r.prompt, r.response)} for r in rmsp_demonstrations.itertuples()
    ]
    return checkpoint_output(context, trainer, settings, "almost_sft", records, train=LoRATrainer.train_sft)


@stage(
    name="almost_rl_checkpoint",
    group="almost",
    reads=("task.system_prompt", "trainer.almost_rl"),
    kinds=("pytorch", "duckdb"),
)
def almost_rl_checkpoint(
    context: dg.AssetExecutionContext,
    almost_sft_checkpoint: pd.DataFrame,
    reward_model: pd.DataFrame,
    raw_prompts: pd.DataFrame,
    trainer: LoRATrainer,
    settings: DscSettings,
) -> dg.Output[pd.DataFrame]:
    """ALMoST RL from synthetic feedback: RLOO (TRL 1.16 has no PPO; RLOO is the closest policy-gradient method with
    a KL term, here ``rl_beta`` towards the SFT policy) from the SFT checkpoint, the reward model as the reward."""
    from datasets import Dataset

    task = partition_task(context)
    sft, model = almost_sft_checkpoint.iloc[0], reward_model.iloc[0]
    usable = sft["status"] == "trained" and model["status"] == "trained"
    prompts = [{"prompt": _rm_prompt(task, p)} for p in _train_prompts(raw_prompts)["prompt"]] if usable else []
    records = [{**p, "policy": sft["merged_dir"], "reward_model": model["version"]} for p in prompts]

    def train_rl(trainer: LoRATrainer, dataset, output_dir: str):
        scorer = reward_scorer(model["model_dir"])

        def reward_model_score(prompts, completions, **_):
            return scorer.score(prompts, [c[-1]["content"] if isinstance(c, list) else str(c) for c in completions])

        return trainer.train_rl(Dataset.from_list(prompts), sft["merged_dir"], reward_model_score, output_dir)

    # trained once, from the SFT checkpoint's first seed: seeding RL means seeding the pair (not built)
    return checkpoint_output(context, trainer, settings, "almost_rl", records, train=train_rl, seeds=1)
