"""The generation chain materialized for real (SmolLM2-135M): shapes, cache reuse, one new prompt = one chain."""

from __future__ import annotations

import json

import dagster as dg
import duckdb
import pytest

from dsc_assets.definitions import build_resources
from dsc_assets.defs.generation import assets
from dsc_assets.lib.profiles import load_profile
from dsc_assets.lib.samples import SAMPLE_COLUMNS
from dsc_assets.lib.tasks import Task, load_task, load_task_spec
from resources.stores import CallCache

CHAIN = [assets.raw_prompts, assets.drafts, assets.critiques, assets.revisions]


def _materialize(home, partition="sentiment", selection=CHAIN):
    result = dg.materialize(
        selection,
        partition_key=partition,
        resources=build_resources(load_profile("test"), home),
        instance=dg.DagsterInstance.ephemeral(),
    )
    assert result.success
    return result


def _metadata(result, asset: str) -> dict:
    events = [e for e in result.get_asset_materialization_events() if e.asset_key.to_user_string() == asset]
    return {k: v.value for k, v in events[0].materialization.metadata.items()}


def _table(home, asset: str):
    with duckdb.connect(str(home / "warehouse.duckdb"), read_only=True) as con:
        return con.execute(f"SELECT * FROM dsc.{asset} ORDER BY prompt_id, step").df()


def _train_ids(task, count, prefix="extra"):
    """Prompt ids that the deterministic split puts in train (so they are drafted)."""
    ids, n = [], 0
    while len(ids) < count:
        if task.split_of(f"{prefix}-{n}") == "train":
            ids.append(f"{prefix}-{n}")
        n += 1
    return ids


@pytest.fixture
def small_sentiment(prompts_copy):
    """The sentiment task with three train prompts, so the chain is short and exactly countable."""
    task = Task("sentiment", prompts_copy / "sentiment", load_task_spec("sentiment", prompts_copy), [])
    lines = [
        json.dumps({"id": i, "prompt": f"Write a negative review of the film number {k}."})
        for k, i in enumerate(_train_ids(task, 3))
    ]
    (prompts_copy / "sentiment" / "prompts.jsonl").write_text("\n".join(lines) + "\n")
    return prompts_copy


def test_chain_writes_samples_and_rerun_costs_nothing(dsc_home, small_sentiment):
    cache = lambda: CallCache(dsc_home / "cache.duckdb").count("chat")  # noqa: E731
    first = _materialize(dsc_home)
    assert cache() == 9  # 3 prompts x (draft, critique, revision)

    revisions = _table(dsc_home, "revisions")
    assert list(revisions.columns) == SAMPLE_COLUMNS
    assert len(revisions) == 3 and set(revisions["kind"]) == {"revision"} and set(revisions["step"]) == {1}
    drafts = _table(dsc_home, "drafts").set_index("prompt_id")
    critiques = _table(dsc_home, "critiques").set_index("prompt_id")
    for row in revisions.itertuples():
        assert row.source == drafts.loc[row.prompt_id, "text"]  # revisions revise the draft ...
        assert row.critique == critiques.loc[row.prompt_id, "text"]  # ... after its critique
    assert _metadata(first, "drafts")["model_calls"] == 3
    assert "prompt_id" in _metadata(first, "revisions")["preview"]

    second = _materialize(dsc_home)
    assert cache() == 9, "a rerun must not call the model"
    for asset in ("drafts", "critiques", "revisions"):
        assert _metadata(second, asset)["model_calls"] == 0
        assert _metadata(second, asset)["cache_hits"] == 3

    # Identical output, identical data version: downstream stays fresh.
    def versions(result):
        return {
            e.asset_key.to_user_string(): e.materialization.tags.get("dagster/data_version")
            for e in result.get_asset_materialization_events()
        }

    assert versions(first) == versions(second)


def test_one_added_prompt_costs_exactly_one_chain(dsc_home, small_sentiment):
    _materialize(dsc_home)
    count = CallCache(dsc_home / "cache.duckdb").count("chat")
    task = load_task("sentiment", small_sentiment)
    new_id = _train_ids(task, 1, prefix="added")[0]
    with open(small_sentiment / "sentiment" / "prompts.jsonl", "a") as handle:
        handle.write(json.dumps({"id": new_id, "prompt": "Write a harsh review of a film about a lighthouse."}) + "\n")
    result = _materialize(dsc_home)
    assert CallCache(dsc_home / "cache.duckdb").count("chat") == count + 3
    assert _metadata(result, "revisions")["model_calls"] == 1
    assert len(_table(dsc_home, "revisions")) == 4


def test_split_is_deterministic_per_prompt(prompts_copy):
    task = load_task("sentiment", prompts_copy)
    splits = {p.id: task.split_of(p.id) for p in task.prompts}
    assert splits == {p.id: load_task("sentiment", prompts_copy).split_of(p.id) for p in task.prompts}
    share = sum(s == "test" for s in splits.values()) / len(splits)
    assert abs(share - task.spec.split.test_fraction) < 0.12


def test_several_revision_steps_chain_on_each_other(dsc_home, small_sentiment):
    path = small_sentiment / "sentiment" / "task.yaml"
    path.write_text(path.read_text().replace("revision_steps: 1", "revision_steps: 2"))
    _materialize(dsc_home)
    revisions = _table(dsc_home, "revisions")
    assert sorted(revisions["step"].unique()) == [1, 2]
    step1 = revisions[revisions.step == 1].set_index("prompt_id")
    for row in revisions[revisions.step == 2].itertuples():
        assert row.source == step1.loc[row.prompt_id, "text"]
    # 3 x (draft, critique, revision) + 3 x (critique, revision) for step 2
    assert CallCache(dsc_home / "cache.duckdb").count("chat") == 15


def test_malformed_task_fails_the_run_with_the_file_and_field(dsc_home, prompts_copy):
    (prompts_copy / "sentiment" / "task.yaml").write_text("description: d\nsystem_prompt: s\n")
    result = dg.materialize(
        CHAIN[:1],
        partition_key="sentiment",
        resources=build_resources(load_profile("test"), dsc_home),
        instance=dg.DagsterInstance.ephemeral(),
        raise_on_error=False,
    )
    assert not result.success
    failure = next(e for e in result.all_events if e.is_step_failure)
    message = str(
        failure.step_failure_data.user_failure_data.description
        if failure.step_failure_data.user_failure_data
        else failure.step_failure_data.error.message
    )
    assert "sentiment/task.yaml: field 'critique_template' is missing" in message
