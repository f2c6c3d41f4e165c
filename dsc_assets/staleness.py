"""What is stale, per asset and task, and why; what a refresh would cost. Used by `dsc plan` and `dsc refresh`.

Dagster's staleness is not transitive and has no public Python API, so dsc computes its own from what every
materialization records: ``task_version`` (the task.yaml fields and run context the asset read) and Dagster's
``dagster/input_event_pointer/<upstream>`` tags (which upstream materialization it read). An asset partition is stale when it is
missing, when its task version differs from the current one, when an upstream's data version moved since it was
built, or when an upstream is itself stale.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import dagster as dg

from dsc_assets.tasks import Task, TaskError, load_task
from dsc_assets.versions import run_context, task_version
from resources.hashing import content_hash
from resources.llm import LLMResource
from resources.settings import DscSettings


@dataclass
class StaleEntry:
    asset: str
    task: str
    reasons: list[str] = field(default_factory=list)

    @property
    def root(self) -> bool:
        """Stale for its own reasons and nothing upstream of it is stale: rebuilt now, it is rebuilt once (an asset
        whose upstream is stale too waits for it; else `evaluation` ran on the old checkpoints, then again)."""
        own = any(not r.startswith("upstream stale") for r in self.reasons)
        return own and not any(r.startswith("upstream stale") for r in self.reasons)


def _records(instance: dg.DagsterInstance, asset: str, task: str, limit: int = 1):
    return instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey(asset), asset_partitions=[task]), limit=limit
    ).records


def _latest(instance: dg.DagsterInstance, asset: str, task: str):
    records = _records(instance, asset, task)
    return records[0].event_log_entry.asset_materialization if records else None


def _data_version(record) -> str | None:
    tags = record.event_log_entry.asset_materialization.tags or {}
    return tags.get("dagster/data_version")


def upstream_moved(instance: dg.DagsterInstance, materialization, parent: str, task: str) -> bool:
    """Did the parent's data change since this materialization read it? Every dsc asset records the data versions
    it read (``upstream_data_versions``); a newer parent event with the same data version is no change
    (data-aware). Dagster's own input_event_pointer is the fallback for materializations without that record."""
    history = _records(instance, parent, task, limit=100)
    if not history:
        return True
    recorded = materialization.metadata.get("upstream_data_versions")
    if recorded is not None and parent in (recorded.value or {}):
        return recorded.value[parent] != _data_version(history[0])
    pointer = (materialization.tags or {}).get(f"dagster/input_event_pointer/{parent}")
    if pointer is None:
        return True
    read = next((r for r in history if str(r.storage_id) == pointer), None)
    return read is None or _data_version(read) != _data_version(history[0])


def asset_order(defs) -> tuple[list[str], dict[str, list[str]]]:
    """Asset names in dependency order, and each asset's upstream names (from Definitions or an asset graph)."""
    graph = defs.resolve_asset_graph() if isinstance(defs, dg.Definitions) else defs
    upstream = {key.path[-1]: sorted(p.path[-1] for p in graph.get(key).parent_keys) for key in graph.materializable_asset_keys}
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


def plan(
    defs, instance: dg.DagsterInstance, tasks: list[str], settings: DscSettings, llm: LLMResource,
    only: set[str] | None = None,
) -> list[StaleEntry]:
    """Every stale (asset, task) with its reasons, in dependency order (``only``: restrict to these assets)."""
    ordered, upstream = asset_order(defs)
    if only:
        ordered = [a for a in ordered if a in only]
        upstream = {a: [p for p in parents if p in only] for a, parents in upstream.items()}
    stale: dict[tuple[str, str], StaleEntry] = {}
    for task_name in tasks:
        try:
            task: Task | None = load_task(task_name)
        except TaskError as error:
            task = None
            stale[(ordered[0], task_name)] = StaleEntry(ordered[0], task_name, [f"invalid task: {error}"])
        for asset in ordered:
            entry = StaleEntry(asset, task_name)
            latest = _latest(instance, asset, task_name)
            if latest is None:
                entry.reasons.append("missing")
            elif task is not None:
                recorded = latest.metadata.get("task_version")
                current = task_version(asset, task.spec, *run_context(asset, task, settings, llm))
                if recorded is None or recorded.value != current:
                    entry.reasons.append("task version changed (templates, settings, prompts or model)")
                for parent in upstream[asset]:
                    if (parent, task_name) in stale:
                        entry.reasons.append(f"upstream stale: {parent}")
                        continue
                    if upstream_moved(instance, latest, parent, task_name):
                        entry.reasons.append(f"upstream data changed: {parent}")
            if entry.reasons:
                stale[(asset, task_name)] = entry
    return sorted(stale.values(), key=lambda e: (ordered.index(e.asset) if e.asset in ordered else -1, e.task))


@dataclass
class Cost:
    calls: int = 0
    cached: int = 0
    prompt_tokens: int = 0
    max_completion_tokens: int = 0


def generation_cost(task: Task, settings: DscSettings, llm: LLMResource) -> dict[str, Cost]:
    """Model calls a rebuild of the task's generation assets would make, found by replaying the chain against the
    call cache (no model is called). After a miss the following texts are unknown, so those steps count as calls."""
    from dsc_assets.assets import ChainMessages

    params = task.sampling_for(settings.max_tokens_cap)
    identity, cache, chain = llm.model_identity(), llm.cache, ChainMessages(task)
    costs = {name: Cost() for name in ("drafts", "critiques", "revisions", "contrastive_pairs")}
    train = [p for p in task.prompts if task.split_of(p.id) == "train"][: settings.max_prompts_per_task]

    def ask(asset: str, messages: list[dict] | None) -> str | None:
        cost = costs[asset]
        hit = cache.get(content_hash("chat", identity, messages, params)) if messages is not None else None
        if hit is None:
            cost.calls += 1
            cost.prompt_tokens += sum(len(m["content"]) for m in messages) // 4 if messages else 0  # ~4 chars a token
            cost.max_completion_tokens += params.max_tokens
            return None
        cost.cached += 1
        return hit["text"]

    # The chain of one prompt: draft, critique 1, revision 1, then (critique k, revision k) made inside revisions.
    sequence = ["drafts", "critiques", "revisions"] + ["revisions"] * 2 * (task.spec.revision_steps - 1)
    for record in train:
        response = critique = None
        known = True
        for position, asset in enumerate(sequence):
            if position == 0:
                messages = chain.draft(record.prompt)
            elif position % 2 == 1:
                messages = chain.critique(record.prompt, response) if known else None
            else:
                messages = chain.revision(record.prompt, response, critique) if known else None
            text = ask(asset, messages)
            known = known and text is not None
            if position % 2 == 1:
                critique = text
            else:
                response = text
        if task.spec.contrastive is not None:
            for affix in (task.spec.contrastive.positive_affix, task.spec.contrastive.negative_affix):
                ask("contrastive_pairs", chain.contrastive(record.prompt, affix))
    return costs
