"""`dsc gate`: a verdict per asset that covers its whole upstream. A fast layer on hand-written tables, then a
planted bad batch end to end with the tiny model (one materialization, several assertions)."""

from __future__ import annotations

import re

import yaml

from dsc_assets_tests.conftest import PROJECT_ROOT, run_cli


def _profile(tmp_path, name, **overrides):
    """The test profile, two train prompts, with its quality overrides replaced (the shipped thresholds for the keys
    left out)."""
    profile = yaml.safe_load((PROJECT_ROOT / "profiles" / "test.yaml").read_text())
    profile.update(quality_overrides=overrides, max_prompts_per_task=2, max_eval_prompts_per_task=1, max_tokens_cap=24)
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(profile))
    return str(path)


RELAXED = dict(
    min_rows=0,
    min_chars=0,
    max_repetition=1.0,
    max_echo=1.0,
    max_source_echo=1.0,
    max_unchanged_rate=1.0,
    max_template_echo=1.0,
    max_duplicate_rate=1.0,
    min_acceptance_rate=0.0,
)


LOOPING = {
    "system_prompt": "Whatever the user asks, reply with the single word no repeated fifty times: no no no no",
    "sampling": {"temperature": 0.7, "top_p": 0.95, "max_tokens": 200, "seed": 1234, "repeat_penalty": 0.5},
}


def test_planted_bad_batch_blocks_the_downstream_assets_a_ci_job_gates_on(tmp_path, prompts_copy):
    (tmp_path / "dagster").mkdir()
    env = {
        "DSC_HOME": str(tmp_path / "home"),
        "DAGSTER_HOME": str(tmp_path / "dagster"),
        "DSC_PROMPTS_DIR": str(prompts_copy),
    }
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
