"""The UI and `dsc plan` agree, per partition, with real runs (SmolLM2-135M): Dagster's own stale status (what the UI
shows, read through the instance as the GraphQL layer does) flags exactly the asset partitions that `dsc plan`
finds stale for their own reasons, after a task edit and after a profile change, and nothing after a refresh.

Dagster's status is not transitive (an asset whose parent is stale shows fresh until the parent is rebuilt);
`dsc plan` also lists those, as "upstream stale", which is the one intended difference.
"""

from __future__ import annotations

import dagster as dg
import pytest
import yaml
from dagster._core.definitions.data_version import CachingStaleStatusResolver, StaleStatus
from dagster._core.definitions.observe import observe
from dagster._core.loader import LoadingContextForTest

from dsc_assets.build.staleness import plan
from dsc_assets.definitions import build_definitions
from dsc_assets.lib.profiles import load_profile
from dsc_assets_tests.conftest import private_tasks

TASKS = ["sentiment", "sycophancy"]
CHAIN = ["raw_prompts", "drafts", "critiques", "revisions"]


@pytest.fixture
def small_tasks(tmp_path, monkeypatch, dsc_home):
    """Two tasks with two train prompts each, in a private prompts folder."""
    root = private_tasks(tmp_path / "prompts", {name: 2 for name in TASKS})
    monkeypatch.setenv("DSC_PROMPTS_DIR", str(root))
    return root


def _ui_stale(defs: dg.Definitions, instance: dg.DagsterInstance) -> set[tuple[str, str]]:
    resolver = CachingStaleStatusResolver(instance, defs.resolve_asset_graph(), LoadingContextForTest(instance))
    return {
        (asset, task)
        for asset in CHAIN
        for task in TASKS
        if resolver.get_status(dg.AssetKey(asset), task) == StaleStatus.STALE
    }


def _observe_button(defs: dg.Definitions, instance: dg.DagsterInstance) -> None:
    source = next(a for a in defs.assets if getattr(a, "key", None) == dg.AssetKey("task_inputs"))
    assert observe([source], instance=instance, resources=defs.resources).success


def _agreeing(defs: dg.Definitions, instance: dg.DagsterInstance) -> set[tuple[str, str]]:
    """`dsc plan`'s stale-for-own-reasons set, asserted equal to what Dagster's UI shows."""
    entries = plan(defs, instance, TASKS, only=set(CHAIN))
    own = {(e.asset, e.task) for e in entries if any(not r.startswith("upstream stale") for r in e.reasons)}
    assert _ui_stale(defs, instance) == own, [(e.asset, e.task, e.reasons) for e in entries]
    return own


def _refresh(defs: dg.Definitions, instance: dg.DagsterInstance) -> None:
    """What `dsc refresh` does: rebuild the roots, re-plan, until nothing is stale."""
    job = defs.resolve_implicit_global_asset_job_def()
    for _ in range(len(CHAIN) + 1):
        roots = [e for e in plan(defs, instance, TASKS, only=set(CHAIN)) if e.root]
        if not roots:
            return
        for task in sorted({e.task for e in roots}):
            selection = [dg.AssetKey(e.asset) for e in roots if e.task == task]
            assert job.execute_in_process(partition_key=task, instance=instance, asset_selection=selection).success
    raise AssertionError("refresh did not converge")


def test_ui_status_agrees_with_plan_per_partition(small_tasks, dsc_home):
    profile = load_profile("test")
    defs = build_definitions(profile, dsc_home)
    with dg.DagsterInstance.ephemeral() as instance:
        job = defs.resolve_implicit_global_asset_job_def()
        for task in TASKS:
            assert job.execute_in_process(
                partition_key=task, instance=instance, asset_selection=[dg.AssetKey(a) for a in CHAIN]
            ).success
        assert _agreeing(defs, instance) == set()

        # One task's template: that task's revisions, in the UI as in the plan; the other task stays fresh.
        task_file = small_tasks / "sentiment" / "task.yaml"
        task_file.write_text(task_file.read_text().replace("clearly positive about the movie", "warmly positive"))
        _observe_button(defs, instance)  # what the UI's Observe button on task_inputs runs, no dsc code path
        assert _ui_stale(defs, instance) == {("revisions", "sentiment")}
        assert _agreeing(defs, instance) == {("revisions", "sentiment")}
        _refresh(defs, instance)
        assert _agreeing(defs, instance) == set()

        # A profile setting (the token cap): every generation asset of both tasks.
        capped = build_definitions(profile.model_copy(update={"max_tokens_cap": 16}), dsc_home)
        assert _agreeing(capped, instance) == {(a, t) for a in CHAIN[1:] for t in TASKS}
        _refresh(capped, instance)
        assert _agreeing(capped, instance) == set()

        # Materialize right after an edit, before anything observed it (the UI's Materialize button): the run
        # records the inputs it read, so nothing is left stale afterwards.
        task_file = small_tasks / "sycophancy" / "task.yaml"
        spec = yaml.safe_load(task_file.read_text())
        task_file.write_text(yaml.safe_dump({**spec, "revision_template": spec["revision_template"] + "\nBe brief."}))
        assert (
            capped.resolve_implicit_global_asset_job_def()
            .execute_in_process(
                partition_key="sycophancy", instance=instance, asset_selection=[dg.AssetKey("revisions")]
            )
            .success
        )
        assert _agreeing(capped, instance) == set()
