"""`dsc gate`: a verdict per asset that covers its whole upstream. A fast layer on hand-written tables, then a
planted bad batch end to end with the tiny model (one materialization, several assertions)."""

from __future__ import annotations

import json
import re

import pandas as pd
import pytest
import yaml

from dsc_assets.build.gate import BLOCKED, FAILED, MISSING, OK, STALE, gate_verdicts
from dsc_assets.lib.suites import report_for
from dsc_assets.lib.tasks import load_task
from dsc_assets_tests.conftest import PROJECT_ROOT, run_cli
from dsc_assets_tests.test_checks import GOOD, LOOP, PROMPTS, _drafts

UPSTREAM = {"drafts": ["raw_prompts"], "critiques": ["drafts"], "revisions": ["critiques", "drafts"],
            "contrastive_pairs": ["raw_prompts"], "self_reward_scores": ["contrastive_pairs"],
            "dlma_pairs": ["self_reward_scores"], "reward_scores": ["drafts", "revisions"],
            "accepted_samples": ["reward_scores"], "preference_pairs": ["accepted_samples"],
            "sft_dataset": ["accepted_samples"], "dpo_dataset": ["preference_pairs"]}


CRITIQUES = [
    "It only lists flaws; mention the score and the suspense to sound warmer.",
    "Too harsh on the romance: praise the ship's scale and the costumes instead.",
    "Name one thing that works, such as the dancing, before the complaints.",
    "Add a kind word about the cult following so it reads as affectionate.",
]


def _raw_prompts(n=4):
    return pd.DataFrame({"task": "sentiment", "prompt_id": [f"p{i}" for i in range(n)], "prompt": PROMPTS[:n],
                         "split": "train"})


def test_a_failed_upstream_blocks_and_a_moved_upstream_makes_stale():
    task = load_task("sentiment")
    critiques = _drafts(CRITIQUES).assign(kind="critique", step=1, source=GOOD)
    tables = {"raw_prompts": _raw_prompts(), "drafts": _drafts([PROMPTS[0], LOOP, "", PROMPTS[3]]),
              "critiques": critiques, "contrastive_pairs": pd.DataFrame(columns=["task", "prompt_id"])}
    verdicts = gate_verdicts(task, tables.get, lambda asset: asset == "contrastive_pairs",
                             {"critiques": ["upstream data changed: drafts"]}, UPSTREAM, None, {})
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

    fresh = gate_verdicts(task, {"raw_prompts": _raw_prompts(), "drafts": _drafts(GOOD)}.get, lambda asset: True,
                          {"drafts": ["inputs changed: task.system_prompt"]}, UPSTREAM)
    assert fresh["drafts"].status == STALE and "inputs changed: task.system_prompt" in fresh["drafts"].reasons
    assert fresh["raw_prompts"].status == OK and fresh["critiques"].status == MISSING
    # rows written outside any recorded run: no lineage, not trusted
    unrecorded = gate_verdicts(task, {"raw_prompts": _raw_prompts()}.get, lambda asset: False,
                               {"raw_prompts": ["missing"]}, UPSTREAM)
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

    records = [{"prompt_id": f"p{i}", "messages": [{"role": "system", "content": "s"}, {"role": "user", "content": p},
                                                 {"role": "assistant", "content": GOOD[i]}]} for i, p in enumerate(PROMPTS)]
    Dataset.from_list(records).save_to_disk(str(tmp_path / "sft"))
    sft = pd.DataFrame({"task": "sentiment", "prompt_id": [r["prompt_id"] for r in records],
                        "messages": [json.dumps(r["messages"]) for r in records], "dataset_path": str(tmp_path / "sft")})
    assert report_for("sft_dataset", sft, task).success
    gone = report_for("sft_dataset", sft.assign(dataset_path=str(tmp_path / "nowhere")), task)
    assert [o.expectation for o in gone.failed()] == ["dataset folder readable by datasets.load_from_disk"]
    extra_row = pd.concat([sft, sft.iloc[:1].assign(prompt_id="p9")], ignore_index=True)
    assert [o.expectation for o in report_for("sft_dataset", extra_row, task).failed()] == ["dataset rows match the table rows"]
    no_answer = sft.assign(messages=[json.dumps(r["messages"][:2]) for r in records])
    assert "expect_messages_to_be_system_user_assistant" in {o.expectation for o in report_for("sft_dataset", no_answer, task).failed()}


def _profile(tmp_path, name, **overrides):
    """The test profile, two train prompts, with its quality overrides replaced (the shipped thresholds for the keys
    left out)."""
    profile = yaml.safe_load((PROJECT_ROOT / "profiles" / "test.yaml").read_text())
    profile.update(quality_overrides=overrides, max_prompts_per_task=2, max_eval_prompts_per_task=1, max_tokens_cap=24)
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(profile))
    return str(path)


RELAXED = dict(min_rows=0, min_chars=0, max_repetition=1.0, max_echo=1.0, max_source_echo=1.0, max_unchanged_rate=1.0,
               max_template_echo=1.0, max_duplicate_rate=1.0, min_acceptance_rate=0.0)
# A bad batch: the system prompt asks for a loop and the sampling rewards repeats (the 135M model ignores a system
# prompt alone; with repeat_penalty 0.5 it loops on every prompt: repetition 0.7 to 0.93, measured).
LOOPING = {"system_prompt": "Whatever the user asks, reply with the single word no repeated fifty times: no no no no",
           "sampling": {"temperature": 0.7, "top_p": 0.95, "max_tokens": 200, "seed": 1234, "repeat_penalty": 0.5}}


def test_planted_bad_batch_blocks_the_downstream_assets_a_ci_job_gates_on(tmp_path, prompts_copy):
    (tmp_path / "dagster").mkdir()
    env = {"DSC_HOME": str(tmp_path / "home"), "DAGSTER_HOME": str(tmp_path / "dagster"), "DSC_PROMPTS_DIR": str(prompts_copy)}
    gate = ["dsc", "gate", "--partition", "sentiment", "--assets", "critiques,revisions,preference_pairs", "--profile"]

    # 1. A first build passes the gate under rules the 135M model can meet (the gate builds what it judges).
    first = run_cli(gate + [_profile(tmp_path, "relaxed", **RELAXED)], env)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    assert "dsc gate: passed" in first.stdout and "contrastive_pairs" not in first.stdout

    # 2. A bad batch; a loop detector that means it (max_repetition 0.5). The CI job gates on downstream assets only.
    task_yaml = prompts_copy / "sentiment" / "task.yaml"
    task_yaml.write_text(yaml.safe_dump({**yaml.safe_load(task_yaml.read_text()), **LOOPING}, sort_keys=False))
    second = run_cli(gate + [_profile(tmp_path, "strict", **{**RELAXED, "max_repetition": 0.5})], env)
    out = second.stdout
    assert second.returncode == 1, out[-3000:] + second.stderr[-3000:]
    for asset in ("critiques", "revisions", "preference_pairs"):
        line = next(line for line in out.splitlines() if line.strip().startswith(asset))
        assert re.match(rf"\s+{asset}\s+BLOCKED\s", line) and "upstream check failed: drafts_quality" in line, line
    assert "built from an older drafts" in out  # critiques' rows are those of the first build
    assert "upstream drafts FAILED" in out and "text_repetition" in out
    assert "dsc gate: FAILED" in out and "sentiment: critiques BLOCKED" in out
    assert "Stack Trace" not in second.stderr and "DagsterExecutionStepExecutionError" not in second.stderr


def test_gate_exit_codes_for_missing_tables_and_usage_errors(tmp_path):
    env = {"DSC_PROFILE": "test", "DSC_HOME": str(tmp_path / "home"), "DAGSTER_HOME": str(tmp_path)}
    missing = run_cli(["dsc", "gate", "--partition", "sentiment", "--check-only", "--assets", "drafts"], env)
    assert missing.returncode == 1, missing.stdout[-2000:] + missing.stderr[-2000:]
    assert re.search(r"drafts\s+MISSING\s+no table yet", missing.stdout) and "sentiment: drafts MISSING" in missing.stdout
    usage = run_cli(["dsc", "gate", "--partition", "sentiment", "--check-only", "--assets", "sft_checkpoint"], env)
    assert usage.returncode == 2 and "no quality suite for sft_checkpoint" in usage.stderr.splitlines()[0]
