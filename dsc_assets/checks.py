"""Blocking data-quality checks: a failed suite stops everything downstream in the same run (the bad table is
still written, for inspection). The suites themselves live in quality.py; `dsc gate` reuses ``report_for``."""

import warnings

import dagster as dg
import pandas as pd

from dsc_assets import assets, preferences
from dsc_assets.assets import partition_task
from dsc_assets.partitions import task_partitions
from dsc_assets.quality import QualityReport, check_rate, check_result, instruction_lines, validate_table
from dsc_assets.tasks import Task
from resources.rewards import RewardModels
from resources.settings import DscSettings


def report_for(
    asset: str, df: pd.DataFrame, task: Task, rewards: RewardModels | None = None, overrides: dict | None = None
) -> QualityReport:
    """The quality suite of one asset's table for one task (``overrides``: the profile's quality_overrides)."""
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
    raise KeyError(f"no quality suite for {asset}")


# Partitioned checks are "preview" in Dagster 1.13; they are what makes a check judge one task's rows.
warnings.filterwarnings("ignore", category=dg.PreviewWarning, message=".*partitions_def on an AssetCheckSpec.*")

CHECKED_ASSETS = ["drafts", "critiques", "revisions", "contrastive_pairs", "reward_scores", "accepted_samples",
                  "preference_pairs"]


def _check(asset_def: dg.AssetsDefinition, description: str, needs_rewards: bool = False):
    name = asset_def.key.path[-1]

    @dg.asset_check(asset=asset_def, name=f"{name}_quality", blocking=True, partitions_def=task_partitions,
                    description=description)
    def _quality(
        context: dg.AssetCheckExecutionContext, table: pd.DataFrame, rewards: RewardModels, settings: DscSettings
    ) -> dg.AssetCheckResult:
        return check_result(report_for(name, table, partition_task(context), rewards if needs_rewards else None,
                                       settings.quality_overrides))

    return _quality


drafts_quality = _check(assets.drafts, "Drafts: present, not empty, no prompt echo, no loops, few duplicates.")
critiques_quality = _check(assets.critiques, "Critiques: no echo of the draft or the critique template, no loops.")
revisions_quality = _check(assets.revisions, "Revisions: not empty, no echo of the prompt/draft/critique or templates.")
contrastive_pairs_quality = _check(preferences.contrastive_pairs, "DLMA answers: not empty, no prompt echo, no loops.")
reward_scores_quality = _check(preferences.reward_scores, "Rewards: present and within the scorer's range.", True)
accepted_samples_quality = _check(preferences.accepted_samples, "Acceptance rate within the task's band.")
preference_pairs_quality = _check(preferences.preference_pairs, "Pairs: chosen differs from rejected.")
