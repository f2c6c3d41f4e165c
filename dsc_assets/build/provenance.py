"""Which runs and commits made a task's tables: the provenance section of a study report (``dsc report``)."""

from __future__ import annotations

import datetime

import dagster as dg

from dsc_assets.lib.methods import CHECKPOINT_TABLES

# The assets whose runs a reader needs to place a result: the teacher's data, each checkpoint, the evaluation.
PROVENANCE_ASSETS = ["drafts", "revisions", "accepted_samples", *CHECKPOINT_TABLES, "evaluation"]


def provenance(instance, task: str) -> list[dict]:
    """Each provenance asset's latest materialization of ``task``: when, at which commit (the ``code_commit``
    metadata every materialization records), in which run. Assets never materialized are left out."""
    rows = []
    for asset in PROVENANCE_ASSETS:
        records = instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=dg.AssetKey(asset), asset_partitions=[task]), limit=1
        ).records
        if not records:
            continue
        record = records[0]
        commit = record.asset_materialization.metadata.get("code_commit")
        when = datetime.datetime.fromtimestamp(record.timestamp, datetime.timezone.utc)
        rows.append(
            {
                "asset": asset,
                "materialized (UTC)": when.strftime("%Y-%m-%d %H:%M"),
                "commit": commit.value if commit is not None else "not recorded (before dsc recorded commits)",
                "run": record.run_id[:8],
            }
        )
    return rows
