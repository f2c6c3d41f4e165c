"""`dsc gate`: a verdict per asset that covers its whole upstream. A fast layer on hand-written tables, then a
planted bad batch end to end with the tiny model (one materialization, several assertions)."""

from __future__ import annotations

import json
import re

import pandas as pd

from dsc_assets.build.gate import BLOCKED, FAILED, MISSING, OK, STALE, gate_verdicts
from dsc_assets.lib.suites import report_for
from dsc_assets.lib.tasks import load_task
from dsc_assets_tests.conftest import run_cli
from dsc_assets_tests.graph.test_checks import GOOD, LOOP, PROMPTS, _drafts

UPSTREAM = {
    "drafts": ["raw_prompts"],
    "critiques": ["drafts"],
    "revisions": ["critiques", "drafts"],
    "contrastive_pairs": ["raw_prompts"],
    "self_reward_scores": ["contrastive_pairs"],
    "dlma_pairs": ["self_reward_scores"],
    "reward_scores": ["drafts", "revisions"],
    "accepted_samples": ["reward_scores"],
    "preference_pairs": ["accepted_samples"],
    "sft_dataset": ["accepted_samples"],
    "dpo_dataset": ["preference_pairs"],
}


CRITIQUES = [
    "It only lists flaws; mention the score and the suspense to sound warmer.",
    "Too harsh on the romance: praise the ship's scale and the costumes instead.",
    "Name one thing that works, such as the dancing, before the complaints.",
    "Add a kind word about the cult following so it reads as affectionate.",
]


def _raw_prompts(n=4):
    return pd.DataFrame(
        {"task": "sentiment", "prompt_id": [f"p{i}" for i in range(n)], "prompt": PROMPTS[:n], "split": "train"}
    )


def test_a_failed_upstream_blocks_and_a_moved_upstream_makes_stale():
    task = load_task("sentiment")
    critiques = _drafts(CRITIQUES).assign(kind="critique", step=1, source=GOOD)
    tables = {
        "raw_prompts": _raw_prompts(),
        "drafts": _drafts([PROMPTS[0], LOOP, "", PROMPTS[3]]),
        "critiques": critiques,
        "contrastive_pairs": pd.DataFrame(columns=["task", "prompt_id"]),
    }
    verdicts = gate_verdicts(
        task,
        tables.get,
        lambda asset: asset == "contrastive_pairs",
        {"critiques": ["upstream data changed: drafts"]},
        UPSTREAM,
        None,
        {},
    )
    assert verdicts["raw_prompts"].status == OK
    assert verdicts["drafts"].status == FAILED and verdicts["drafts"].failed_checks == ["drafts_quality"]
    critique = verdicts["critiques"]
    assert critique.report.success, critique.report.to_markdown()  # its own suite passes: the verdict is not OK
    assert critique.status == BLOCKED
    assert "upstream check failed: drafts_quality" in critique.reasons
    assert "built from an older drafts (drafts changed since)" in critique.reasons
    assert verdicts["revisions"].status == MISSING  # no table
    # materialized with no rows: the suite says why (min_rows), not MISSING
    assert verdicts["contrastive_pairs"].status == FAILED

    fresh = gate_verdicts(
        task,
        {"raw_prompts": _raw_prompts(), "drafts": _drafts(GOOD)}.get,
        lambda asset: True,
        {"drafts": ["inputs changed: task.system_prompt"]},
        UPSTREAM,
    )
    assert fresh["drafts"].status == STALE and "inputs changed: task.system_prompt" in fresh["drafts"].reasons
    assert fresh["raw_prompts"].status == OK and fresh["critiques"].status == MISSING
    # rows written outside any recorded run: no lineage, not trusted
    unrecorded = gate_verdicts(
        task, {"raw_prompts": _raw_prompts()}.get, lambda asset: False, {"raw_prompts": ["missing"]}, UPSTREAM
    )
    assert unrecorded["raw_prompts"].status == STALE
    assert "no materialization recorded" in unrecorded["raw_prompts"].reasons[0]


def test_data_asset_suites_check_schema_split_and_dataset_folder(tmp_path):
    from datasets import Dataset

    task = load_task("sentiment")
    bad_split = _raw_prompts().assign(split=["train", "validation", "test", "test"])
    failed = {o.expectation for o in report_for("raw_prompts", bad_split, task).failed()}
    assert failed == {"expect_column_values_to_be_in_set"}
    only_test = report_for("raw_prompts", _raw_prompts().assign(split="test"), task)
    assert [o.expectation for o in only_test.failed()] == ["train_rows at least 1"]
    renamed = report_for("raw_prompts", _raw_prompts().rename(columns={"prompt": "text"}), task)
    assert not renamed.success and renamed.failed()[0].observed == "missing prompt"

    records = [
        {
            "prompt_id": f"p{i}",
            "messages": [
                {"role": "system", "content": "s"},
                {"role": "user", "content": p},
                {"role": "assistant", "content": GOOD[i]},
            ],
        }
        for i, p in enumerate(PROMPTS)
    ]
    Dataset.from_list(records).save_to_disk(str(tmp_path / "sft"))
    sft = pd.DataFrame(
        {
            "task": "sentiment",
            "prompt_id": [r["prompt_id"] for r in records],
            "messages": [json.dumps(r["messages"]) for r in records],
            "dataset_path": str(tmp_path / "sft"),
        }
    )
    assert report_for("sft_dataset", sft, task).success
    gone = report_for("sft_dataset", sft.assign(dataset_path=str(tmp_path / "nowhere")), task)
    assert [o.expectation for o in gone.failed()] == ["dataset folder readable by datasets.load_from_disk"]
    extra_row = pd.concat([sft, sft.iloc[:1].assign(prompt_id="p9")], ignore_index=True)
    assert [o.expectation for o in report_for("sft_dataset", extra_row, task).failed()] == [
        "dataset rows match the table rows"
    ]
    no_answer = sft.assign(messages=[json.dumps(r["messages"][:2]) for r in records])
    assert "expect_messages_to_be_system_user_assistant" in {
        o.expectation for o in report_for("sft_dataset", no_answer, task).failed()
    }


def test_gate_exit_codes_for_missing_tables_and_usage_errors(tmp_path):
    env = {"DSC_PROFILE": "test", "DSC_HOME": str(tmp_path / "home"), "DAGSTER_HOME": str(tmp_path)}
    missing = run_cli(["dsc", "gate", "--partition", "sentiment", "--check-only", "--assets", "drafts"], env)
    assert missing.returncode == 1, missing.stdout[-2000:] + missing.stderr[-2000:]
    assert (
        re.search(r"drafts\s+MISSING\s+no table yet", missing.stdout) and "sentiment: drafts MISSING" in missing.stdout
    )
    usage = run_cli(["dsc", "gate", "--partition", "sentiment", "--check-only", "--assets", "sft_checkpoint"], env)
    assert usage.returncode == 2 and "no quality suite for sft_checkpoint" in usage.stderr.splitlines()[0]


def test_the_gate_names_a_training_step_above_that_skipped_or_failed():
    """ALMoST's best-of-N needs the reward model: when it skipped itself (every comparison filtered out) the gate's
    line for the empty table says so, with the reason; when it never got built (its step crashed), that instead of a
    bare "no rows"."""
    task = load_task("sentiment")
    upstream = {"rmsp_demonstrations": ["raw_prompts", "reward_model"], "reward_model": ["synthetic_comparisons"]}
    skipped = pd.DataFrame(
        [{"task": "sentiment", "status": "skipped: all 20 comparisons are longer than trainer.max_length=96 tokens"}]
    )
    empty_rmsp = pd.DataFrame(
        columns=["task", "prompt_id", "prompt", "response", "rm_score", "candidates", "candidate_scores"]
    )
    tables = {"raw_prompts": _raw_prompts(), "reward_model": skipped, "rmsp_demonstrations": empty_rmsp}
    only = {"raw_prompts", "rmsp_demonstrations"}
    verdict = gate_verdicts(task, tables.get, lambda asset: True, {}, upstream, None, {}, only=only)[
        "rmsp_demonstrations"
    ]
    assert (
        "upstream reward_model skipped: all 20 comparisons are longer than trainer.max_length=96 tokens"
        in verdict.reasons
    )

    crashed = gate_verdicts(
        task,
        {"raw_prompts": _raw_prompts(), "rmsp_demonstrations": empty_rmsp}.get,
        lambda asset: asset == "raw_prompts",
        {},
        upstream,
        None,
        {},
        only=only,
    )
    assert crashed["rmsp_demonstrations"].status == MISSING
    assert any(
        r.startswith("upstream reward_model was not built: its step failed")
        for r in crashed["rmsp_demonstrations"].reasons
    ), crashed["rmsp_demonstrations"].reasons
