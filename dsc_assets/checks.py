"""Blocking data-quality checks: a failed suite stops everything downstream in the same run (the bad table is
still written, for inspection). Every data asset has one; the suites' metrics live in quality.py.

`dsc gate` reruns the same suites (``report_for``) on the stored tables and turns them into one verdict per asset
that covers its whole upstream (``gate_verdicts``): OK, FAILED, BLOCKED, STALE or MISSING."""

import json
import warnings
from dataclasses import dataclass, field
from typing import Callable, Collection

import dagster as dg
import pandas as pd

from dsc_assets import almost, assets, preferences
from dsc_assets.assets import partition_task
from dsc_assets.partitions import task_partitions
from dsc_assets.quality import (
    Outcome, QualityReport, check_rate, check_result, count_outcome, dataset_outcomes, instruction_lines, schema_outcome,
    validate_table,
)
from dsc_assets.tasks import Task
from resources.llm import LlamaCppLLM, LLMResource
from resources.models import resolve_model
from resources.rewards import RewardModels
from resources.settings import DscSettings


def report_for(
    asset: str, df: pd.DataFrame, task: Task, rewards: RewardModels | None = None, overrides: dict | None = None,
    methods: Collection[str] | None = None,
) -> QualityReport:
    """The quality suite of one asset's table for one task (``overrides``: the profile's quality_overrides;
    ``methods``: the profile's methods, None for all: a branch that is off must have no rows)."""
    for method, branch in METHOD_BRANCHES.items():
        if asset in branch and methods is not None and method not in methods:
            return QualityReport(asset, [Outcome(f"no rows: {method} is not in the profile's methods", None, df.empty,
                                                 len(df))])
    spec, overrides = task.spec, dict(overrides or {})
    band = (overrides.pop("min_acceptance_rate", spec.acceptance.min_rate),
            overrides.pop("max_acceptance_rate", spec.acceptance.max_rate))
    rules = spec.quality.model_copy(update=overrides)
    if asset == "drafts":
        return validate_table(df, rules, asset, echo_of={"text": ("prompt",)}, unique_columns=("prompt_id",))
    if asset == "critiques":
        return validate_table(df, rules, asset, echo_of={"text": ("prompt", "source")},
                              template_lines=instruction_lines(spec.critique_template))
    if asset == "revisions":
        return validate_table(df, rules, asset, echo_of={"text": ("prompt", "critique")}, copy_of={"text": ("source",)},
                              template_lines=instruction_lines(spec.critique_template, spec.revision_template))
    if asset == "contrastive_pairs":
        return validate_table(df, rules, asset, text_columns=("positive", "negative"),
                              echo_of={"positive": ("prompt",), "negative": ("prompt",)})
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
    "dpo_dataset": ("task", "prompt_id", "prompt", "chosen", "rejected", "score_chosen", "score_rejected", "dataset_path"),
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
        report = validate_table(df, rules, asset, text_columns=(), unique_columns=("prompt_id",),
                                ranges={}, value_sets={"split": {"train", "test"}})
        report.outcomes.append(count_outcome(int((df["split"] == "train").sum()), max(1, rules.min_rows), "train_rows"))
        blank = df[df["prompt"].fillna("").astype(str).str.strip() == ""]
        report.outcomes.append(Outcome("expect_prompts_to_not_be_blank", "prompt", blank.empty, f"{len(blank)} blank",
                                       len(blank), [{"prompt_id": i, "value": ""} for i in blank["prompt_id"][:3]]))
    elif asset == "self_reward_scores":
        report = validate_table(df, rules, asset, text_columns=(), unique_columns=("prompt_id",),
                                ranges={"self_reward": (-INF, INF)})
    elif asset == "dlma_pairs":
        report = validate_table(df, rules, asset, text_columns=(), unique_columns=("prompt_id",),
                                ranges={"self_reward": (0.0, INF)})
    elif asset == "sft_dataset":
        report = validate_table(df, rules, asset, text_columns=(), unique_columns=("prompt_id",))
        report.outcomes.append(_messages_outcome(df))
    else:  # dpo_dataset
        report = validate_table(df, rules, asset, text_columns=(), unique_columns=("prompt_id",),
                                ranges={"score_chosen": (-INF, INF), "score_rejected": (-INF, INF)})
    report.outcomes.insert(0, schema)
    report.outcomes += dataset_outcomes(df)
    return report


ALMOST_ASSETS = ("almost_responses", "synthetic_comparisons", "rmsp_demonstrations")
# The checked tables of the branches a profile's `methods` can switch off.
METHOD_BRANCHES = {"dlma": ("contrastive_pairs", "self_reward_scores", "dlma_pairs"), "almost": ALMOST_ASSETS}


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
        configs = df.groupby("prompt_id")["config"].nunique()
        incomplete = configs[configs < 4]
        outcomes.append(Outcome("every prompt answered by configurations A-D", "config", incomplete.empty,
                                f"{len(incomplete)} of {len(configs)} prompts incomplete", len(incomplete),
                                [{"prompt_id": i, "value": int(n)} for i, n in incomplete.head(3).items()]))
        teacher = df[df["config"].isin(["A", "B"])]
        empty = teacher[teacher["text"].fillna("").astype(str).str.strip() == ""]
        outcomes.append(Outcome("teacher answers (A, B) not empty", "text", empty.empty, f"{len(empty)} empty",
                                len(empty), [{"prompt_id": i, "value": c} for i, c in zip(empty["prompt_id"][:3], empty["config"][:3])]))
        outcomes.append(count_outcome(int(df["prompt_id"].nunique()), 1, "prompts"))
    elif asset == "synthetic_comparisons":
        kept = df[df["kept"].astype(bool)]
        outcomes.append(count_outcome(int((kept["fold"] == "train").sum()), 1, "kept train-fold comparisons"))
        same = kept[kept["chosen"].astype(str).str.strip() == kept["rejected"].astype(str).str.strip()]
        outcomes.append(Outcome("kept comparisons differ", "chosen", same.empty, f"{len(same)} identical", len(same)))
    else:  # rmsp_demonstrations
        not_best = [row.prompt_id for row in df.itertuples()
                    if row.rm_score < max(json.loads(row.candidate_scores), default=row.rm_score)]
        outcomes.append(Outcome("kept the best-scored candidate", "rm_score", not not_best, f"{len(not_best)} not best",
                                len(not_best), [{"prompt_id": i, "value": ""} for i in not_best[:3]]))
        empty = df[df["response"].fillna("").astype(str).str.strip() == ""]
        outcomes.append(Outcome("demonstrations not empty", "response", empty.empty, f"{len(empty)} empty", len(empty)))
    return QualityReport(asset, outcomes)


def _messages_outcome(df: pd.DataFrame) -> Outcome:
    """Each SFT row is a system, user, assistant conversation with a non-empty answer."""
    bad = []
    for prompt_id, raw in zip(df["prompt_id"], df["messages"]):
        try:
            messages = json.loads(raw) if isinstance(raw, str) else list(raw)
            ok = [m["role"] for m in messages] == ["system", "user", "assistant"] and str(messages[-1]["content"]).strip()
        except (ValueError, TypeError, KeyError, IndexError):
            ok = False
        if not ok:
            bad.append({"prompt_id": prompt_id, "value": raw})
    return Outcome("expect_messages_to_be_system_user_assistant", "messages", not bad, f"{len(bad)} of {len(df)} rows",
                   len(bad), bad[:3])


# Partitioned checks are "preview" in Dagster 1.13; they are what makes a check judge one task's rows.
warnings.filterwarnings("ignore", category=dg.PreviewWarning, message=".*partitions_def on an AssetCheckSpec.*")

# Every data asset, in dependency order; the checkpoints and the evaluation are judged by their own numbers.
CHECKED_ASSETS = ["raw_prompts", "drafts", "critiques", "revisions", "contrastive_pairs", "self_reward_scores",
                  "dlma_pairs", "reward_scores", "accepted_samples", "preference_pairs", "sft_dataset", "dpo_dataset",
                  "almost_responses", "synthetic_comparisons", "rmsp_demonstrations"]


def _check(asset_def: dg.AssetsDefinition, description: str, needs_rewards: bool = False):
    name = asset_def.key.path[-1]

    @dg.asset_check(asset=asset_def, name=f"{name}_quality", blocking=True, partitions_def=task_partitions,
                    description=description)
    def _quality(
        context: dg.AssetCheckExecutionContext, table: pd.DataFrame, rewards: RewardModels, settings: DscSettings
    ) -> dg.AssetCheckResult:
        return check_result(report_for(name, table, partition_task(context), rewards if needs_rewards else None,
                                       settings.quality_overrides, settings.methods))

    return _quality


raw_prompts_quality = _check(assets.raw_prompts, "Prompts: columns, unique ids, train/test split with train rows.")
drafts_quality = _check(assets.drafts, "Drafts: present, not empty, no prompt echo, no loops, few duplicates.")
critiques_quality = _check(assets.critiques, "Critiques: no echo of the draft or the critique template, no loops.")
revisions_quality = _check(assets.revisions, "Revisions: not empty, no echo of the prompt/draft/critique or templates.")
contrastive_pairs_quality = _check(preferences.contrastive_pairs, "DLMA answers: not empty, no prompt echo, no loops.")
reward_scores_quality = _check(preferences.reward_scores, "Rewards: present and within the scorer's range.", True)
accepted_samples_quality = _check(preferences.accepted_samples, "Acceptance rate within the task's band.")
preference_pairs_quality = _check(preferences.preference_pairs, "Pairs: chosen differs from rejected.")
self_reward_scores_quality = _check(preferences.self_reward_scores, "DLMA self-rewards: columns, one per prompt, none null.")
dlma_pairs_quality = _check(preferences.dlma_pairs, "DLMA set: positive self-reward, dataset folder loads with all rows.")
sft_dataset_quality = _check(preferences.sft_dataset, "SFT set: system/user/assistant rows, dataset folder loads.")
dpo_dataset_quality = _check(preferences.dpo_dataset, "DPO set: columns, scores present, dataset folder loads.")
almost_responses_quality = _check(almost.almost_responses, "ALMoST answers: every configuration per prompt, teacher answers not empty.")
synthetic_comparisons_quality = _check(almost.synthetic_comparisons, "ALMoST comparisons: kept train-fold pairs that differ.")
rmsp_demonstrations_quality = _check(almost.rmsp_demonstrations, "Best-of-N: the best-scored candidate kept, not empty.")


# ---- `dsc gate`: a verdict per asset that covers its whole upstream ------------------------------------------------

OK, FAILED, BLOCKED, STALE, MISSING = "OK", "FAILED", "BLOCKED", "STALE", "MISSING"


@dataclass
class Verdict:
    """One asset's gate verdict for one task. OK only if its own suite passes on the current table, every upstream
    suite passes, and the table was built from the current upstream data."""

    asset: str
    status: str = OK
    reasons: list[str] = field(default_factory=list)
    report: QualityReport | None = None
    failed_checks: list[str] = field(default_factory=list)  # own and upstream checks that failed
    rows: int = 0


def gate_verdicts(
    task: Task,
    table_of: Callable[[str], pd.DataFrame | None],
    materialized: Callable[[str], bool],
    stale_reasons: dict[str, list[str]],
    upstream: dict[str, list[str]],
    rewards: RewardModels | None = None,
    overrides: dict | None = None,
    only: set[str] | None = None,
    methods: Collection[str] | None = None,
) -> dict[str, Verdict]:
    """Verdicts for every checked asset, in dependency order. ``table_of``: the task's rows (None: no table);
    ``materialized``: whether Dagster recorded a materialization of the asset for this task; ``stale_reasons``:
    `dsc plan`'s reasons per asset (staleness.plan); ``only``: these assets (with their upstream, for a verdict)."""
    order: list[str] = []

    def visit(asset: str) -> None:  # parents first, whatever the order of CHECKED_ASSETS
        if asset not in order:
            for parent in upstream.get(asset, []):
                if parent in CHECKED_ASSETS:
                    visit(parent)
            order.append(asset)

    for asset in CHECKED_ASSETS:
        visit(asset)
    verdicts: dict[str, Verdict] = {}
    for asset in [a for a in order if only is None or a in only]:
        verdict = verdicts[asset] = Verdict(asset)
        parents = [p for p in upstream.get(asset, []) if p in verdicts]
        table = table_of(asset)
        if table is None or (table.empty and not materialized(asset)):
            verdict.status = MISSING
            verdict.reasons.append("no table yet" if table is None else f"no rows for task '{task.name}'")
        else:
            verdict.rows = len(table)
            verdict.report = report_for(asset, table, task, rewards, overrides, methods)
            if not verdict.report.success:
                verdict.status = FAILED
                verdict.failed_checks.append(f"{asset}_quality")
                verdict.reasons.append(f"{len(verdict.report.failed())} of {len(verdict.report.outcomes)} expectations failed")
        failed_upstream = sorted({check for p in parents for check in verdicts[p].failed_checks})
        if failed_upstream:
            verdict.failed_checks += [c for c in failed_upstream if c not in verdict.failed_checks]
            verdict.reasons.append(f"upstream check failed: {', '.join(failed_upstream)}")
            if verdict.status == OK:
                verdict.status = BLOCKED
        if verdict.status == MISSING:
            continue
        stale = []
        for reason in stale_reasons.get(asset, []):
            if reason == "missing":  # rows in the table, but no record of the run that wrote them
                stale.append("no materialization recorded in this DAGSTER_HOME: how the table was built is unknown")
            elif reason.startswith("upstream data changed: "):
                parent = reason.removeprefix("upstream data changed: ")
                stale.append(f"built from an older {parent} ({parent} changed since)")
            elif reason.startswith("blocked"):  # Dagster recorded a failed blocking check above this asset
                if not any(check in reason for check in verdict.failed_checks):  # else said already
                    verdict.reasons.append(reason)
                verdict.status = BLOCKED if verdict.status == OK else verdict.status
            elif not reason.startswith("upstream stale"):
                stale.append(reason)
        stale += [f"upstream {p} is {verdicts[p].status}" for p in parents if verdicts[p].status in (STALE, MISSING)]
        if stale:
            verdict.reasons += stale
            if verdict.status == OK:
                verdict.status = STALE
    return verdicts


@dg.asset_check(asset=assets.raw_prompts, name="raw_prompts_fit_context", blocking=True,
                partitions_def=task_partitions,
                description="Every prompt fits the context windows it meets (generator, judge, student), counted with "
                            "each model's tokenizer: a prompt that cannot fit stops the run before the first model call.")
def raw_prompts_fit_context(
    context: dg.AssetCheckExecutionContext, llm: LLMResource, rewards: RewardModels, student: LlamaCppLLM,
    settings: DscSettings,
) -> dg.AssetCheckResult:
    from dsc_assets.preflight import Window, context_problems, token_counter
    from dsc_assets.profiles import profile_file

    task = partition_task(context)
    windows = [Window("judge", rewards.n_ctx, token_counter(resolve_model(rewards.judge_model, rewards.model_cache_dir).path),
                      "judge.n_ctx"),
               Window("student", student.n_ctx, token_counter(student.model_file().path), "student.n_ctx")]
    if isinstance(llm, LlamaCppLLM):  # a server's tokenizer is not known here
        windows.insert(0, Window("generator", llm.n_ctx, token_counter(llm.model_file().path), "generator.n_ctx"))
    max_tokens = task.sampling_for(settings.max_tokens_cap).max_tokens
    problems = [p for window in windows for p in context_problems(task, window, max_tokens, str(profile_file()))]
    return dg.AssetCheckResult(
        passed=not problems, severity=dg.AssetCheckSeverity.ERROR,
        description=problems[0] if problems else f"every prompt fits ({', '.join(w.field for w in windows)})",
        metadata={"problems": dg.MetadataValue.md("\n".join(f"- {p}" for p in problems) or "none")},
    )
