"""Blocking data-quality checks: a failed suite stops everything downstream in the same run (the bad table is
still written, for inspection). Every data asset has one, declared beside it (defs/<group>/checks.py) with
``quality_check``; the suites themselves are lib/suites.py."""

import warnings

import dagster as dg
import pandas as pd

from dsc_assets.defs.partitions import task_partitions
from dsc_assets.defs.steps import partition_task
from dsc_assets.lib.quality import check_result
from dsc_assets.lib.suites import report_for
from resources.rewards import RewardModels
from resources.settings import DscSettings

# Partitioned checks are "preview" in Dagster 1.13; they are what makes a check judge one task's rows.
warnings.filterwarnings("ignore", category=dg.PreviewWarning, message=".*partitions_def on an AssetCheckSpec.*")


def quality_check(asset_def: dg.AssetsDefinition, description: str, needs_rewards: bool = False):
    """The blocking check ``<asset>_quality``: the asset's suite on this task's rows."""
    name = asset_def.key.path[-1]

    @dg.asset_check(
        asset=asset_def, name=f"{name}_quality", blocking=True, partitions_def=task_partitions, description=description
    )
    def _quality(
        context: dg.AssetCheckExecutionContext, table: pd.DataFrame, rewards: RewardModels, settings: DscSettings
    ) -> dg.AssetCheckResult:
        return check_result(
            report_for(
                name,
                table,
                partition_task(context),
                rewards if needs_rewards else None,
                settings.quality_overrides,
                settings.methods,
            )
        )

    return _quality
