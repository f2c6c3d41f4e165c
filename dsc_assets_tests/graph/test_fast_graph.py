"""The fast layer's graph test: the dSC data chain (and DLMA's contrastive answers) of one task, with the real
asset code, checks, warehouse, cache and reward scorer, and the model's answers replayed from a recording of the
real 135M model (dsc_assets_tests/recorded.py). Seconds instead of minutes; the real-model layer runs the same
chain for real (test_pipeline, test_incremental)."""

from __future__ import annotations

import subprocess

import dagster as dg
import duckdb
import pandas as pd
import pytest
from datasets import load_from_disk
from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

from dsc_assets.definitions import all_assets, all_checks, build_resources
from dsc_assets.lib.acceptance import metropolis_hastings, uniform_draw
from dsc_assets.lib.profiles import load_profile
from dsc_assets.lib.tasks import load_task
from dsc_assets_tests.conftest import PROJECT_ROOT
from dsc_assets_tests.recorded import RECORDED_TASK, RecordedLLM, load_recording
from resources import stores
from resources.llm import GenerationError

CHAIN = [
    "raw_prompts",
    "drafts",
    "critiques",
    "revisions",
    "reward_scores",
    "accepted_samples",
    "preference_pairs",
    "sft_dataset",
    "dpo_dataset",
    "contrastive_pairs",
]


def _defs(home) -> dg.Definitions:
    resources = build_resources(load_profile("test"), home)
    resources["llm"] = RecordedLLM(cache_path=str(home / "cache.duckdb"))
    return dg.Definitions(
        assets=all_assets, asset_checks=all_checks, resources=resources, executor=dg.in_process_executor
    )


def _materialize(defs, instance, raise_on_error=True):
    return defs.resolve_implicit_global_asset_job_def().execute_in_process(
        partition_key=RECORDED_TASK,
        instance=instance,
        raise_on_error=raise_on_error,
        asset_selection=[dg.AssetKey(name) for name in CHAIN],
    )


def _table(home, asset: str) -> pd.DataFrame:
    stores.close_all()
    with duckdb.connect(str(home / "warehouse.duckdb"), read_only=True) as con:
        return con.execute(f"SELECT * FROM dsc.{asset} WHERE task = ?", [RECORDED_TASK]).df()


def _metadata(result, asset: str) -> dict:
    [event] = [e for e in result.get_asset_materialization_events() if e.asset_key.path[-1] == asset]
    return {k: v.value for k, v in event.materialization.metadata.items()}


def test_recorded_chain_builds_checks_and_rebuilds_nothing(dsc_home):
    header, answers = load_recording(str(RecordedLLM().recording))
    defs, instance = _defs(dsc_home), dg.DagsterInstance.ephemeral()
    result = _materialize(defs, instance)
    assert result.success
    assert {e.asset_key.path[-1] for e in result.get_asset_materialization_events()} == set(CHAIN)
    evaluations = result.get_asset_check_evaluations()
    assert evaluations and all(e.passed for e in evaluations), [e.check_name for e in evaluations if not e.passed]

    # Every recorded answer was asked for once, and nothing else was: the chain's requests are the recorded ones.
    calls = {
        asset: _metadata(result, asset)["model_calls"]
        for asset in ("drafts", "critiques", "revisions", "contrastive_pairs")
    }
    train = _table(dsc_home, "raw_prompts").query("split == 'train'")
    assert calls == {
        "drafts": len(train),
        "critiques": len(train),
        "revisions": len(train),
        "contrastive_pairs": 2 * len(train),
    }
    assert sum(calls.values()) == len(answers)
    # Every materialization records the commit of the code that made it (`dsc report` names them).
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=PROJECT_ROOT, capture_output=True, text=True).stdout.strip()
    assert {_metadata(result, asset)["code_commit"].split(" ")[0] for asset in CHAIN} == {head or "unknown"}

    # The reward is the real scorer's on the replayed texts; the chain's decision is the MH rule with its seeded draw.
    rewards = _table(dsc_home, "reward_scores")
    vader = SentimentIntensityAnalyzer()
    assert rewards["reward"].tolist() == pytest.approx([vader.polarity_scores(t)["compound"] for t in rewards["text"]])
    acceptance = load_task(RECORDED_TASK).spec.acceptance
    accepted = _table(dsc_home, "accepted_samples").set_index("prompt_id")
    for prompt_id, row in accepted.iterrows():
        decision = metropolis_hastings(
            row["draft_reward"],
            row["revision_reward"],
            acceptance.temperature,
            uniform_draw(acceptance.seed, RECORDED_TASK, prompt_id, 1),
        )
        assert row["accepted"] == decision.accepted
        assert row["sample"] == (row["revision"] if decision.accepted else row["draft"])
    pairs = _table(dsc_home, "preference_pairs").set_index("prompt_id")
    kept = accepted[
        accepted["accepted"]
        & (accepted["sample"].str.strip() != accepted["draft"].str.strip())
        & (accepted["revision_reward"] > accepted["draft_reward"])
    ]
    assert sorted(pairs.index) == sorted(kept.index)
    assert (pairs["chosen"] == kept.loc[pairs.index, "revision"]).all()
    assert (pairs["rejected"] == kept.loc[pairs.index, "draft"]).all()
    sft = _table(dsc_home, "sft_dataset")
    records = load_from_disk(sft["dataset_path"].iloc[0]).to_list() if len(sft) else []
    assert len(records) == int(accepted["accepted"].sum())
    assert all([m["role"] for m in r["messages"]] == ["system", "user", "assistant"] for r in records)

    # The same chain again: every answer from the cache, the same tables (no model call, no changed row).
    before = {asset: _table(dsc_home, asset) for asset in ("drafts", "accepted_samples", "preference_pairs")}
    again = _materialize(_defs(dsc_home), instance)
    assert again.success
    assert all(
        _metadata(again, a)["model_calls"] == 0 for a in ("drafts", "critiques", "revisions", "contrastive_pairs")
    )
    assert _metadata(again, "drafts")["cache_hits"] == len(train)
    for asset, table in before.items():
        pd.testing.assert_frame_equal(
            _table(dsc_home, asset).drop(columns=["cached"], errors="ignore"),
            table.drop(columns=["cached"], errors="ignore"),
        )


def test_an_unrecorded_request_is_a_clear_error_and_keeps_what_was_built(dsc_home, prompts_copy):
    defs, instance = _defs(dsc_home), dg.DagsterInstance.ephemeral()
    assert _materialize(defs, instance).success
    drafts = _table(dsc_home, "drafts")
    task_file = prompts_copy / RECORDED_TASK / "task.yaml"
    text = task_file.read_text()
    template = "revision_template: |-\n  "
    assert text.count(template) == 1
    task_file.write_text(text.replace(template, template + "Rewrite it once more. "))
    assert load_task(RECORDED_TASK).spec.revision_template.startswith("Rewrite it once more. ")

    result = _materialize(_defs(dsc_home), instance, raise_on_error=False)
    assert not result.success
    [failure] = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    assert failure.step_key == "revisions"
    message = str(failure.event_specific_data.error)
    assert "no recorded answer for request" in message and "python -m dsc_assets_tests.recorded" in message
    assert GenerationError.__name__ in message
    # Drafts and critiques came from the cache and are unchanged; the old revisions table is still there.
    assert _metadata(result, "drafts")["model_calls"] == 0
    pd.testing.assert_frame_equal(_table(dsc_home, "drafts").drop(columns=["cached"]), drafts.drop(columns=["cached"]))
    assert len(_table(dsc_home, "revisions")) == len(drafts)


def test_a_pair_states_a_preference_only_where_the_reward_does():
    """preference_pairs keeps accepted revisions that changed the text and scored strictly higher than their draft:
    Metropolis-Hastings' accepted ties and slightly worse revisions are SFT samples, not DPO pairs."""
    from dsc_assets.defs.rewards.assets import preference_pairs

    rows = pd.DataFrame(
        {
            "task": "sentiment",
            "prompt_id": ["gain", "tie", "worse", "rejected", "unchanged"],
            "prompt": "Review Jaws.",
            "draft": ["d1", "d2", "d3", "d4", "same"],
            "revision": ["r1", "r2", "r3", "r4", "same"],
            "sample": ["r1", "r2", "r3", "d4", "same"],
            "accepted": [True, True, True, False, True],
            "draft_reward": [0.1, 0.5, 0.5, 0.1, 0.2],
            "revision_reward": [0.6, 0.5, 0.45, 0.9, 0.9],
            "sample_reward": [0.6, 0.5, 0.45, 0.1, 0.9],
        }
    )
    out = preference_pairs(dg.build_asset_context(partition_key="sentiment"), accepted_samples=rows)
    assert out.value[["prompt_id", "chosen", "rejected"]].values.tolist() == [["gain", "r1", "d1"]]
    assert out.value["margin"].tolist() == pytest.approx([0.5])
    assert out.metadata["dropped_no_margin"].value == 2 and out.metadata["dropped_unchanged"].value == 1


def test_a_pair_whose_revision_loses_what_its_draft_kept_is_dropped():
    """privacy's pair_guards: [place_kept]: a revision that drops the story's town is no preference to learn."""
    from dsc_assets.defs.rewards.assets import preference_pairs

    prompt = "Write a local news story about the bakery fire in Provo, Utah, naming the owner."
    rows = pd.DataFrame(
        {
            "task": "privacy",
            "prompt_id": ["kept", "lost"],
            "prompt": prompt,
            "draft": ["Jane Roe's bakery in Provo burned.", "Jane Roe's bakery in Provo burned down."],
            "revision": ["A bakery in Provo burned.", "A bakery burned down."],
            "draft_reward": [-1.0, -1.0],
            "revision_reward": [0.0, 0.0],
            "accepted": True,
        }
    ).assign(sample=lambda df: df["revision"], sample_reward=lambda df: df["revision_reward"])
    out = preference_pairs(dg.build_asset_context(partition_key="privacy"), accepted_samples=rows)
    assert out.value["prompt_id"].tolist() == ["kept"]
    assert out.metadata["dropped_by_guard"].value == 1
