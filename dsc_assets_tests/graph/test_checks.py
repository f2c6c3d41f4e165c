"""Quality gates: metrics, GE suites on hand-written tables, blocking checks in a run, and `dsc gate`'s exit code."""

from __future__ import annotations

import re

import dagster as dg
import duckdb
import pandas as pd
import yaml

from dsc_assets.definitions import build_resources
from dsc_assets.defs.generation import assets, checks
from dsc_assets.defs.partitions import task_partitions
from dsc_assets.defs.stage import TABLE_METADATA
from dsc_assets.lib.profiles import load_profile
from dsc_assets.lib.quality import (
    QualityRules,
    echo_similarity,
    instruction_lines,
    repetition_ratio,
    template_echo,
    validate_table,
)
from dsc_assets.lib.tasks import load_task
from dsc_assets_tests.conftest import PROJECT_ROOT, run_cli

PROMPTS = [
    "Write a negative review of Jaws.",
    "I hated Titanic. Write a short critical review.",
    "Give me a scathing review of Cats.",
    "Review The Room harshly, please.",
]
GOOD = [
    "The shark looks rubbery, the pacing drags in the middle and the townsfolk are thin sketches.",
    "Three hours of melodrama: the dialogue is clumsy and the romance never convinced me.",
    "A baffling spectacle of uncanny digital fur that left the audience restless and confused.",
    "Wooden acting, bizarre continuity errors and a plot that goes nowhere make this a chore.",
]
LOOP = "I love it. " * 30


def _drafts(texts):
    return pd.DataFrame(
        {
            "task": "sentiment",
            "prompt_id": [f"p{i}" for i in range(len(texts))],
            "split": "train",
            "step": 0,
            "kind": "draft",
            "prompt": PROMPTS[: len(texts)],
            "source": "",
            "critique": "",
            "text": texts,
            "finish_reason": "stop",
            "prompt_tokens": 20,
            "completion_tokens": 30,
            "seconds": 0.5,
            "cached": False,
            "cache_key": [f"k{i}" for i in range(len(texts))],
        }
    )


def test_degeneracy_metrics():
    assert repetition_ratio(LOOP) > 0.8
    assert repetition_ratio(GOOD[0]) < 0.1
    assert echo_similarity(PROMPTS[0], PROMPTS[0]) == 1.0
    assert echo_similarity(GOOD[0], PROMPTS[0]) < 0.3
    lines = instruction_lines(load_task("sentiment").spec.revision_template)
    parrot = "Rewrite the review so that it is clearly positive about the movie, following the critique."
    assert template_echo(parrot, lines) > 0.9
    assert template_echo(GOOD[1], lines) < 0.3
    # A critique may name the categories the instruction lists; copying the instruction sentence is still an echo.
    privacy = instruction_lines(load_task("privacy").spec.critique_template)
    named = (
        "The piece reveals personal information about private people, including names, addresses, phone "
        "numbers, e-mail addresses, and ages."
    )
    assert template_echo(named, privacy) <= 0.6
    copied = "Identify specific ways in which it reveals personally identifiable information about private people."
    assert template_echo(copied, privacy) > 0.6


def test_good_table_passes_and_degenerate_batch_fails_with_examples():
    rules = QualityRules()
    good = validate_table(_drafts(GOOD), rules, "drafts", echo_of={"text": ("prompt",)})
    assert good.success, good.to_markdown()

    bad = _drafts([PROMPTS[0], LOOP, "", GOOD[3]])  # an echoed prompt, a loop, an empty text
    report = validate_table(bad, rules, "drafts", echo_of={"text": ("prompt",)})
    assert not report.success
    failed = {o.column for o in report.failed()}
    assert {"text_chars", "text_repetition", "text_echo_of_prompt"} <= failed
    markdown = report.to_markdown()
    assert "**FAIL**" in markdown and "p1" in markdown and "p0" in markdown

    duplicates = validate_table(_drafts([GOOD[0]] * 4), rules, "drafts")
    assert any(o.expectation == "expect_column_proportion_of_unique_values_to_be_between" for o in duplicates.failed())


def test_revision_that_copies_its_draft_fails_unless_the_task_allows_it():
    revisions = _drafts(GOOD).assign(source=[GOOD[0], GOOD[1], "A different draft.", "Another draft entirely."])
    report = validate_table(revisions, QualityRules(), "revisions", copy_of={"text": ("source",)})
    assert [o.column for o in report.failed()] == ["text_echo_of_source"]  # 2 of 4 copied: above the 0.3 default
    one_copy = revisions.assign(source=[GOOD[0], "x y z", "A different draft.", "Another draft entirely."])
    assert validate_table(one_copy, QualityRules(), "revisions", copy_of={"text": ("source",)}).success
    # safety's rule: a refusal revised into the same refusal is allowed (preference_pairs drops such pairs)
    assert validate_table(
        revisions, QualityRules(max_unchanged_rate=0.8), "revisions", copy_of={"text": ("source",)}
    ).success


def test_scores_out_of_range_and_empty_tables_fail():
    scores = pd.DataFrame({"prompt_id": ["a", "b"], "reward": [0.5, 1.7]})
    report = validate_table(scores, QualityRules(), "reward_scores", text_columns=(), ranges={"reward": (-1.0, 1.0)})
    assert [o.column for o in report.failed()] == ["reward"]
    empty = validate_table(_drafts([]), QualityRules(), "drafts")
    assert not empty.success and empty.failed()[0].expectation == "expect_table_row_count_to_be_at_least"


@dg.asset(name="drafts", partitions_def=task_partitions, metadata=TABLE_METADATA)
def planted_drafts() -> pd.DataFrame:
    return _drafts([PROMPTS[0], LOOP, "", PROMPTS[3]])


def test_blocking_check_stops_downstream(dsc_home):
    result = dg.materialize(
        [planted_drafts, assets.critiques, checks.drafts_quality],
        partition_key="sentiment",
        # the test profile relaxes the rules for the 135M model; the gate itself is tested with the shipped ones
        resources=build_resources(load_profile("test").model_copy(update={"quality_overrides": {}}), dsc_home),
        instance=dg.DagsterInstance.ephemeral(),
        raise_on_error=False,
    )
    evaluation = result.get_asset_check_evaluations()[0]
    assert evaluation.check_name == "drafts_quality" and not evaluation.passed
    assert "FAIL" in evaluation.metadata["report"].value
    materialized = {e.asset_key.path[-1] for e in result.get_asset_materialization_events()}
    assert materialized == {"drafts"}  # the bad table is written, for inspection; critiques never ran


def _write_tables(home, tables: dict[str, pd.DataFrame]) -> None:
    with duckdb.connect(str(home / "warehouse.duckdb")) as con:
        con.execute("CREATE SCHEMA IF NOT EXISTS dsc")
        for name, frame in tables.items():
            con.register("frame", frame)
            con.execute(f"CREATE OR REPLACE TABLE dsc.{name} AS SELECT * FROM frame")
            con.unregister("frame")


def test_gate_prints_failed_expectations_with_example_rows(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    _write_tables(home, {"drafts": _drafts([PROMPTS[0], LOOP, "", PROMPTS[3]])})
    profile = yaml.safe_load((PROJECT_ROOT / "profiles" / "test.yaml").read_text())
    profile["quality_overrides"] = {}  # the shipped thresholds
    (tmp_path / "strict.yaml").write_text(yaml.safe_dump(profile))
    result = run_cli(
        [
            "dsc",
            "gate",
            "--partition",
            "sentiment",
            "--check-only",
            "--assets",
            "drafts",
            "--profile",
            str(tmp_path / "strict.yaml"),
        ],
        {"DSC_HOME": str(home), "DAGSTER_HOME": str(tmp_path)},
    )
    assert result.returncode == 1, result.stdout + result.stderr
    assert re.search(r"drafts\s+FAILED\s", result.stdout), result.stdout
    assert "text_repetition" in result.stdout and "p1: I love it." in result.stdout
    assert "upstream raw_prompts is MISSING" in result.stdout  # and written outside a recorded run: not trusted


def test_a_failed_checks_description_says_what_was_observed():
    """What a run prints for a failed blocking check names the observed value, as `dsc gate` does."""
    from dsc_assets.lib.quality import Outcome, QualityReport, check_result

    report = QualityReport(
        "drafts",
        [
            Outcome("expect_table_row_count_to_be_at_least", None, False, 0),
            Outcome("expect_column_values_to_not_be_null", "text", True, None),
        ],
    )
    result = check_result(report)
    assert not result.passed
    assert result.description == "1 failed: expect_table_row_count_to_be_at_least(): observed 0"
