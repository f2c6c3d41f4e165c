"""A profile's `methods` list: a method that is off builds no rows and trains nothing, its checks accept exactly
that, and only its own assets' versions move (every method on keeps the versions a profile had before the list)."""

from __future__ import annotations

import duckdb
import pandas as pd
import pytest

from dsc_assets.definitions import build_resources
from dsc_assets.defs.inputs import Environment
from dsc_assets.defs.stage import STAGES
from dsc_assets.lib.profiles import ProfileError, load_profile
from dsc_assets.lib.suites import report_for
from dsc_assets.lib.tasks import load_task
from resources.settings import DEFAULT_METHODS


def test_profile_names_an_unknown_method(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(open("profiles/test.yaml").read() + "methods: [sft, ppo]\n")
    with pytest.raises(ProfileError, match="methods") as error:
        load_profile(str(bad))
    assert "ppo" in str(error.value) and "almost" in str(error.value)  # what was wrong, and what is allowed
    assert load_profile("test").methods == list(DEFAULT_METHODS)  # no list: every method but the placebo control


def test_switching_a_method_off_moves_only_its_own_versions(tmp_path):
    task = load_task("sentiment")
    profile = load_profile("test")

    def versions(methods):
        env = Environment(build_resources(profile.model_copy(update={"methods": methods}), tmp_path))
        return {name: stage.input_versions(task, env) for name, stage in STAGES.items() if stage.reads}

    every, no_almost = versions(list(DEFAULT_METHODS)), versions(["sft", "dpo", "rdpo", "dlma"])
    # old versions hold: only the placebo control's own assets, off by default, read their switch
    assert {name for name, inputs in every.items() if any(key.startswith("methods.") for key in inputs)} == {
        "placebo_dataset",
        "placebo_checkpoint",
    }
    changed = {name for name in every if every[name] != no_almost[name]}
    assert changed == {"almost_responses"}  # the branch's root; the rest of ALMoST follows through its data
    only_sft = versions(["sft"])
    assert {name for name in every if every[name] != only_sft[name]} == {
        "almost_responses",
        "contrastive_pairs",
        "dpo_checkpoint",
        "rdpo_checkpoint",
        "dlma_checkpoint",
    }


def test_checks_of_an_off_branch_want_no_rows():
    task = load_task("sentiment")
    empty = pd.DataFrame(columns=["task", "prompt_id", "prompt", "positive", "negative"])
    assert report_for("contrastive_pairs", empty, task, methods=["sft"]).success
    assert not report_for("contrastive_pairs", empty, task).success  # DLMA on: an empty table fails
    row = pd.DataFrame([{"task": "sentiment", "prompt_id": "p", "prompt": "q", "positive": "a", "negative": "b"}])
    assert not report_for("contrastive_pairs", row, task, methods=["sft"]).success


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
        types = dict(
            con.execute(
                "SELECT column_name, data_type FROM information_schema.columns WHERE table_name = 'branch'"
            ).fetchall()
        )
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
