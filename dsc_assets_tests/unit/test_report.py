"""``dsc report``: a study report from a small hand-made warehouse (the real tables' columns), no models."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pytest

from dsc_assets.cli.main import main
from dsc_assets.lib.paths import PROJECT_ROOT
from dsc_assets.lib.report import ReportError, interval_verdict, prompt_selection, write_report
from dsc_assets.lib.stats import per_prompt_json
from dsc_assets.lib.tables import markdown_table

PROFILE = "# a tiny study profile\nmax_prompts_per_task: 3\nmax_eval_prompts_per_task: 2\neval_samples_per_prompt: 3\n"

CHECKPOINT = {
    "task": "sentiment",
    "status": "trained",
    "train_rows": 2,
    "steps": 4,
    "seconds": 12.34567,
    "first_loss": 0.69314,
    "last_loss": 0.41234,
    "data_hash": "abc",
    "adapter_dir": "a",
    "merged_dir": "m",
    "gguf_path": "g",
}


def _evaluation_row(model: str, difference: float, low: float, high: float) -> dict:
    return {
        "task": "sentiment",
        "model": model,
        "prompts": 2,
        "samples_per_prompt": 3,
        "mean_reward": 0.2 + difference,
        "difference_vs_base": difference,
        "ci95_low": low,
        "ci95_high": high,
        "win_rate_vs_base": 0.5,
        "on_topic_rate": 0.9,
        "degenerate_rate": 0.0,
        "refusal_rate": 0.1,
    }


TABLES = {
    "raw_prompts": pd.DataFrame(
        {
            "task": "sentiment",
            "prompt_id": ["p1", "p2", "p3", "p4", "p5"],
            "prompt": ["a", "b", "c", "d", "e"],
            "split": ["train", "train", "train", "test", "test"],
        }
    ),
    "accepted_samples": pd.DataFrame(
        {
            "task": "sentiment",
            "prompt_id": ["p1", "p2", "p3"],
            "draft_reward": 0.0,
            "revision_reward": 0.5,
            "accepted": [True, True, False],
        }
    ),
    "dpo_dataset": pd.DataFrame({"task": "sentiment", "prompt_id": ["p1", "p2"], "chosen": "c", "rejected": "r"}),
    "reward_scores": pd.DataFrame(
        {
            "task": "sentiment",
            "prompt_id": ["p1", "p2", "p1", "p2"],
            "step": [0, 0, 1, 1],
            "kind": ["draft", "draft", "revision", "revision"],
            "reward": [-0.1, 0.3, 0.7, 0.9],
            "scorer": "vader",
        }
    ),
    "sft_checkpoint": pd.DataFrame([{**CHECKPOINT, "method": "sft"}]),
    "dpo_checkpoint": pd.DataFrame([{**CHECKPOINT, "method": "dpo", "status": "skipped: no rows", "steps": 0}]),
    "evaluation": pd.DataFrame(
        [
            _evaluation_row("base", 0.0, 0.0, 0.0),
            _evaluation_row("base_original", 0.05, -0.2, 0.3),
            _evaluation_row("sft", 0.31234, 0.1, 0.5),
        ]
    ),
}


def _warehouse(path: Path, tables: dict[str, pd.DataFrame]) -> duckdb.DuckDBPyConnection:
    con = duckdb.connect(str(path))
    con.execute("CREATE SCHEMA dsc")
    for name, df in tables.items():
        con.register("frame", df)
        con.execute(f"CREATE TABLE dsc.{name} AS SELECT * FROM frame")
        con.unregister("frame")
    return con


@pytest.fixture
def profile_path(tmp_path) -> Path:
    path = tmp_path / "tiny.yaml"
    path.write_text(PROFILE)
    return path


def test_report_has_commit_profile_sizes_evaluation_and_plot(tmp_path, profile_path):
    con = _warehouse(tmp_path / "warehouse.duckdb", TABLES)
    report = write_report("sentiment", con, profile_path, tmp_path / "out")
    text = report.read_text()
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=PROJECT_ROOT, capture_output=True, text=True).stdout.strip()
    assert report == tmp_path / "out" / "sentiment.md"
    assert f"at commit `{head}" in text
    assert "No Dagster run history was available" in text
    assert f"```yaml\n{PROFILE}```" in text
    assert "| train prompts used | 3 |" in text and "| test prompts (evaluated) | 2 |" in text
    assert "Evaluated on the **test** split." in text
    assert "| accepted samples | 2 of 3 |" in text and "| DPO pairs | 2 |" in text
    assert "| mean draft reward (step 0) | 0.100 |" in text and "| mean revision reward (step 1) | 0.800 |" in text
    assert "| sft | trained | 2 | 4 | 0.693 | 0.412 | 12.346 |" in text
    assert "| dpo | skipped: no rows | 2 | 0 |" in text
    assert (
        "| model | prompts | samples_per_prompt | mean_reward | difference_vs_base | ci95_low | ci95_high | "
        "win_rate_vs_base | on_topic_rate | degenerate_rate | refusal_rate |"
    ) in text
    assert "| sft | 2 | 3 | 0.512 | 0.312 | 0.100 | 0.500 | 0.500 | 0.900 | 0.000 | 0.100 |" in text
    assert "base_original: contains 0; sft: excludes 0." in text
    assert "`base_original` is the null control" in text
    assert "Warning" not in text  # the tables agree with each other and with the profile
    assert "![effects](sentiment_effects.png)" in text
    assert (tmp_path / "out" / "sentiment_effects.png").read_bytes().startswith(b"\x89PNG\r\n\x1a\n")


def test_report_warns_when_tables_come_from_different_runs(tmp_path, profile_path):
    """A later run of another profile rewrote raw_prompts but not (yet) the evaluation."""
    more = pd.DataFrame({"task": "sentiment", "prompt_id": [f"q{i}" for i in range(4)], "prompt": "x", "split": "test"})
    evaluation = TABLES["evaluation"][TABLES["evaluation"]["model"] != "base_original"]  # an evaluation before it
    tables = {
        **TABLES,
        "raw_prompts": pd.concat([TABLES["raw_prompts"], more], ignore_index=True),
        "evaluation": evaluation,
    }
    text = write_report("sentiment", _warehouse(tmp_path / "w.duckdb", tables), profile_path, tmp_path).read_text()
    assert "- the evaluation used 2 test prompts, raw_prompts holds 6" in text
    assert "- 6 test prompts, the profile allows 2" in text
    assert "No `base_original` row (the null control" in text


def test_provenance_names_each_steps_run_and_commit(tmp_path, profile_path):
    """Materializations recorded in a real Dagster instance: the report says which commit made which table."""
    import dagster as dg

    from dsc_assets.build.provenance import provenance

    with dg.DagsterInstance.ephemeral() as instance:
        instance.report_runless_asset_event(
            dg.AssetMaterialization("drafts", partition="sentiment", metadata={"code_commit": "9082e7f1a2b3"})
        )
        instance.report_runless_asset_event(
            dg.AssetMaterialization(
                "evaluation", partition="sentiment", metadata={"code_commit": "befc302c4d5e (dirty)"}
            )
        )
        instance.report_runless_asset_event(dg.AssetMaterialization("sft_checkpoint", partition="sentiment"))
        instance.report_runless_asset_event(
            dg.AssetMaterialization("evaluation", partition="privacy", metadata={"code_commit": "not this task"})
        )
        runs = provenance(instance, "sentiment")
    assert [(r["asset"], r["commit"]) for r in runs] == [
        ("drafts", "9082e7f1a2b3"),
        ("sft_checkpoint", "not recorded (before dsc recorded commits)"),
        ("evaluation", "befc302c4d5e (dirty)"),
    ]
    text = write_report(
        "sentiment", _warehouse(tmp_path / "w.duckdb", TABLES), profile_path, tmp_path, runs=runs
    ).read_text()
    provenance_section = text.split("## Provenance", 1)[1]
    assert "| asset | materialized (UTC) | commit | run |" in provenance_section
    assert "| drafts |" in provenance_section and "| 9082e7f1a2b3 |" in provenance_section
    assert "| befc302c4d5e (dirty) |" in provenance_section and "not this task" not in provenance_section


def test_a_rerun_is_compared_with_the_report_it_replaces(tmp_path, profile_path):
    """A fresh clone's rerun writes over the committed report: the new one says, model by model, whether its
    difference lies inside the committed interval."""
    from dsc_assets.lib.report import previous_evaluation

    first = write_report("sentiment", _warehouse(tmp_path / "a.duckdb", TABLES), profile_path, tmp_path).read_text()
    assert "## Against the previous report" not in first
    rerun = TABLES["evaluation"].copy()
    rerun.loc[rerun["model"] == "sft", "difference_vs_base"] = 0.45  # inside [0.1, 0.5]
    rerun.loc[rerun["model"] == "base_original", ["difference_vs_base", "ci95_low", "ci95_high"]] = [-0.35, -0.6, -0.1]
    second = write_report(
        "sentiment", _warehouse(tmp_path / "b.duckdb", {**TABLES, "evaluation": rerun}), profile_path, tmp_path
    ).read_text()
    section = second.split("## Against the previous report", 1)[1]
    assert "outside: base_original." in section
    assert "| base_original | 0.050 | [-0.200, 0.300] | -0.350 | NO |" in section
    assert "| sft | 0.312 | [0.100, 0.500] | 0.450 | yes |" in section
    # The report read back is the evaluation table alone, not the comparison or provenance tables after it.
    table, commit_line = previous_evaluation(tmp_path / "sentiment.md")
    assert table["model"].tolist() == ["base", "base_original", "sft"] and "at commit" in commit_line
    # The committed study report parses too (what a fresh clone's rerun compares with).
    committed, line = previous_evaluation(PROJECT_ROOT / "reports" / "study" / "sentiment.md")
    assert {"sft", "dpo", "rdpo", "base_original"} <= set(committed["model"]) and "commit" in line.lower()
    assert committed.set_index("model").loc["sft", "ci95_low"] > 0


def test_interval_verdict_is_a_closed_interval():
    assert interval_verdict(0.1, 0.5) == "excludes 0" and interval_verdict(-0.5, -0.1) == "excludes 0"
    assert interval_verdict(-0.2, 0.3) == "contains 0" and interval_verdict(0.0, 2.0) == "contains 0"
    assert interval_verdict(float("nan"), float("nan")) == "no interval"


def test_table_cells_round_to_three_decimals():
    table = markdown_table(pd.DataFrame({"a": [0.12349], "b": [-0.0004], "c": [float("nan")], "d": [7]}))
    assert table.splitlines()[-1] == "| 0.123 | 0.000 | — | 7 |"


def test_missing_evaluation_is_an_error_and_writes_nothing(tmp_path, profile_path):
    tables = {name: df for name, df in TABLES.items() if name != "evaluation"}
    with pytest.raises(ReportError, match="task 'sentiment': the warehouse has no evaluation table"):
        write_report("sentiment", _warehouse(tmp_path / "w.duckdb", tables), profile_path, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_cli_names_the_task_and_what_is_missing(dsc_home, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("DSC_PROFILE", "test")  # restored after the test (the command sets it)
    _warehouse(dsc_home / "warehouse.duckdb", {"evaluation": TABLES["evaluation"]}).close()
    assert main(["report", "--profile", "test", "--tasks", "safety,sentiment", "--out", str(tmp_path / "out")]) == 1
    errors = capsys.readouterr().err.splitlines()
    assert "dsc report: task 'safety': the evaluation table has no rows for this task; nothing written" in errors
    assert "dsc report: task 'sentiment': raw_prompts has no rows for this task; nothing written" in errors
    assert not (tmp_path / "out").exists()


def test_cli_unknown_profile_is_a_usage_error(dsc_home, monkeypatch, capsys):
    monkeypatch.setenv("DSC_PROFILE", "test")
    assert main(["report", "--profile", "nonesuch"]) == 2
    assert "dsc report: ProfileError: profile 'nonesuch' not found" in capsys.readouterr().err


def _with_per_prompt() -> dict[str, pd.DataFrame]:
    """Four test prompts; sft gains 1, 1, 0.5, 0.3 over base and keeps the topic on all but the third."""
    ids = ["p4", "p5", "p6", "p7"]
    results = {
        "base": ([0.0, 0.0, 0.0, 0.0], [1.0, 1.0, 1.0, 1.0]),
        "base_original": ([0.1, -0.1, 0.0, 0.0], [1.0, 1.0, 1.0, 1.0]),
        "sft": ([1.0, 1.0, 0.5, 0.3], [1.0, 1.0, 0.0, 1.0]),
    }
    evaluation = TABLES["evaluation"].copy()
    evaluation["per_prompt"] = [
        per_prompt_json(
            ids, np.array(results[m][0]), {"on_topic": np.array(results[m][1]), "place_kept": np.full(4, np.nan)}
        )
        for m in evaluation["model"]
    ]
    prompts = pd.DataFrame(
        {
            "task": "sentiment",
            "prompt_id": ["p1", "p2", "p3", *ids],
            "prompt": list("abcdefg"),
            "split": ["train"] * 3 + ["test"] * 4,
        }
    )
    return {**TABLES, "raw_prompts": prompts, "evaluation": evaluation}


def test_prompts_option_recomputes_the_evaluation_over_those_prompts(tmp_path, profile_path):
    con = _warehouse(tmp_path / "w.duckdb", _with_per_prompt())
    text = write_report("sentiment", con, profile_path, tmp_path / "out", prompt_subset="p6..p7").read_text()
    section = text.split("## Test prompts p6..p7\n", 1)[1].split("\n## ", 1)[0]
    assert "over the 2 test prompts `p6..p7` alone" in section
    # sft: gains 0.5 and 0.3 (mean 0.4, both wins: no resample reaches 0, p at its floor); the topic kept on one of
    # the two where base kept both
    assert (
        "| sft | 2 | 0.400 | 0.400 | 0.300 | 0.500 | 1.000 | 0.000 | -0.500 [-1.000, +0.000] may be worse |" in section
    )
    assert "| base_original | 2 | 0.000 | 0.000 | 0.000 | 0.000 | 0.500 | 1.000 |" in section
    assert "base_original: contains 0; sft: excludes 0." in section
    assert "| per_prompt" not in text and "prompt_id" not in text  # the JSON column stays out of the tables
    everything = write_report("sentiment", con, profile_path, tmp_path / "all", prompt_subset="p1,p4..p7").read_text()
    assert "over the 4 test prompts" in everything and "| sft | 4 | 0.700 | 0.700 |" in everything
    none = write_report("sentiment", con, profile_path, tmp_path / "none", prompt_subset="q1..q9").read_text()
    assert "No test prompt of this task matches `q1..q9`." in none


def test_prompts_option_needs_per_prompt_results(tmp_path, profile_path):
    """An evaluation written before the per-prompt column: say so, write nothing."""
    with pytest.raises(ReportError, match="no per-prompt results .* materialize `evaluation` again"):
        write_report(
            "sentiment", _warehouse(tmp_path / "w.duckdb", TABLES), profile_path, tmp_path / "out", prompt_subset="p4"
        )
    assert not (tmp_path / "out").exists()


def test_prompt_selection_reads_ids_and_inclusive_ranges():
    keep = prompt_selection("privacy-121..privacy-216, sentiment-007")
    assert [
        keep(i)
        for i in (
            "privacy-120",
            "privacy-121",
            "privacy-180",
            "privacy-216",
            "privacy-217",
            "sentiment-007",
            "sentiment-008",
        )
    ] == [False, True, True, True, False, True, False]
    for bad in ("", " , ", "a..", "..b"):
        with pytest.raises(ValueError, match="--prompts"):
            prompt_selection(bad)


def test_cli_bad_prompts_option_is_a_usage_error(dsc_home, monkeypatch, capsys):
    monkeypatch.setenv("DSC_PROFILE", "test")
    assert main(["report", "--profile", "test", "--prompts", "privacy-121.."]) == 2
    assert "dsc report: --prompts: range 'privacy-121..' needs both ends (first..last)" in capsys.readouterr().err


def test_holm_over_the_studys_family_is_beside_each_raw_verdict(tmp_path, profile_path):
    """Two tasks of a profile that plans sft and dpo on three: the family has 6 contrasts, the 3 never measured count
    with p = 1, and a contrast that passes alone (p 0.02) does not pass in the family."""
    from dsc_assets.lib.family import study_family

    def rows(task: str, p_sft: float, p_dpo: float) -> list[dict]:
        return [
            {**_evaluation_row("base", 0.0, 0.0, 0.0), "task": task, "p_value": float("nan")},
            {**_evaluation_row("base_original", 0.0, -0.2, 0.2), "task": task, "p_value": 0.9},
            {**_evaluation_row("sft", 0.3, 0.1, 0.5), "task": task, "p_value": p_sft},
            {**_evaluation_row("dpo", 0.2, 0.01, 0.4), "task": task, "p_value": p_dpo},
        ]

    evaluation = pd.DataFrame(rows("sentiment", 0.001, 0.02) + rows("privacy", 0.004, 0.6))
    con = _warehouse(tmp_path / "w.duckdb", {**TABLES, "evaluation": evaluation})
    family = study_family(con, ["sentiment", "privacy", "safety"], ["sft", "dpo"])
    assert family.size == 6 and sorted(family.missing) == [("safety", "dpo"), ("safety", "sft")]
    assert family.adjusted[("sentiment", "sft")] == pytest.approx(0.006)  # 6 x 0.001
    assert family.adjusted[("privacy", "sft")] == pytest.approx(0.02)  # 5 x 0.004
    assert family.adjusted[("sentiment", "dpo")] == pytest.approx(0.08)  # 4 x 0.02: passes alone, not here
    text = write_report("sentiment", con, profile_path, tmp_path / "out", family=family).read_text()
    assert "Holm-Bonferroni over the study's family of 6 contrasts" in text
    assert "2 not measured yet count with p = 1" in text
    assert "| better after Holm |" in text and "| not significant after Holm |" in text
    assert "dpo: excludes 0" in text  # the raw verdict stays beside the adjusted one

    # the summary: every planned contrast, measured or not, with the same adjusted verdicts, also into a README block
    from dsc_assets.lib.report_summary import BEGIN, END, write_summary

    readme = tmp_path / "README.md"
    readme.write_text(
        f"# Reports\n\nbefore\n{BEGIN.format(name='tiny')}\nold table\n{END.format(name='tiny')}\nafter\n"
    )
    summary = write_summary(con, family, tmp_path / "out", "tiny", readme).read_text()
    lines = {tuple(c.strip() for c in line.strip("|").split("|")[:2]): line for line in summary.splitlines()[4:]}
    assert "6; 4 measured" in summary
    assert "better after Holm" in lines[("sentiment", "sft vs base")] and "0.006" in lines[("sentiment", "sft vs base")]
    assert "not significant after Holm" in lines[("sentiment", "dpo vs base")]
    assert "not measured yet" in lines[("safety", "dpo")]
    updated = readme.read_text()
    assert "old table" not in updated and "before" in updated and "after" in updated
    assert lines[("privacy", "sft vs base")] in updated


def test_the_ledger_counts_every_look_at_test_and_is_merged_once(tmp_path, profile_path):
    from dsc_assets.lib import ledger

    home, committed = tmp_path / "home" / ledger.FILE, tmp_path / "reports" / ledger.FILE
    for run in ("r1", "r2"):
        ledger.record(home, task="sentiment", profile="study", profile_sha="abc", commit="c", run_id=run)
    ledger.record(home, task="privacy", profile="study", profile_sha="abc", commit="c", run_id="r2")
    assert ledger.merge(home, committed) == 3 and ledger.merge(home, committed) == 0  # nothing copied twice
    assert [e["run_id"] for e in ledger.looks(committed, "sentiment")] == ["r1", "r2"]
    con = _warehouse(tmp_path / "w.duckdb", TABLES)
    text = write_report("sentiment", con, profile_path, tmp_path / "out", ledger_path=committed).read_text()
    assert "The ledger (`ledger.jsonl`) holds 2 look(s) at this task's test split, by `study` (abc)." in text
    dev = {**TABLES, "raw_prompts": TABLES["raw_prompts"].replace({"split": {"test": "dev"}})}
    text = write_report("sentiment", _warehouse(tmp_path / "d.duckdb", dev), profile_path, tmp_path / "dev").read_text()
    assert "Evaluated on the **dev** split" in text and "| dev prompts (evaluated) | 2 |" in text


def test_effective_settings_are_what_each_training_read_not_the_profiles(tmp_path, profile_path):
    """privacy's DPO read dpo_sft_weight 10 from its task.yaml while the profile said 1: the report prints 10."""
    common = {"lora_r": 8, "epochs": 4}
    sft = {**common, "seed": 42, "sft_completion_only": True}
    dpo = [{**common, "seed": seed, "dpo_beta": 0.1, "dpo_sft_weight": 10.0} for seed in (42, 43)]
    rows = [{**CHECKPOINT, "method": "dpo", "settings": json.dumps(s)} for s in dpo]
    tables = {
        **TABLES,
        "sft_checkpoint": pd.DataFrame([{**CHECKPOINT, "method": "sft", "settings": json.dumps(sft)}]),
        "dpo_checkpoint": pd.DataFrame(rows),
    }
    con = _warehouse(tmp_path / "w.duckdb", tables)
    text = write_report("sentiment", con, profile_path, tmp_path / "out").read_text()
    section = text[text.index("## Effective settings") :]
    assert "Shared by every training: `epochs=4`, `lora_r=8`." in section
    assert "| dpo | 42, 43 | dpo_beta=0.1, dpo_sft_weight=10.0 |" in section
    assert "| sft | 42 | sft_completion_only=True |" in section


def test_the_runs_verdicts_are_computed_from_the_table_and_holm():
    from dsc_assets.cli.verdicts import verdict_rows
    from dsc_assets.lib.family import Family

    evaluation = pd.DataFrame(
        [
            {**_evaluation_row("base", 0.0, 0.0, 0.0), "p_value": np.nan},
            {**_evaluation_row("base_original", 0.05, -0.2, 0.3), "p_value": 0.6},
            {**_evaluation_row("sft", 0.4, 0.2, 0.6), "p_value": 0.01, "mean_answer_words": 41.2},
            {**_evaluation_row("dpo", 0.1, 0.01, 0.2), "p_value": 0.04},
        ]
    )
    raw = {("sentiment", "sft"): 0.01, ("sentiment", "dpo"): 0.04, ("privacy", "sft"): 1.0}
    family = Family(raw, {("sentiment", "sft"): 0.03, ("sentiment", "dpo"): 0.08, ("privacy", "sft"): 1.0}, [])
    rows = verdict_rows(evaluation, "sentiment", family).set_index("model")
    assert rows.loc["sft", "verdict"] == "better after Holm" and rows.loc["sft", "holm_p"] == "0.030"
    assert rows.loc["dpo", "verdict"] == "not significant after Holm"  # raw p 0.04 < 0.05, not after correction
    assert rows.loc["base_original", "verdict"] == "null control: export changes nothing"
    assert rows.loc["sft", "ci95"] == "[+0.200, +0.600]" and rows.loc["sft", "words"] == "41"
    assert "base" not in rows.index


def test_the_report_says_from_the_data_why_a_method_did_not_move(tmp_path, profile_path):
    """SFT moved (its interval is above 0); DPO did not, and its data says why: 2 rows, a margin of 0.01, a flat loss,
    answers half as long as base's. The reasons come from the tables by the stated thresholds."""
    evaluation = pd.DataFrame(
        [
            {**_evaluation_row("base", 0.0, 0.0, 0.0), "mean_answer_words": 40.0},
            {**_evaluation_row("sft", 0.31234, 0.1, 0.5), "mean_answer_words": 38.0},
            {**_evaluation_row("dpo", 0.02, -0.1, 0.15), "mean_answer_words": 20.0},
        ]
    )
    dpo = {**CHECKPOINT, "method": "dpo", "first_loss": 0.6931, "last_loss": 0.6900}
    pairs = pd.DataFrame({"task": "sentiment", "prompt_id": ["p1", "p2"], "margin": [0.0, 0.02]})
    tables = {
        **TABLES,
        "evaluation": evaluation,
        "dpo_checkpoint": pd.DataFrame([dpo]),
        "preference_pairs": pairs,
    }
    con = _warehouse(tmp_path / "w.duckdb", tables)
    text = write_report("sentiment", con, profile_path, tmp_path / "out").read_text()
    section = text[text.index("## What each method learned from") :]
    sft = next(line for line in section.splitlines() if line.startswith("| sft "))
    dpo_line = next(line for line in section.splitlines() if line.startswith("| dpo "))
    assert "moved the reward" in sft and "accepted 2 of 3; revision - draft reward +0.500" in sft
    assert "moved the reward" not in dpo_line
    for reason in ("small reward margin", "few training rows (2)", "loss barely moved", "answers 50% of base's length"):
        assert reason in dpo_line, (reason, dpo_line)
