"""The whole graph for one task with the tiny model: data, datasets, four checkpoints, evaluation."""

from __future__ import annotations

import json

import dagster as dg
import duckdb
import pandas as pd
from datasets import load_from_disk

from dsc_assets.build.cost import run_cost
from dsc_assets.build.plan_check import compare, write_estimate
from dsc_assets.definitions import build_definitions
from dsc_assets.defs.inputs import Environment
from dsc_assets.lib import ledger
from dsc_assets.lib.profiles import load_profile
from dsc_assets.lib.stats import subset_table
from dsc_assets.lib.tasks import load_task
from resources import stores


def _table(home, asset: str) -> pd.DataFrame:
    with duckdb.connect(str(home / "warehouse.duckdb"), read_only=True) as con:
        return con.execute(f"SELECT * FROM dsc.{asset} WHERE task = 'sentiment'").df()


def test_full_graph_then_reproducible_evaluation(dsc_home, tmp_path):
    defs = build_definitions(load_profile("test"), dsc_home)
    planned = run_cost(load_task("sentiment"), Environment(defs.resources))  # what `dsc plan` counts, new home
    write_estimate(str(tmp_path / "plan.json"), {(a, "sentiment"): c for a, c in planned.items()}, "test")
    instance = dg.DagsterInstance.ephemeral()
    result = defs.resolve_job_def("dsc_job").execute_in_process(partition_key="sentiment", instance=instance)
    assert result.success
    # `dsc plan --against`: every planned asset that the run built has its step's measured wall time beside the
    # estimate (a new home measured no rate yet: the estimate is 0, the measurement is not).
    against = {row["asset"]: row for row in compare(str(tmp_path / "plan.json"), instance)}
    built = {e.asset_key.path[-1] for e in result.get_asset_materialization_events()}
    assert {"drafts", "sft_checkpoint", "evaluation"} <= built & set(against)
    assert all(against[asset]["measured"] > 0 for asset in built & set(against))
    assert against["sft_checkpoint"]["measured"] > against["reward_scores"]["measured"]  # training vs VADER
    # The run makes exactly the generations the plan counted and no more scores than it counted (scores of texts not
    # generated yet are an upper bound: two identical answers share one), counted from the cache afterwards.
    stores.close_all()
    with duckdb.connect(str(dsc_home / "cache.duckdb"), read_only=True) as con:
        made = dict(con.execute("SELECT kind, count(*) FROM calls GROUP BY kind").fetchall())
    assert made["chat"] == sum(cost.calls for cost in planned.values())
    assert 0 < made["score"] <= sum(cost.scores for cost in planned.values())
    materialized = {e.asset_key.path[-1] for e in result.get_asset_materialization_events()}
    assert {
        "reward_scores",
        "accepted_samples",
        "preference_pairs",
        "sft_dataset",
        "dpo_dataset",
        "dlma_pairs",
        "sft_checkpoint",
        "dpo_checkpoint",
        "rdpo_checkpoint",
        "dlma_checkpoint",
        "evaluation",
    } <= materialized
    assert all(e.passed for e in result.get_asset_check_evaluations())

    rewards = _table(dsc_home, "reward_scores")
    assert set(rewards["step"]) == {0, 1} and rewards["reward"].between(-1, 1).all()
    accepted = _table(dsc_home, "accepted_samples")
    # Greedy-ish acceptance (T = 0.05): a revision is kept only with a reward gain or a lucky draw.
    assert (
        accepted.loc[accepted["accepted"], "sample_reward"] >= accepted.loc[accepted["accepted"], "draft_reward"] - 0.5
    ).all()
    sft = _table(dsc_home, "sft_dataset")
    if len(sft):
        records = load_from_disk(sft["dataset_path"].iloc[0]).to_list()
        assert [m["role"] for m in records[0]["messages"]] == ["system", "user", "assistant"]

    evaluation = _table(dsc_home, "evaluation").set_index("model")
    assert "base" in evaluation.index and evaluation.loc["base", "difference_vs_base"] == 0.0
    assert "base_original" in evaluation.index  # the null control: the packaged student beside its exported copy
    assert (evaluation["samples_per_prompt"] == 2).all()  # rewards averaged over two seeded samples per prompt
    assert (evaluation.loc[["base", "base_original"], "mean_answer_words"] > 0).all()  # length beside the reward
    assert (
        evaluation[["on_topic_rate", "degenerate_rate", "refusal_rate"]]
        .drop(index="almost_rl vs almost_sft", errors="ignore")
        .notna()
        .all()
        .all()
    )
    trained = [m for m in ("sft", "dpo", "rdpo", "dlma") if m in evaluation.index]
    checkpoints = pd.concat([_table(dsc_home, f"{m}_checkpoint") for m in ("sft", "dpo", "rdpo", "dlma")])
    assert sorted(trained) == sorted(checkpoints.loc[checkpoints["status"] == "trained", "method"])
    assert "dlma" in trained  # DLMA pairs exist whenever some self-reward is positive
    assert (evaluation["prompts"] == evaluation.loc["base", "prompts"]).all()
    # The per-prompt results recompute the table: over every test prompt, the same differences and intervals.
    test_ids = _table(dsc_home, "raw_prompts").query("split == 'test'")["prompt_id"].tolist()
    assert json.loads(evaluation.loc["base", "per_prompt"])["prompt_id"] == test_ids
    seed = load_task("sentiment").spec.acceptance.seed
    everything = subset_table(evaluation.reset_index(), lambda prompt_id: True, seed=seed).set_index("model")
    columns = [
        "prompts",
        "mean_reward",
        "difference_vs_base",
        "ci95_low",
        "ci95_high",
        "win_rate_vs_base",
        "p_value",
        "on_topic_vs_base",
    ]
    models = [m for m in evaluation.index if m != "almost_rl vs almost_sft"]
    pd.testing.assert_frame_equal(everything.loc[models, columns], evaluation.loc[models, columns], check_dtype=False)
    report = (dsc_home / "artifacts" / "reports" / "sentiment" / "evaluation.md").read_text()
    assert "| model |" in report and "base" in report

    # Same seed, fresh cache: the evaluation generates again and gets the same numbers.
    stores.close_all()
    (dsc_home / "cache.duckdb").unlink()
    again = defs.resolve_implicit_global_asset_job_def().execute_in_process(
        partition_key="sentiment",
        instance=instance,
        asset_selection=[dg.AssetKey("evaluation")],
    )
    assert again.success
    pd.testing.assert_frame_equal(_table(dsc_home, "evaluation").set_index("model"), evaluation)
    # Both evaluations answered the test split: two looks in the home's ledger, each naming its run and profile.
    looks = ledger.looks(dsc_home / ledger.FILE, "sentiment")
    assert [look["run_id"] for look in looks] == [result.run_id, again.run_id]
    assert {look["profile"] for look in looks} == {"test"} and len({look["profile_sha"] for look in looks}) == 1
    assert looks[0]["prompts"] == evaluation.loc["base", "prompts"] and looks[0]["samples"] == 2
    assert set(looks[0]["models"]) == {m for m in evaluation.index if m != "almost_rl vs almost_sft"}
