"""The command line as a user runs it: Dagster's own CLI, `dsc run`, and a run killed with SIGKILL."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from dsc_assets_tests.conftest import run_cli


def _env(tmp_path: Path, **extra) -> dict[str, str]:
    (tmp_path / "dagster_home").mkdir(exist_ok=True)
    return {
        "DSC_PROFILE": "test",
        "DSC_HOME": str(tmp_path / "home"),
        "DAGSTER_HOME": str(tmp_path / "dagster_home"),
        **extra,
    }


def test_definitions_validate(tmp_path):
    result = run_cli(["dagster", "definitions", "validate", "-m", "dsc_assets.definitions"], _env(tmp_path))
    assert result.returncode == 0, result.stderr[-2000:]
    assert "Validation successful" in result.stdout + result.stderr


def _first_error_line(stderr: str) -> str:
    """The first line of stderr that is not Dagster's log of the run (those start with a timestamp)."""
    return next(line for line in stderr.splitlines() if line.strip() and not line[:4].isdigit())


def test_first_error_line_names_a_task_error(tmp_path, prompts_copy):
    task_yaml = prompts_copy / "sentiment" / "task.yaml"
    task_yaml.write_text(task_yaml.read_text().replace("name: vader", "name: bleurt"))
    result = run_cli(["dsc", "run", "--tasks", "sentiment"], _env(tmp_path, DSC_PROMPTS_DIR=str(prompts_copy)))
    assert result.returncode == 2
    first = _first_error_line(result.stderr)
    assert first.startswith(f"dsc run: {task_yaml}: field 'scorer.name'") and "unknown scorer 'bleurt'" in first, first
    assert "Traceback" not in result.stderr


def test_first_error_line_names_a_locked_database(tmp_path):
    (tmp_path / "home").mkdir()
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import duckdb, sys, time; c = duckdb.connect(sys.argv[1]); print('ready', flush=True); time.sleep(120)",
            str(tmp_path / "home" / "warehouse.duckdb"),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "ready"
        result = run_cli(
            ["dsc", "run", "--tasks", "sentiment", "--select", "raw_prompts"], _env(tmp_path, DSC_LOCK_GRACE_S="2")
        )
    finally:
        holder.kill()
        holder.wait()
    assert result.returncode == 2
    first = _first_error_line(result.stderr)
    assert "warehouse.duckdb: locked by another process" in first and f"PID {holder.pid}" in first, first


def test_an_unusable_dsc_home_is_a_configuration_error_that_names_it(tmp_path):
    """A file where the home should be, or a home below a file: exit 2 before anything runs, naming DSC_HOME."""
    a_file = tmp_path / "not-a-folder"
    a_file.write_text("")
    for home in (a_file, a_file / "home"):
        result = run_cli(["dsc", "plan", "--profile", "test"], {"DSC_HOME": str(home)})
        assert result.returncode == 2, result.stderr
        first = result.stderr.splitlines()[0]
        assert first.startswith(f"dsc plan: HomeError: DSC_HOME={home} ") and "set DSC_HOME to a folder" in first


def test_an_unknown_executor_is_a_configuration_error_that_names_it(tmp_path):
    """DSC_EXECUTOR / DSC_MAX_CONCURRENT_RUNS that cannot be used: exit 2 before anything runs, naming the variable."""
    for variable, value in (("DSC_EXECUTOR", "celery"), ("DSC_MAX_CONCURRENT_RUNS", "0")):
        result = run_cli(["dsc", "plan", "--profile", "test"], {"DSC_HOME": str(tmp_path / "home"), variable: value})
        assert result.returncode == 2, result.stderr
        assert result.stderr.splitlines()[0].startswith(f"dsc plan: ExecutionError: {variable}='{value}'"), (
            result.stderr
        )


def test_every_command_help_names_its_exit_codes_and_environment():
    for command in ("run", "plan", "refresh", "gate", "doctor", "report"):
        result = run_cli(["dsc", command, "--help"], {})
        assert result.returncode == 0, result.stderr
        assert "exit codes:" in result.stdout and "2  a usage or configuration error" in result.stdout
        for variable in (
            "DSC_PROFILE",
            "DSC_HOME",
            "DSC_PROMPTS_DIR",
            "DAGSTER_HOME",
            "DSC_LLAMA_THREADS",
            "DSC_EXECUTOR",
        ):
            assert variable in result.stdout, (command, variable)


def test_plan_on_a_new_home_says_never_built_and_counts_every_kind_of_call(tmp_path):
    """What `dsc plan` prints before anything was built (no model is called): "never built" per asset, and the
    generations, scores and training steps a run would make (system/test_pipeline.py checks the counts against a
    real run)."""
    import re

    result = run_cli(
        ["dsc", "plan", "--profile", "test", "--tasks", "sentiment"],
        {"DSC_HOME": str(tmp_path / "home"), "DAGSTER_HOME": str(tmp_path / "dagster")},
    )
    assert result.returncode == 0, result.stderr
    rows = [
        line for line in result.stdout.splitlines() if line.startswith(("drafts ", "evaluation ", "reward_scores "))
    ]
    assert len(rows) == 3 and all(row.endswith("never built") for row in rows), rows
    assert "missing" not in result.stdout
    summary = re.search(
        r"(\d+) asset partition\(s\) never built, 0 stale\. A refresh would make (\d+) generations "
        r"and (\d+) scores .* and (\d+) training steps",
        result.stdout.replace("\n", " "),
    )
    assert summary and all(int(n) > 0 for n in summary.groups()), result.stdout
