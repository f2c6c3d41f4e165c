"""A profile's `methods` list: a method that is off builds no rows and trains nothing, its checks accept exactly
that, and only its own assets' versions move (every method on keeps the versions a profile had before the list)."""

from __future__ import annotations

import duckdb
import pandas as pd
import pytest

from dsc_assets.lib.suites import report_for
from dsc_assets.definitions import build_resources
from dsc_assets.lib.profiles import ProfileError, load_profile
from dsc_assets.lib.tasks import load_task
from dsc_assets.defs.inputs import Environment
from dsc_assets.defs.stage import STAGES
from dsc_assets_tests.conftest import private_tasks, run_cli
from resources.settings import METHODS


def test_profile_names_an_unknown_method(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(open("profiles/test.yaml").read() + "methods: [sft, ppo]\n")
    with pytest.raises(ProfileError, match="methods") as error:
        load_profile(str(bad))
    assert "ppo" in str(error.value) and "almost" in str(error.value)  # what was wrong, and what is allowed
    assert load_profile("test").methods == list(METHODS)  # no list: every method


def test_switching_a_method_off_moves_only_its_own_versions(tmp_path):
    task = load_task("sentiment")
    profile = load_profile("test")

    def versions(methods):
        env = Environment(build_resources(profile.model_copy(update={"methods": methods}), tmp_path))
        return {name: stage.input_versions(task, env) for name, stage in STAGES.items() if stage.reads}

    every, no_almost = versions(list(METHODS)), versions(["sft", "dpo", "rdpo", "dlma"])
    assert not any(key.startswith("methods.") for inputs in every.values() for key in inputs)  # old versions hold
    changed = {name for name in every if every[name] != no_almost[name]}
    assert changed == {"almost_responses"}  # the branch's root; the rest of ALMoST follows through its data
    only_sft = versions(["sft"])
    assert {name for name in every if every[name] != only_sft[name]} == {
        "almost_responses", "contrastive_pairs", "dpo_checkpoint", "rdpo_checkpoint", "dlma_checkpoint"}


def test_plan_counts_no_contrastive_call_when_dlma_is_off(tmp_path):
    """`dsc plan`'s cost: the study (no DLMA) once counted 128 contrastive calls its run would never make."""
    from dsc_assets.build.staleness import generation_cost

    task, profile = load_task("sentiment"), load_profile("test")

    def calls(methods):
        resources = build_resources(profile.model_copy(update={"methods": methods}), tmp_path)
        return {asset: cost.calls for asset, cost in generation_cost(task, resources["settings"], resources["llm"]).items()}

    every, no_dlma = calls(list(METHODS)), calls(["sft", "dpo"])
    assert every["contrastive_pairs"] == 2 * every["drafts"] > 0  # two affixes per train prompt, empty cache
    assert no_dlma["contrastive_pairs"] == 0 and no_dlma["drafts"] == every["drafts"]


def test_checks_of_an_off_branch_want_no_rows():
    task = load_task("sentiment")
    empty = pd.DataFrame(columns=["task", "prompt_id", "prompt", "positive", "negative"])
    assert report_for("contrastive_pairs", empty, task, methods=["sft"]).success
    assert not report_for("contrastive_pairs", empty, task).success  # DLMA on: an empty table fails
    row = pd.DataFrame([{"task": "sentiment", "prompt_id": "p", "prompt": "q", "positive": "a", "negative": "b"}])
    assert not report_for("contrastive_pairs", row, task, methods=["sft"]).success


def test_a_run_without_dlma_and_almost_makes_no_model_call_for_them(tmp_path):
    root = private_tasks(tmp_path / "prompts", {"sentiment": 3})
    profile = tmp_path / "sft_only.yaml"
    profile.write_text(open("profiles/test.yaml").read() + "methods: [sft, dpo]\n")
    (tmp_path / "dagster").mkdir()
    env = {"DSC_PROFILE": str(profile), "DSC_PROMPTS_DIR": str(root), "DSC_HOME": str(tmp_path / "home"),
           "DAGSTER_HOME": str(tmp_path / "dagster")}
    branches = ("raw_prompts,contrastive_pairs,self_reward_scores,dlma_pairs,dlma_checkpoint,almost_responses,"
                "synthetic_comparisons,reward_model,rmsp_demonstrations,almost_sft_checkpoint")
    run = run_cli(["dsc", "run", "--tasks", "sentiment", "--select", branches], env, timeout=600)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    with duckdb.connect(str(tmp_path / "home" / "warehouse.duckdb"), read_only=True) as con:
        for table in ("contrastive_pairs", "self_reward_scores", "dlma_pairs", "almost_responses", "rmsp_demonstrations"):
            assert con.execute(f"SELECT count(*) FROM dsc.{table}").fetchone()[0] == 0, table
        dlma = con.execute("SELECT status FROM dsc.dlma_checkpoint").fetchone()[0]
        almost_sft = con.execute("SELECT status FROM dsc.almost_sft_checkpoint").fetchone()[0]
    assert dlma == "skipped: not in the profile's methods" and almost_sft.startswith("skipped")
    cache = tmp_path / "home" / "cache.duckdb"
    if cache.exists():  # nothing was generated or scored for the branches that are off
        with duckdb.connect(str(cache), read_only=True) as con:
            tables = [r[0] for r in con.execute("SELECT table_name FROM information_schema.tables").fetchall()]
            assert sum(con.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in tables) == 0
    gate = run_cli(["dsc", "gate", "--tasks", "sentiment", "--check-only", "--assets", "dlma_pairs,rmsp_demonstrations"], env)
    assert gate.returncode == 0, gate.stdout[-3000:] + gate.stderr[-3000:]


def test_an_empty_first_partition_leaves_a_table_and_the_next_rows_their_types(tmp_path):
    import dagster as dg

    from resources.stores import WarehouseIOManager

    parts = dg.StaticPartitionsDefinition(["off", "on"])

    @dg.asset(partitions_def=parts, metadata={"partition_expr": "task"})
    def branch(context) -> pd.DataFrame:
        rows = [] if context.partition_key == "off" else [{"task": "on", "n": 3, "x": 0.5}]
        return pd.DataFrame(rows, columns=["task", "n", "x"])

    @dg.asset(partitions_def=parts)
    def reader(branch: pd.DataFrame) -> None:
        assert list(branch.columns) == ["task", "n", "x"]

    manager = WarehouseIOManager(database=str(tmp_path / "w.duckdb"), schema="dsc")
    for key in ("off", "on"):  # "off" first: dagster-duckdb alone would create no table and fail the reader
        assert dg.materialize([branch, reader], partition_key=key, resources={"io_manager": manager}).success
    with duckdb.connect(str(tmp_path / "w.duckdb"), read_only=True) as con:
        types = dict(con.execute("SELECT column_name, data_type FROM information_schema.columns "
                                 "WHERE table_name = 'branch'").fetchall())
    assert types["n"] == "BIGINT" and types["x"] == "DOUBLE"  # not the placeholder types of the empty output


def test_a_partition_with_a_new_column_joins_a_table_written_before_it(tmp_path):
    import dagster as dg

    from resources.stores import WarehouseIOManager

    parts = dg.StaticPartitionsDefinition(["old", "new"])

    @dg.asset(partitions_def=parts, metadata={"partition_expr": "task"})
    def table(context) -> pd.DataFrame:
        row = {"task": context.partition_key, "score": 1.5}
        if context.partition_key == "new":  # this version of the asset gained a column
            row = {"task": "new", "guard_rate": 0.25, "score": 2.5}
        return pd.DataFrame([row])

    manager = WarehouseIOManager(database=str(tmp_path / "w.duckdb"), schema="dsc")
    for key in ("old", "new", "old"):
        assert dg.materialize([table], partition_key=key, resources={"io_manager": manager}).success
    with duckdb.connect(str(tmp_path / "w.duckdb"), read_only=True) as con:
        rows = con.execute("SELECT task, score, guard_rate FROM dsc.table ORDER BY task").fetchall()
    assert rows == [("new", 2.5, 0.25), ("old", 1.5, None)]
