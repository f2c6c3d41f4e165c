"""Fail fast: what can be known before the first model call fails in seconds, naming file, field or prompt id and
the fix (unknown scorer, oversized prompt, missing model, bad profile key or value, a locked DuckDB file)."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest
import yaml

from dsc_assets.build.preflight import PreflightError, preflight
from dsc_assets.lib.profiles import ProfileError, load_profile
from dsc_assets.lib.task_spec import TaskError
from dsc_assets.lib.tasks import load_task
from dsc_assets_tests.conftest import PROJECT_ROOT, run_cli


def _edit_task(prompts_copy, **fields):
    path = prompts_copy / "sentiment" / "task.yaml"
    spec = yaml.safe_load(path.read_text())
    path.write_text(yaml.safe_dump({**spec, **fields}, sort_keys=False))
    return path


def _fails_fast(profile, home, tasks=("sentiment",)) -> list[str]:
    started = time.perf_counter()
    with pytest.raises(PreflightError) as info:
        preflight(profile, list(tasks), home, "profiles/test.yaml", profile.max_tokens_cap)
    assert time.perf_counter() - started < 5
    return info.value.problems


def test_unknown_scorer_and_options_fail_at_load(prompts_copy, tmp_path):
    path = _edit_task(prompts_copy, scorer={"name": "bleurt"})
    with pytest.raises(TaskError) as info:
        load_task("sentiment")
    assert str(path) in str(info.value) and "field 'scorer.name'" in str(info.value)
    assert "unknown scorer 'bleurt'" in str(info.value) and "known: vader, pii, judge" in str(info.value)
    _edit_task(prompts_copy, scorer={"name": "judge", "options": {"questoin": "Is it kind?"}})
    message = str(pytest.raises(TaskError, load_task, "sentiment").value)
    assert "option 'question' is missing" in message and "option 'questoin' is unknown" in message
    problems = _fails_fast(load_profile("test"), tmp_path)
    assert any("scorer" in p for p in problems)


def test_every_shipped_scorer_is_built_by_the_reward_resource():
    from resources.rewards import RewardModels

    for name in ("privacy", "roleplay", "safety", "sentiment", "sycophancy"):
        RewardModels().for_task(load_task(name).spec.scorer)  # names and options agree with resources/rewards.py


def test_method_is_no_longer_a_setting(prompts_copy):
    _edit_task(prompts_copy, method="rdpo")
    message = str(pytest.raises(TaskError, load_task, "sentiment").value)
    assert "field 'method' is no longer a task setting" in message and "delete the 'method:' line" in message


def test_oversized_prompt_names_file_line_id_and_fix(prompts_copy, tmp_path):
    prompts = prompts_copy / "sentiment" / "prompts.jsonl"
    lines = prompts.read_text().splitlines()
    huge = json.loads(lines[0])
    huge.update(id="huge", prompt="Write a review of this film: " + "a long plot summary, " * 20000)
    lines.insert(2, json.dumps(huge))
    prompts.write_text("\n".join(lines) + "\n")
    problems = _fails_fast(load_profile("test"), tmp_path)
    huge_problems = [p for p in problems if "'huge'" in p]  # one per window it meets (a train prompt: two)
    assert huge_problems
    for problem in huge_problems:
        assert f"{prompts}:3: prompt 'huge'" in problem and "n_ctx is 1024" in problem
        assert "Fix: raise" in problem and "profiles/test.yaml" in problem and "delete line 3" in problem
    assert len(problems) == len(huge_problems)  # the shipped prompts fit the test profile


def test_oversized_prompt_stops_a_dagster_run_before_drafts(prompts_copy, dsc_home):
    """A run launched from the UI skips the CLI's preflight: raw_prompts' blocking check says the same."""
    import dagster as dg

    from dsc_assets.definitions import build_resources
    from dsc_assets.defs.generation import assets, checks

    prompts = prompts_copy / "sentiment" / "prompts.jsonl"
    prompts.write_text(
        json.dumps({"id": "huge", "prompt": "a long plot summary, " * 3000}) + "\n" + prompts.read_text()
    )
    result = dg.materialize(
        [assets.raw_prompts, assets.drafts, checks.raw_prompts_fit_context],
        partition_key="sentiment",
        resources=build_resources(load_profile("test"), dsc_home),
        instance=dg.DagsterInstance.ephemeral(),
        raise_on_error=False,
    )
    [evaluation] = result.get_asset_check_evaluations()
    assert not evaluation.passed and f"{prompts}:1: prompt 'huge'" in evaluation.description
    assert {e.asset_key.path[-1] for e in result.get_asset_materialization_events()} == {"raw_prompts"}


def test_missing_model_names_the_field(tmp_path):
    profile = load_profile("test")
    profile = profile.model_copy(
        update={"judge": profile.judge.model_copy(update={"model": str(tmp_path / "judge.gguf")})}
    )
    [problem] = _fails_fast(profile, tmp_path)
    assert problem.startswith("profiles/test.yaml: judge.model") and "neither a known model name" in problem


def _write_profile(tmp_path, **changes) -> str:
    profile = yaml.safe_load((PROJECT_ROOT / "profiles" / "test.yaml").read_text())
    for key, value in changes.items():
        profile[key] = {**profile.get(key, {}), **value} if isinstance(value, dict) else value
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(profile))
    return str(path)


def test_profile_keys_and_ranges_fail_like_task_files(tmp_path):
    path = _write_profile(tmp_path, quality_overrides={"max_repetiton": 0.5})
    message = str(pytest.raises(ProfileError, load_profile, path).value)
    assert (
        f"{path}: field 'quality_overrides.max_repetiton' is not a profile setting; did you mean 'max_repetition'"
        in message
    )
    path = _write_profile(tmp_path, quality_overrides={"max_repetition": 7})
    message = str(pytest.raises(ProfileError, load_profile, path).value)
    assert (
        "field 'quality_overrides.max_repetition'" in message
        and "less than or equal to 1" in message
        and "(got 7)" in message
    )
    path = _write_profile(tmp_path, generator={"n_ctx": 10, "n_tread": 2})
    message = str(pytest.raises(ProfileError, load_profile, path).value)
    assert (
        "field 'generator.n_ctx'" in message
        and "field 'generator.n_tread' is not a profile setting; did you mean 'n_threads'" in message
    )
    path = _write_profile(tmp_path, trainer={"epochss": 2, "per_device_batch_size": 0})
    message = str(pytest.raises(ProfileError, load_profile, path).value)
    assert "field 'trainer.epochss' is not a profile setting; did you mean 'epochs'" in message
    assert "field 'trainer.per_device_batch_size' Input should be greater than or equal to 1 (got 0)" in message


def test_a_profile_extends_another_with_only_what_differs(tmp_path):
    bf16 = load_profile("study_bf16")
    study = load_profile("study")
    assert bf16.trainer == {**study.trainer, "dtype": "auto"}
    assert bf16.model_dump(exclude={"trainer"}) == study.model_dump(exclude={"trainer"})
    (tmp_path / "a.yaml").write_text("extends: b.yaml\nmax_prompts_per_task: 3\n")
    (tmp_path / "b.yaml").write_text("extends: a.yaml\n")
    message = str(pytest.raises(ProfileError, load_profile, str(tmp_path / "a.yaml")).value)
    assert "'extends' forms a cycle" in message and "a.yaml -> " in message
    (tmp_path / "c.yaml").write_text("extends: nowhere\ntrainer: {epochss: 1}\n")
    message = str(pytest.raises(ProfileError, load_profile, str(tmp_path / "c.yaml")).value)
    assert "'extends: nowhere' names no profile" in message
    (tmp_path / "d.yaml").write_text("extends: study\ntrainer: {epochss: 1}\n")
    message = str(pytest.raises(ProfileError, load_profile, str(tmp_path / "d.yaml")).value)
    assert "field 'trainer.epochss' is not a profile setting; did you mean 'epochs'" in message


def test_cli_fails_fast_with_the_problem_first(tmp_path, prompts_copy):
    _edit_task(prompts_copy, scorer={"name": "bleurt"})
    started = time.perf_counter()
    result = run_cli(
        ["dsc", "plan", "--tasks", "sentiment"],
        {"DSC_PROFILE": "test", "DSC_HOME": str(tmp_path / "home"), "DAGSTER_HOME": str(tmp_path)},
    )
    seconds = time.perf_counter() - started
    assert result.returncode == 2, result.stderr[-2000:]
    first, last = result.stderr.splitlines()[0], result.stderr.splitlines()[-1]
    assert (
        first.startswith("dsc plan: ")
        and "task.yaml: field 'scorer.name'" in first
        and "unknown scorer 'bleurt'" in first
    )
    assert "problem(s) found before any model call; nothing was run" in last
    assert "Traceback" not in result.stderr
    bad = _write_profile(tmp_path, quality_overrides={"max_repetition": 7})
    result = run_cli(
        ["dsc", "run", "--profile", bad], {"DSC_HOME": str(tmp_path / "home"), "DAGSTER_HOME": str(tmp_path)}
    )
    assert result.returncode == 2 and "quality_overrides.max_repetition" in result.stderr.splitlines()[0]
    assert "Traceback" not in result.stderr
    print(f"dsc plan failed in {seconds:.1f}s")  # includes the interpreter's start and Dagster's import
    assert seconds < 15


def test_locked_database_is_named_with_its_holder(tmp_path):
    from dsc_assets.build.preflight import lock_problems

    (tmp_path / "cache.duckdb").touch()
    (tmp_path / "cache.duckdb").unlink()
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import duckdb, sys, time; c = duckdb.connect(sys.argv[1]); print('ready', flush=True); time.sleep(60)",
            str(tmp_path / "warehouse.duckdb"),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "ready"
        [problem] = lock_problems(tmp_path, grace_s=1)
        assert f"(PID {holder.pid})" in problem and "Fix: stop that dsc or dagster run" in problem
    finally:
        holder.kill()
        holder.wait()


def test_a_lock_released_within_the_grace_is_no_problem(tmp_path):
    """A concurrent dsc run holds the cache only while it writes: a check that lands on such a moment must not stop
    the run (it did, before the grace: a second `dsc run` beside a generating one failed at preflight)."""
    from dsc_assets.build.preflight import lock_problems

    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import duckdb, sys, time; c = duckdb.connect(sys.argv[1]); "
            "print('ready', flush=True); time.sleep(1); c.close()",
            str(tmp_path / "cache.duckdb"),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "ready"
        assert lock_problems(tmp_path, grace_s=20) == []
    finally:
        holder.kill()
        holder.wait()
