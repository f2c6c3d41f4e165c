"""The quality suite of every data asset's table: what the blocking checks run (defs/*/checks.py) and what
`dsc gate` reruns on the stored tables (build/gate.py). The suites' metrics live in quality.py."""

import json
from typing import Collection

import pandas as pd

from dsc_assets.lib.quality import (
    Outcome,
    QualityReport,
    check_rate,
    count_outcome,
    dataset_outcomes,
    instruction_lines,
    schema_outcome,
    validate_table,
)
from dsc_assets.lib.tasks import Task
from resources.rewards import RewardModels

# Every data asset, in dependency order; the checkpoints and the evaluation are judged by their own numbers.
CHECKED_ASSETS = [
    "raw_prompts",
    "drafts",
    "critiques",
    "revisions",
    "contrastive_pairs",
    "self_reward_scores",
    "dlma_pairs",
    "reward_scores",
    "accepted_samples",
    "preference_pairs",
    "sft_dataset",
    "placebo_dataset",
    "dpo_dataset",
    "almost_responses",
    "synthetic_comparisons",
    "rmsp_demonstrations",
]


CHAIN_TEXTS = ("drafts", "critiques", "revisions", "contrastive_pairs")


def _chain_text_report(asset: str, df: pd.DataFrame, rules, spec) -> QualityReport:
    """The generated texts of the chain: not empty, no loops, and no echo of what they answer or revise."""
    if asset == "drafts":
        return validate_table(df, rules, asset, echo_of={"text": ("prompt",)}, unique_columns=("prompt_id",))
    if asset == "critiques":
        return validate_table(
            df,
            rules,
            asset,
            echo_of={"text": ("prompt", "source")},
            template_lines=instruction_lines(spec.critique_template),
        )
    if asset == "revisions":
        return validate_table(
            df,
            rules,
            asset,
            echo_of={"text": ("prompt", "critique")},
            copy_of={"text": ("source",)},
            template_lines=instruction_lines(spec.critique_template, spec.revision_template),
        )
    if asset == "contrastive_pairs":
        return validate_table(
            df,
            rules,
            asset,
            text_columns=("positive", "negative"),
            echo_of={"positive": ("prompt",), "negative": ("prompt",)},
        )
    raise KeyError(f"no chain suite for {asset}")


def report_for(
    asset: str,
    df: pd.DataFrame,
    task: Task,
    rewards: RewardModels | None = None,
    overrides: dict | None = None,
    methods: Collection[str] | None = None,
) -> QualityReport:
    """The quality suite of one asset's table for one task (``overrides``: the profile's quality_overrides;
    ``methods``: the profile's methods, None for all: a branch that is off must have no rows)."""
    for method, branch in METHOD_BRANCHES.items():
        if asset in branch and methods is not None and method not in methods:
            return QualityReport(
                asset, [Outcome(f"no rows: {method} is not in the profile's methods", None, df.empty, len(df))]
            )
    spec, overrides = task.spec, dict(overrides or {})
    band = (
        overrides.pop("min_acceptance_rate", spec.acceptance.min_rate),
        overrides.pop("max_acceptance_rate", spec.acceptance.max_rate),
    )
    rules = spec.quality.model_copy(update=overrides)
    if asset in CHAIN_TEXTS:
        return _chain_text_report(asset, df, rules, spec)
    if asset == "reward_scores":
        low, high = rewards.for_task(spec.scorer).score_range()
        return validate_table(df, rules, asset, text_columns=(), ranges={"reward": (low, high)})
    if asset == "accepted_samples":
        report = validate_table(df, rules, asset, text_columns=(), unique_columns=("prompt_id",))
        rate = float(df["accepted"].mean()) if len(df) else 0.0
        report.outcomes.append(check_rate(rate, band[0], band[1], "acceptance_rate"))
        return report
    if asset == "preference_pairs":
        return validate_table(df, rules, asset, text_columns=("chosen",), copy_of={"chosen": ("rejected",)})
    if asset in ALMOST_ASSETS:
        return _almost_report(asset, df, task)
    if asset in DATA_SCHEMAS:
        return _structural_report(asset, df, rules)
    raise KeyError(f"no quality suite for {asset}")


# The columns each table must hold for the assets (and the trainer) that read it.
DATA_SCHEMAS: dict[str, tuple[str, ...]] = {
    "raw_prompts": ("task", "prompt_id", "prompt", "split"),
    "self_reward_scores": ("task", "prompt_id", "prompt", "positive", "negative", "self_reward"),
    "dlma_pairs": ("task", "prompt_id", "prompt", "chosen", "rejected", "self_reward", "dataset_path"),
    "sft_dataset": ("task", "prompt_id", "messages", "dataset_path"),
    "placebo_dataset": ("task", "prompt_id", "messages", "dataset_path"),
    "dpo_dataset": (
        "task",
        "prompt_id",
        "prompt",
        "chosen",
        "rejected",
        "score_chosen",
        "score_rejected",
        "dataset_path",
    ),
    "almost_responses": ("task", "prompt_id", "prompt", "config", "text", "finish_reason"),
    "synthetic_comparisons": ("task", "prompt_id", "rule", "chosen", "rejected", "fold", "kept", "drop_reason"),
    "rmsp_demonstrations": ("task", "prompt_id", "prompt", "response", "rm_score", "candidates", "candidate_scores"),
}
INF = float("inf")


def _structural_report(asset: str, df: pd.DataFrame, rules) -> QualityReport:
    """Schema, row counts, split sizes, value ranges and (for the training sets) the dataset folder itself."""
    schema = schema_outcome(df, DATA_SCHEMAS[asset])
    if not schema.success:
        return QualityReport(asset, [schema])
    if asset == "raw_prompts":
        report = validate_table(
            df,
            rules,
            asset,
            text_columns=(),
            unique_columns=("prompt_id",),
            ranges={},
            value_sets={"split": {"train", "dev", "test"}},
        )
        report.outcomes.append(count_outcome(int((df["split"] == "train").sum()), max(1, rules.min_rows), "train_rows"))
        blank = df[df["prompt"].fillna("").astype(str).str.strip() == ""]
        report.outcomes.append(
            Outcome(
                "expect_prompts_to_not_be_blank",
                "prompt",
                blank.empty,
                f"{len(blank)} blank",
                len(blank),
                [{"prompt_id": i, "value": ""} for i in blank["prompt_id"][:3]],
            )
        )
    elif asset == "self_reward_scores":
        report = validate_table(
            df, rules, asset, text_columns=(), unique_columns=("prompt_id",), ranges={"self_reward": (-INF, INF)}
        )
    elif asset == "dlma_pairs":
        report = validate_table(
            df, rules, asset, text_columns=(), unique_columns=("prompt_id",), ranges={"self_reward": (0.0, INF)}
        )
    elif asset in ("sft_dataset", "placebo_dataset"):
        report = validate_table(df, rules, asset, text_columns=(), unique_columns=("prompt_id",))
        report.outcomes.append(_messages_outcome(df))
    else:  # dpo_dataset
        report = validate_table(
            df,
            rules,
            asset,
            text_columns=(),
            unique_columns=("prompt_id",),
            ranges={"score_chosen": (-INF, INF), "score_rejected": (-INF, INF)},
        )
    report.outcomes.insert(0, schema)
    report.outcomes += dataset_outcomes(df)
    return report


ALMOST_ASSETS = ("almost_responses", "synthetic_comparisons", "rmsp_demonstrations")
# The checked tables of the branches a profile's `methods` can switch off.
METHOD_BRANCHES = {
    "dlma": ("contrastive_pairs", "self_reward_scores", "dlma_pairs"),
    "almost": ALMOST_ASSETS,
    "placebo": ("placebo_dataset",),
}


def _almost_responses_outcomes(df: pd.DataFrame) -> list[Outcome]:
    """Every configuration answered every prompt, and the teacher's answers say something."""
    outcomes = []
    configs = df.groupby("prompt_id")["config"].nunique()
    incomplete = configs[configs < 4]
    outcomes.append(
        Outcome(
            "every prompt answered by configurations A-D",
            "config",
            incomplete.empty,
            f"{len(incomplete)} of {len(configs)} prompts incomplete",
            len(incomplete),
            [{"prompt_id": i, "value": int(n)} for i, n in incomplete.head(3).items()],
        )
    )
    teacher = df[df["config"].isin(["A", "B"])]
    empty = teacher[teacher["text"].fillna("").astype(str).str.strip() == ""]
    outcomes.append(
        Outcome(
            "teacher answers (A, B) not empty",
            "text",
            empty.empty,
            f"{len(empty)} empty",
            len(empty),
            [{"prompt_id": i, "value": c} for i, c in zip(empty["prompt_id"][:3], empty["config"][:3])],
        )
    )
    outcomes.append(count_outcome(int(df["prompt_id"].nunique()), 1, "prompts"))
    return outcomes


def _almost_report(asset: str, df: pd.DataFrame, task: Task) -> QualityReport:
    """ALMoST's tables: the student's configurations answer badly on purpose, so the text rules of the dSC chain do
    not apply; what must hold is structure: every configuration per prompt and teacher answers that say something,
    comparisons that can train a reward model (kept train-fold pairs whose texts differ), best-of-N that kept the
    best. A task without an ``almost:`` block must have no rows."""
    schema = schema_outcome(df, DATA_SCHEMAS[asset])
    if not schema.success:
        return QualityReport(asset, [schema])
    outcomes = [schema]
    if task.spec.almost is None:
        outcomes.append(Outcome("no rows without an almost: block", None, df.empty, len(df)))
        return QualityReport(asset, outcomes)
    if asset == "almost_responses":
        outcomes += _almost_responses_outcomes(df)
    elif asset == "synthetic_comparisons":
        kept = df[df["kept"].astype(bool)]
        outcomes.append(count_outcome(int((kept["fold"] == "train").sum()), 1, "kept train-fold comparisons"))
        same = kept[kept["chosen"].astype(str).str.strip() == kept["rejected"].astype(str).str.strip()]
        outcomes.append(Outcome("kept comparisons differ", "chosen", same.empty, f"{len(same)} identical", len(same)))
    else:  # rmsp_demonstrations
        not_best = [
            row.prompt_id
            for row in df.itertuples()
            if row.rm_score < max(json.loads(row.candidate_scores), default=row.rm_score)
        ]
        outcomes.append(
            Outcome(
                "kept the best-scored candidate",
                "rm_score",
                not not_best,
                f"{len(not_best)} not best",
                len(not_best),
                [{"prompt_id": i, "value": ""} for i in not_best[:3]],
            )
        )
        empty = df[df["response"].fillna("").astype(str).str.strip() == ""]
        outcomes.append(Outcome("demonstrations not empty", "response", empty.empty, f"{len(empty)} empty", len(empty)))
    return QualityReport(asset, outcomes)


def _messages_outcome(df: pd.DataFrame) -> Outcome:
    """Each SFT row is a system, user, assistant conversation with a non-empty answer."""
    bad = []
    for prompt_id, raw in zip(df["prompt_id"], df["messages"]):
        try:
            messages = json.loads(raw) if isinstance(raw, str) else list(raw)
            ok = [m["role"] for m in messages] == ["system", "user", "assistant"] and str(
                messages[-1]["content"]
            ).strip()
        except (ValueError, TypeError, KeyError, IndexError):
            ok = False
        if not ok:
            bad.append({"prompt_id": prompt_id, "value": raw})
    return Outcome(
        "expect_messages_to_be_system_user_assistant",
        "messages",
        not bad,
        f"{len(bad)} of {len(df)} rows",
        len(bad),
        bad[:3],
    )
