"""The study's controls in a real run: training seeds (each seeded checkpoint trained at seed, seed + 1, one
evaluation row per method whose interval resamples prompts and seeds) and the placebo (SFT's recipe on the
unrevised drafts of SFT's own prompts)."""

from __future__ import annotations

import json
import math

import duckdb

from dsc_assets.definitions import build_resources
from dsc_assets.lib.profiles import load_profile
from dsc_assets_tests.conftest import run_cli
from resources.hashing import content_hash


def _assistant(messages: str) -> str:
    return json.loads(messages)[-1]["content"]


def test_two_seeds_and_the_placebo_train_evaluate_and_keep_the_first_seeds_folder(tmp_path):
    profile = tmp_path / "controls.yaml"
    profile.write_text(open("profiles/test.yaml").read() + "methods: [sft, placebo]\ntraining_seeds: 2\n")
    (tmp_path / "dagster").mkdir()
    home = tmp_path / "home"
    env = {"DSC_PROFILE": str(profile), "DSC_HOME": str(home), "DAGSTER_HOME": str(tmp_path / "dagster")}
    run = run_cli(["dsc", "run", "--tasks", "sentiment"], env, timeout=900)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    with duckdb.connect(str(home / "warehouse.duckdb"), read_only=True) as con:
        sft = con.execute("SELECT * FROM dsc.sft_checkpoint ORDER BY seed").df()
        placebo = con.execute("SELECT * FROM dsc.placebo_checkpoint ORDER BY seed").df()
        sft_set = con.execute("SELECT prompt_id, messages FROM dsc.sft_dataset ORDER BY prompt_id").df()
        placebo_set = con.execute("SELECT prompt_id, messages FROM dsc.placebo_dataset ORDER BY prompt_id").df()
        accepted = con.execute("SELECT prompt_id, draft FROM dsc.accepted_samples").df()
        evaluation = con.execute("SELECT * FROM dsc.evaluation").df()

    # each seeded checkpoint trained twice, at seeds 0 and 1, into two folders
    for table in (sft, placebo):
        assert table["seed"].tolist() == [0, 1] and (table["status"] == "trained").all()
        assert table["gguf_path"].nunique() == 2
    # the first seed's folder is the one a one-seed profile trains: existing checkpoints stay fresh
    trainer = build_resources(load_profile(str(profile)), home)["trainer"]
    version = content_hash("sft", sft["data_hash"].iloc[0], trainer.settings_identity("sft"), length=16)
    assert sft["adapter_dir"].iloc[0].split("/")[-2] == version != sft["adapter_dir"].iloc[1].split("/")[-2]

    # the placebo set: the same prompts as SFT's, answered by their unrevised drafts
    assert len(placebo_set) == len(sft_set) > 0 and placebo_set["prompt_id"].tolist() == sft_set["prompt_id"].tolist()
    drafts = dict(zip(accepted["prompt_id"], accepted["draft"]))
    assert [_assistant(m) for m in placebo_set["messages"]] == [drafts[p] for p in placebo_set["prompt_id"]]
    assert [_assistant(m) for m in placebo_set["messages"]] != [_assistant(m) for m in sft_set["messages"]]

    # one row per method, over both seeds; dSC's SFT against the placebo
    rows = evaluation.set_index("model")
    assert not any("@seed" in model for model in rows.index)
    for method in ("sft", "placebo"):
        assert rows.loc[method, "seeds"] == 2 and not math.isnan(rows.loc[method, "seed_sd"])
    assert rows.loc["base", "seeds"] == 1 and math.isnan(rows.loc["base", "seed_sd"])
    contrast = rows.loc["sft vs placebo"]
    assert contrast["seeds"] == 2 and contrast["ci95_low"] <= contrast["difference_vs_base"] <= contrast["ci95_high"]
    answers = [json.loads(line) for line in (home / "ledger.jsonl").read_text().splitlines()]
    assert {"sft", "placebo", "base"} <= set(answers[-1]["models"]) and answers[-1]["training_seeds"] == 2
    # sentiment's second reward (textblob) beside VADER on every row, the contrast included, over the same answers
    for model in ("base", "sft", "placebo", "sft vs placebo"):
        row = rows.loc[model]
        assert row["second_ci95_low"] <= row["second_difference_vs_base"] <= row["second_ci95_high"], model
        assert -1.0 <= row["rewards_spearman"] <= 1.0 or math.isnan(row["rewards_spearman"]), model
    assert "second_reward" in json.loads(rows.loc["sft", "per_prompt"])

    # the run ends with the verdicts, computed from the same table (Holm over the profile's planned contrasts)
    summary = run.stdout[run.stdout.index("dsc run: sentiment, test split") :]
    assert "Holm over the family's 3 contrasts" in summary  # sft, sft vs placebo (planned) and placebo (measured)
    printed = {line.split("|")[1].strip(): line for line in summary.splitlines() if line.startswith("| ")}
    assert {"sft", "placebo", "sft vs placebo", "base_original"} <= set(printed)
    assert f"{rows.loc['sft', 'difference_vs_base']:+.3f}" in printed["sft"]
    verdicts = ("better after Holm", "worse after Holm", "not significant after Holm")
    assert any(verdict in printed["sft"] for verdict in verdicts)
    assert "null control" in printed["base_original"]
    assert f"{rows.loc['sft', 'second_difference_vs_base']:+.3f}" in printed["sft"]  # the second reward beside
