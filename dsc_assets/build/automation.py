"""Automation: with `dagster dev` running, an edited task file rebuilds what depends on it, by itself.

Dagster's own automation conditions compare code versions of the loaded code location, which only change when the
location is reloaded, and its staleness is not transitive. This sensor asks the same question as `dsc plan` (per
asset and task: task version of the files on disk now vs the one recorded at materialization, and whether an
upstream's data version moved) and requests a run of the stale roots of one task at a time. Since the plan is
re-evaluated after each run and downstream is only stale when an upstream's *data* changed, the wave stops where
output came out identical. It only rebuilds what was built before: a never-materialized asset or a brand-new task
is left for `dsc run` or the UI's Materialize button. It never requests an asset below a failed blocking quality
check: that data waits until the checked table is rebuilt and passes. Each tick also records the current inputs as
observations of ``task_inputs``, so the UI's per-partition staleness follows edits within one interval.
"""

from __future__ import annotations

import dagster as dg

from dsc_assets.build.staleness import plan
from dsc_assets.lib.tasks import task_names
from resources.hashing import content_hash
from resources.llm import LlamaCppLLM, LLMResource
from resources.rewards import RewardModels
from resources.settings import DscSettings
from resources.trainer import LoRATrainer

_ACTIVE = [
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
    dg.DagsterRunStatus.CANCELING,
]


def refresh_requests(
    asset_graph, instance: dg.DagsterInstance, resources: dict, tasks: list[str]
) -> list[dg.RunRequest]:
    """One run request per task with stale roots that were built before (the roots of that task, one run). A root
    is never below a failed blocking check (see ``StaleEntry.root``)."""
    entries = plan(asset_graph, instance, tasks, resources=resources)
    requests = []
    for task in sorted({e.task for e in entries}):
        roots = [
            e
            for e in entries
            if e.task == task and e.root and not any(r == "missing" or r.startswith("invalid task") for r in e.reasons)
        ]
        if not roots:
            continue
        # The key names the state being repaired (which materializations were stale, and why), so the same stale
        # state is requested once, and a later edit (even one back to old text) gets a new run.
        latest = {}
        for entry in roots:
            records = instance.fetch_materializations(
                dg.AssetRecordsFilter(asset_key=dg.AssetKey(entry.asset), asset_partitions=[task]), limit=1
            ).records
            latest[entry.asset] = (records[0].storage_id if records else None, entry.reasons)
        requests.append(
            dg.RunRequest(
                run_key=f"dsc-refresh-{task}-{content_hash(latest, length=16)}",
                partition_key=task,
                asset_selection=[dg.AssetKey(e.asset) for e in roots],
                tags={
                    "dsc/trigger": "refresh_sensor",
                    "dsc/reasons": "; ".join(sorted({r for e in roots for r in e.reasons}))[:200],
                },
            )
        )
    return requests


@dg.sensor(
    name="dsc_refresh_sensor",
    minimum_interval_seconds=30,
    default_status=dg.DefaultSensorStatus.RUNNING,
    asset_selection=dg.AssetSelection.all(),
    description="Rebuilds the stale roots of an edited task (templates, settings, prompts), data-aware, one run at a time.",
)
def dsc_refresh_sensor(
    context: dg.SensorEvaluationContext,
    settings: DscSettings,
    llm: LLMResource,
    rewards: RewardModels,
    student: LlamaCppLLM,
    trainer: LoRATrainer,
):
    # DuckDB allows one writer process per file: never start a run while another is under way.
    if context.instance.get_runs(filters=dg.RunsFilter(statuses=_ACTIVE), limit=1):
        return dg.SkipReason("a run is in progress; checking again when it has finished")
    resources = {"settings": settings, "llm": llm, "rewards": rewards, "student": student, "trainer": trainer}
    requests = refresh_requests(context.repository_def.asset_graph, context.instance, resources, task_names())
    if not requests:
        return dg.SkipReason("nothing that was built is stale")
    return requests[:1]
