"""The stage declaration: for every asset, everything its output depends on besides its upstream data.

``@stage(group=..., reads=(...))`` replaces ``@dg.asset`` on each asset. ``reads`` names entries of ``INPUTS``: the
task.yaml fields, the prompts file and the profile settings (models by content: a GGUF's sha256; trainer
settings; caps and counts) that decide the asset's output. From that one declaration come:

- the asset's Dagster code version: its logic ``revision`` only (bump it when the code changes what it writes);
- its input version per task: a hash of the values of what it reads, for that task alone. It is recorded with each
  materialization (``task_version``, ``input_versions``), compared by `dsc plan`, `dsc refresh` and the refresh
  sensor, and observed as the data version of the partition ``<task>.<asset>`` of the observable source asset
  ``task_inputs``, which every stage depends on: Dagster's UI flags exactly the partitions whose inputs changed.

What a stage can read is declared in inputs.py.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any, Callable, Mapping

import dagster as dg

from dsc_assets.defs.errors import explained
from dsc_assets.defs.inputs import INPUTS, OMIT, Environment
from dsc_assets.defs.partitions import task_partitions
from dsc_assets.lib.commit import code_commit
from dsc_assets.lib.dagster_private import forget_input_version
from dsc_assets.lib.task_spec import TaskError
from dsc_assets.lib.tasks import Task, load_task, task_names
from resources.hashing import content_hash

# Observable source assets are "beta" in Dagster 1.13; task_inputs is one.
warnings.filterwarnings("ignore", category=dg.BetaWarning, message=".*observable_source_asset.*")

TABLE_METADATA = {"partition_expr": "task"}  # one DuckDB table per asset, one task's rows per partition
INPUTS_KEY = dg.AssetKey("task_inputs")
DATA_VERSION_TAG = "dagster/data_version"


@dataclass(frozen=True)
class Stage:
    """One asset's declaration: its group, what it reads, its logic revision."""

    name: str
    group: str
    reads: tuple[str, ...]
    revision: int = 1

    @property
    def code_version(self) -> str:
        return f"r{self.revision}"

    def input_values(self, task: Task, env: Environment) -> dict[str, Any]:
        values = {name: INPUTS[name].value(task, env) for name in self.reads}
        return {name: value for name, value in values.items() if value is not OMIT}

    def input_versions(self, task: Task, env: Environment) -> dict[str, str]:
        """A short hash per input: `dsc plan` names the inputs that changed."""
        return {name: content_hash(value, length=12) for name, value in self.input_values(task, env).items()}

    def version(self, task: Task, env: Environment) -> str:
        return self.version_of(self.input_versions(task, env))

    def version_of(self, input_versions: Mapping[str, str]) -> str:
        return content_hash(self.name, self.revision, dict(input_versions), length=16)


STAGES: dict[str, Stage] = {}


def inputs_partition(task: str, asset: str) -> str:
    return f"{task}.{asset}"


def stage(
    *,
    group: str,
    reads: tuple[str, ...] = (),
    revision: int = 1,
    name: str | None = None,
    kinds: tuple[str, ...] = ("duckdb",),
    **asset_kwargs: Any,
) -> Callable:
    """``@dg.asset`` for one stage of the graph: partitioned by task, stored as a DuckDB table, its code version its
    logic revision, its reads declared and depending on its partition of ``task_inputs``."""
    unknown = sorted(set(reads) - set(INPUTS))
    if unknown:
        raise ValueError(f"unknown input(s) {', '.join(unknown)}; known: {', '.join(INPUTS)}")

    def decorate(fn: Callable) -> dg.AssetsDefinition:
        declared = Stage(name or fn.__name__, group, tuple(reads), revision)
        STAGES[declared.name] = declared
        deps = (
            [
                dg.AssetDep(
                    INPUTS_KEY,
                    partition_mapping=dg.StaticPartitionMapping(
                        {inputs_partition(task, declared.name): task for task in task_names()}
                    ),
                )
            ]
            if reads
            else []
        )
        return dg.asset(
            name=declared.name,
            partitions_def=task_partitions,
            group_name=group,
            metadata=TABLE_METADATA,
            kinds=set(kinds),
            code_version=declared.code_version,
            deps=deps,
            **asset_kwargs,
        )(explained(fn))  # any exception fails the step with its root cause as the description (defs/errors.py)

    return decorate


def current_versions(tasks: list[str], env: Environment, assets: list[str] | None = None) -> dict[tuple[str, str], Any]:
    """(asset, task) -> (version, input versions) for every stage that reads something; a task whose files do not
    load maps to a TaskError (the run reports it)."""
    result: dict[tuple[str, str], Any] = {}
    for task_name in tasks:
        try:
            task = load_task(task_name)
        except TaskError as error:
            task = error
        for declared in STAGES.values():
            if not declared.reads or (assets is not None and declared.name not in assets):
                continue
            if isinstance(task, TaskError):
                result[(declared.name, task_name)] = task
            else:
                versions = declared.input_versions(task, env)
                result[(declared.name, task_name)] = (declared.version_of(versions), versions)
    return result


def _latest_observed(instance: dg.DagsterInstance, partition: str) -> str | None:
    records = instance.fetch_observations(
        dg.AssetRecordsFilter(asset_key=INPUTS_KEY, asset_partitions=[partition]), limit=1
    ).records
    if not records:
        return None
    return (records[0].event_log_entry.asset_observation.tags or {}).get(DATA_VERSION_TAG)


def observe_inputs(instance: dg.DagsterInstance, versions: Mapping[tuple[str, str], Any]) -> int:
    """Record the current input versions as observations of ``task_inputs`` (only those that changed), so the UI's
    per-partition staleness sees what `dsc plan` sees. Returns how many were recorded."""
    recorded = 0
    for (asset, task), value in versions.items():
        if isinstance(value, Exception):
            continue
        partition = inputs_partition(task, asset)
        if _latest_observed(instance, partition) != value[0]:
            instance.report_runless_asset_event(
                dg.AssetObservation(
                    asset_key=INPUTS_KEY,
                    partition=partition,
                    tags={DATA_VERSION_TAG: value[0]},
                    metadata={"inputs": dg.MetadataValue.json(value[1])},
                )
            )
            recorded += 1
    return recorded


def version_metadata(context: dg.AssetExecutionContext, task: Task) -> dict:
    """What this materialization read, recorded with it: its input version (``task_version``; per input in
    ``input_versions``) and the data version of each parent it read (``upstream_data_versions``).

    The inputs are observed now, before the materialization event is written, and the step's cached provenance of
    ``task_inputs`` is dropped, so Dagster records the observation this run really read (it fetched provenance
    when the step started, possibly before a task file was edited and observed)."""
    declared = STAGES[context.asset_key.path[-1]]
    env = Environment(context.resources)
    versions = declared.input_versions(task, env)
    version = declared.version_of(versions)
    if declared.reads:
        observe_inputs(context.instance, {(declared.name, task.name): (version, versions)})
        forget_input_version(context, INPUTS_KEY)
    return {
        "task_version": dg.MetadataValue.text(version),
        "input_versions": dg.MetadataValue.json(versions),
        "upstream_data_versions": dg.MetadataValue.json(upstream_data_versions(context)),
        "code_commit": dg.MetadataValue.text(code_commit()),
    }


def upstream_data_versions(context: dg.AssetExecutionContext) -> dict[str, str | None]:
    """The data version of every parent's latest materialization of this partition: what this run read. Recorded
    by dsc because Dagster's input-event pointer of a parent outside the run may name another partition's event."""
    versions = {}
    for dep in context.assets_def.specs_by_key[context.asset_key].deps:
        if dep.asset_key == INPUTS_KEY:
            continue
        records = context.instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=dep.asset_key, asset_partitions=[context.partition_key]), limit=1
        ).records
        tags = (records[0].event_log_entry.asset_materialization.tags or {}) if records else {}
        versions[dep.asset_key.path[-1]] = tags.get(DATA_VERSION_TAG)
    return versions


def inputs_source() -> dg.SourceAsset:
    """``task_inputs``: one partition per (task, asset) that reads something; its data version is that asset's
    input version. Observed by `dsc plan`/`run`/`refresh`, the refresh sensor, each materialization, and the UI's
    Observe button."""
    partitions = dg.StaticPartitionsDefinition(
        [inputs_partition(task, s.name) for task in task_names() for s in STAGES.values() if s.reads]
    )
    lines = "\n".join(f"- **{s.name}** (r{s.revision}): {', '.join(s.reads)}" for s in STAGES.values() if s.reads)

    @dg.observable_source_asset(
        name=INPUTS_KEY.path[-1],
        partitions_def=partitions,
        group_name="inputs",
        required_resource_keys={"settings", "llm", "rewards", "student", "trainer"},
        description="What each asset reads besides upstream data, per task: task.yaml fields, the prompts file, "
        "profile settings, models by sha256. A partition's data version changes when one of its "
        f"asset's inputs does.\n\n{lines}",
    )
    def task_inputs(context) -> dg.DataVersionsByPartition:
        versions = current_versions(task_names(), Environment(context.resources))
        return dg.DataVersionsByPartition(
            {
                inputs_partition(task, asset): value[0]
                for (asset, task), value in versions.items()
                if not isinstance(value, Exception)
            }
        )

    return task_inputs
