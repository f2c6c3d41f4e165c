"""A profile's `methods` list: a method that is off builds no rows and trains nothing, its checks accept exactly
that, and only its own assets' versions move (every method on keeps the versions a profile had before the list)."""

from __future__ import annotations

import duckdb

from dsc_assets.definitions import build_resources
from dsc_assets.lib.profiles import load_profile
from dsc_assets.lib.tasks import load_task
from dsc_assets_tests.conftest import private_tasks, run_cli
from resources.settings import METHODS


def test_plan_counts_no_contrastive_call_when_dlma_is_off(tmp_path):
    """`dsc plan`'s cost: the study (no DLMA) once counted 128 contrastive calls its run would never make."""
    from dsc_assets.build.cost import run_cost
    from dsc_assets.defs.inputs import Environment

    task, profile = load_task("sentiment"), load_profile("test")

    def calls(methods):
        resources = build_resources(profile.model_copy(update={"methods": methods}), tmp_path)
        return {asset: cost.calls for asset, cost in run_cost(task, Environment(resources)).items()}

    every, no_dlma = calls(list(METHODS)), calls(["sft", "dpo"])
    assert every["contrastive_pairs"] == 2 * every["drafts"] > 0  # two affixes per train prompt, empty cache
    assert no_dlma.get("contrastive_pairs", 0) == 0 and no_dlma["drafts"] == every["drafts"]


def test_a_run_without_dlma_and_almost_makes_no_model_call_for_them(tmp_path):
    root = private_tasks(tmp_path / "prompts", {"sentiment": 3})
    profile = tmp_path / "sft_only.yaml"
    profile.write_text(open("profiles/test.yaml").read() + "methods: [sft, dpo]\n")
    (tmp_path / "dagster").mkdir()
    env = {
        "DSC_PROFILE": str(profile),
        "DSC_PROMPTS_DIR": str(root),
        "DSC_HOME": str(tmp_path / "home"),
        "DAGSTER_HOME": str(tmp_path / "dagster"),
    }
    branches = (
        "raw_prompts,contrastive_pairs,self_reward_scores,dlma_pairs,dlma_checkpoint,almost_responses,"
        "synthetic_comparisons,reward_model,rmsp_demonstrations,almost_sft_checkpoint"
    )
    run = run_cli(["dsc", "run", "--tasks", "sentiment", "--select", branches], env, timeout=600)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    with duckdb.connect(str(tmp_path / "home" / "warehouse.duckdb"), read_only=True) as con:
        for table in (
            "contrastive_pairs",
            "self_reward_scores",
            "dlma_pairs",
            "almost_responses",
            "rmsp_demonstrations",
        ):
            assert con.execute(f"SELECT count(*) FROM dsc.{table}").fetchone()[0] == 0, table
        dlma = con.execute("SELECT status FROM dsc.dlma_checkpoint").fetchone()[0]
        almost_sft = con.execute("SELECT status FROM dsc.almost_sft_checkpoint").fetchone()[0]
    assert dlma == "skipped: not in the profile's methods" and almost_sft.startswith("skipped")
    cache = tmp_path / "home" / "cache.duckdb"
    if cache.exists():  # nothing was generated or scored for the branches that are off
        with duckdb.connect(str(cache), read_only=True) as con:
            tables = [r[0] for r in con.execute("SELECT table_name FROM information_schema.tables").fetchall()]
            assert sum(con.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in tables) == 0
    gate = run_cli(
        ["dsc", "gate", "--tasks", "sentiment", "--check-only", "--assets", "dlma_pairs,rmsp_demonstrations"], env
    )
    assert gate.returncode == 0, gate.stdout[-3000:] + gate.stderr[-3000:]
