"""What is stale, per asset and task, and why; what a refresh would cost. Used by `dsc plan`, `dsc refresh` and the
refresh sensor.

Every materialization records what it read (see versions.py): its input versions (task.yaml fields, prompts file,
profile settings, models by sha256) and the data version of each parent it read. An asset partition is stale when
it is missing, when its logic revision or one of its inputs changed, when a parent's data version moved since it was
built, or when a parent is itself stale (transitive, unlike Dagster's own status, which flags only the first level).
An asset below a failed blocking quality check is marked blocked: no refresh rebuilds it until the check passes.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import dagster as dg

from dsc_assets.defs.inputs import Environment
from dsc_assets.defs.stage import STAGES, current_versions, observe_inputs
from dsc_assets.lib.dagster_private import FAILED, PLANNED, check_history
from dsc_assets.lib.task_spec import TaskError
from resources.llm import LLMResource
from resources.settings import DscSettings

UPSTREAM_STALE, BLOCKED = "upstream stale", "blocked"


@dataclass
class StaleEntry:
    asset: str
    task: str
    reasons: list[str] = field(default_factory=list)

    @property
    def root(self) -> bool:
        """Stale for its own reasons, nothing upstream of it stale, no failed check above it: rebuilt now, it is
        rebuilt once (an asset whose upstream is stale too waits for it; else `evaluation` ran on the old
        checkpoints, then again), and never from data a blocking check rejected."""
        return bool(self.reasons) and not any(r.startswith((UPSTREAM_STALE, BLOCKED)) for r in self.reasons)

    @property
    def blocked(self) -> bool:
        return any(r.startswith(BLOCKED) for r in self.reasons)


def _records(instance: dg.DagsterInstance, asset: str, task: str, limit: int = 1):
    return instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey(asset), asset_partitions=[task]), limit=limit
    ).records


def _data_version(record) -> str | None:
    tags = record.event_log_entry.asset_materialization.tags or {}
    return tags.get("dagster/data_version")


def upstream_moved(instance: dg.DagsterInstance, materialization, parent: str, task: str) -> bool:
    """Did the parent's data change since this materialization read it? Every dsc asset records the data versions
    it read (``upstream_data_versions``); a newer parent event with the same data version is no change
    (data-aware). Dagster's own input_event_pointer is the fallback for materializations without that record."""
    latest = _records(instance, parent, task)
    if not latest:
        return True
    recorded = materialization.metadata.get("upstream_data_versions")
    if recorded is not None and parent in (recorded.value or {}):
        return recorded.value[parent] != _data_version(latest[0])
    history = _records(instance, parent, task, limit=100)
    pointer = (materialization.tags or {}).get(f"dagster/input_event_pointer/{parent}")
    if pointer is None:
        return True
    read = next((r for r in history if str(r.storage_id) == pointer), None)
    return read is None or _data_version(read) != _data_version(history[0])


def _graph(defs):
    return defs.resolve_asset_graph() if isinstance(defs, dg.Definitions) else defs


def asset_order(defs) -> tuple[list[str], dict[str, list[str]]]:
    """Asset names in dependency order, and each asset's upstream names (from Definitions or an asset graph)."""
    graph = _graph(defs)
    materializable = set(graph.materializable_asset_keys)
    upstream = {
        key.path[-1]: sorted(p.path[-1] for p in graph.get(key).parent_keys if p in materializable)
        for key in materializable
    }
    ordered, seen = [], set()

    def visit(name: str) -> None:
        if name in seen:
            return
        seen.add(name)
        for parent in upstream[name]:
            visit(parent)
        ordered.append(name)

    for name in sorted(upstream):
        visit(name)
    return ordered, upstream


def failed_check(instance: dg.DagsterInstance, graph, asset: str, task: str, latest) -> str | None:
    """The name of a blocking check that failed on this partition's latest materialization, if any (an evaluation
    of an older materialization says nothing about the current one)."""
    node = graph.get(dg.AssetKey(asset))
    for check_key in sorted(node.check_keys, key=lambda k: k.name):
        get_spec = getattr(graph, "get_check_spec", None)
        if get_spec is not None and not get_spec(check_key).blocking:
            continue
        history = check_history(instance, check_key, task)
        for record in history:
            if record.status == PLANNED or record.event is None:
                continue
            evaluation = record.event.dagster_event.event_specific_data
            target = getattr(evaluation, "target_materialization_data", None)
            if target is not None and target.storage_id != latest.storage_id:
                break
            if record.status == FAILED:
                return check_key.name
            break
    return None


def plan(
    defs,
    instance: dg.DagsterInstance,
    tasks: list[str],
    settings: DscSettings | None = None,
    llm: LLMResource | None = None,
    only: set[str] | None = None,
    *,
    resources=None,
    observe: bool = True,
) -> list[StaleEntry]:
    """Every stale (asset, task) with its reasons, in dependency order (``only``: restrict to these assets).
    ``resources``: the graph's resources (default: the Definitions'); ``observe``: also record the current inputs
    as observations of ``task_inputs``, so the UI shows the same per-partition staleness."""
    graph = _graph(defs)
    if resources is None:
        resources = defs.resources if isinstance(defs, dg.Definitions) else {"settings": settings, "llm": llm}
    env = Environment(resources)
    ordered, upstream = asset_order(graph)
    if only:
        ordered = [a for a in ordered if a in only]
        upstream = {a: [p for p in parents if p in only] for a, parents in upstream.items()}
    versions = current_versions(tasks, env, assets=ordered)
    if observe:
        observe_inputs(instance, versions)
    stale: dict[tuple[str, str], StaleEntry] = {}
    for task_name in tasks:
        checks: dict[str, str | None] = {}  # asset -> failed check on it (this task)
        for asset in ordered:
            entry = StaleEntry(asset, task_name)
            records = _records(instance, asset, task_name)
            latest = records[0] if records else None
            materialization = latest.event_log_entry.asset_materialization if latest else None
            current = versions.get((asset, task_name))
            if isinstance(current, TaskError):
                entry.reasons.append(f"invalid task: {current}")
            elif materialization is None:
                entry.reasons.append("missing")
            else:
                entry.reasons += _own_reasons(asset, materialization, current)
                for parent in upstream[asset]:
                    if (parent, task_name) in stale:
                        entry.reasons.append(f"{UPSTREAM_STALE}: {parent}")
                    elif upstream_moved(instance, materialization, parent, task_name):
                        entry.reasons.append(f"upstream data changed: {parent}")
            checks[asset] = failed_check(instance, graph, asset, task_name, latest) if latest else None
            blocked = _blocked_by(asset, upstream, checks)
            if entry.reasons and blocked:
                entry.reasons.append(f"{BLOCKED} by failed check {checks[blocked]} on {blocked}")
            if entry.reasons:
                stale[(asset, task_name)] = entry
            if isinstance(current, TaskError):
                break  # said once, on the task's first asset that reads it: nothing else can be planned
    return sorted(stale.values(), key=lambda e: (ordered.index(e.asset) if e.asset in ordered else -1, e.task))


def _own_reasons(asset: str, materialization, current) -> list[str]:
    declared = STAGES.get(asset)
    if declared is None:
        return []
    reasons = []
    recorded_code = (materialization.tags or {}).get("dagster/code_version")
    if recorded_code != declared.code_version:
        reasons.append(f"logic revision changed ({recorded_code} -> {declared.code_version})")
    if current is None:  # reads nothing
        return reasons
    version, inputs = current
    recorded = materialization.metadata.get("input_versions")
    recorded_inputs = recorded.value if recorded is not None else None
    if isinstance(recorded_inputs, dict):
        changed = sorted(
            name for name in set(inputs) | set(recorded_inputs) if inputs.get(name) != recorded_inputs.get(name)
        )
        if changed:
            reasons.append(f"inputs changed: {', '.join(changed)}")
    else:
        task_version = materialization.metadata.get("task_version")
        if task_version is None or task_version.value != version:
            reasons.append("inputs changed (templates, settings, prompts or model)")
    return reasons


def _blocked_by(asset: str, upstream: dict[str, list[str]], checks: dict[str, str | None]) -> str | None:
    """The nearest ancestor (same task) whose blocking check failed, if any."""
    seen, queue = set(), list(upstream.get(asset, []))
    while queue:
        parent = queue.pop(0)
        if parent in seen:
            continue
        seen.add(parent)
        if checks.get(parent):
            return parent
        queue += upstream.get(parent, [])
    return None
