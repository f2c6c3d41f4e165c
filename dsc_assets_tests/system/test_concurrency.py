"""Concurrent runs share the call cache and the warehouse: `dsc run` beside another run, a process holding the cache
for a while, and (test_backfill.py) a backfill of three partitions through the instance's run queue."""

from __future__ import annotations

import os
import subprocess
import sys

import duckdb

from dsc_assets.lib.paths import PROJECT_ROOT
from dsc_assets_tests.conftest import private_tasks, run_cli


def test_dsc_run_beside_another_run_both_succeed(tmp_path):
    """Two `dsc run` processes on one DSC_HOME (same call cache, warehouse, Dagster instance), the second started
    while the first generates: both succeed, and every call of both is in the cache."""
    root = private_tasks(tmp_path / "prompts", {"sentiment": 3, "sycophancy": 2})
    env = {
        **os.environ,
        "DSC_PROFILE": "test",
        "DSC_PROMPTS_DIR": str(root),
        "DSC_HOME": str(tmp_path / "home"),
        "DAGSTER_HOME": str(tmp_path / "dagster"),
        "OMP_WAIT_POLICY": "PASSIVE",
        "PATH": f"{os.path.dirname(sys.executable)}{os.pathsep}{os.environ.get('PATH', '')}",
    }
    command = ["dsc", "run", "--select", "raw_prompts,drafts"]
    first = subprocess.Popen(
        [*command, "--tasks", "sentiment"],
        cwd=PROJECT_ROOT,
        env=env,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    lines = []
    for line in first.stdout:  # start the second run once the first is asking the model
        lines.append(line)
        if 'execution of step "drafts"' in line or "to generate" in line:
            break
    second = run_cli([*command, "--tasks", "sycophancy"], {k: env[k] for k in env if k.startswith(("DSC_", "DAGSTER"))})
    rest, _ = first.communicate(timeout=600)
    output = "".join(lines) + rest
    assert first.returncode == 0, output[-3000:]
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    with duckdb.connect(str(tmp_path / "home" / "cache.duckdb"), read_only=True) as con:
        assert con.execute("SELECT count(*) FROM calls WHERE kind = 'chat'").fetchone()[0] == 3 + 2
    with duckdb.connect(str(tmp_path / "home" / "warehouse.duckdb"), read_only=True) as con:
        assert con.execute("SELECT task, count(*) FROM dsc.drafts GROUP BY task ORDER BY task").fetchall() == [
            ("sentiment", 3),
            ("sycophancy", 2),
        ]


# One process of the race below: the student's HF copy, the exported base and a dataset, all on an empty home.
REAL_ARTIFACTS = """
import sys
from pathlib import Path
from resources.datasets import save_dataset
from resources.trainer import LoRATrainer

home = Path(sys.argv[1])
trainer = LoRATrainer(model_cache_dir=str(home / "models"))
base = trainer.base_dir()
exported = trainer.exported_base(home / "checkpoints" / "base" / "base.gguf")
dataset, _ = save_dataset(home / "datasets", [{"prompt_id": "p1", "messages": [{"role": "user", "content": "hi"}]}])
print(base, exported, dataset)
"""


def test_three_processes_building_the_shared_artifacts_of_an_empty_home_all_succeed(tmp_path):
    """The HF copy of the student, the exported base GGUF and a dataset folder, asked for by three processes at
    once in a new home (what two `dsc run` in a new DSC_HOME did before, and one failed renaming onto the other's
    folder): all three get the same finished artifacts, and nothing half-built is left."""
    home = tmp_path / "home"
    racers = [
        subprocess.Popen(
            [sys.executable, "-c", REAL_ARTIFACTS, str(home)],
            cwd=PROJECT_ROOT,
            text=True,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for _ in range(3)
    ]
    results = [racer.communicate(timeout=600) for racer in racers]
    assert [racer.returncode for racer in racers] == [0, 0, 0], [err[-2000:] for _, err in results]
    assert len({out.strip() for out, _ in results}) == 1  # the same three paths for every racer
    left = [p for p in home.rglob("*") if ".partial" in p.name]
    assert not left, left
    [hf_copy] = [p for p in (home / "models" / "hf").iterdir() if not p.name.startswith(".")]
    assert (hf_copy / "config.json").exists() and (home / "checkpoints" / "base" / "base.gguf").stat().st_size > 1e6


def test_two_dsc_runs_started_together_in_a_new_home_both_succeed(tmp_path):
    """Two tasks' runs started at the same moment in an empty DSC_HOME, through training (the student's HF copy is
    the artifact both need first): both succeed and each task's tables hold its own rows."""
    root = private_tasks(tmp_path / "prompts", {"sentiment": 2, "sycophancy": 2})
    env = {
        "DSC_PROFILE": "test",
        "DSC_PROMPTS_DIR": str(root),
        "DSC_HOME": str(tmp_path / "home"),
        "DAGSTER_HOME": str(tmp_path / "dagster"),
        "DSC_LLAMA_THREADS": "1",
    }
    full_env = {**os.environ, **env, "PATH": f"{os.path.dirname(sys.executable)}{os.pathsep}{os.environ['PATH']}"}
    select = "raw_prompts,drafts,critiques,revisions,reward_scores,accepted_samples,sft_dataset,sft_checkpoint"
    runs = [
        subprocess.Popen(
            ["dsc", "run", "--select", select, "--tasks", task],
            cwd=PROJECT_ROOT,
            env=full_env,
            text=True,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        for task in ("sentiment", "sycophancy")
    ]
    outputs = [run.communicate(timeout=900)[0] for run in runs]
    assert [run.returncode for run in runs] == [0, 0], [out[-3000:] for out in outputs]
    with duckdb.connect(str(tmp_path / "home" / "warehouse.duckdb"), read_only=True) as con:
        assert con.execute("SELECT task, count(*) FROM dsc.drafts GROUP BY task ORDER BY task").fetchall() == [
            ("sentiment", 2),
            ("sycophancy", 2),
        ]
        checkpoints = con.execute("SELECT task, status FROM dsc.sft_checkpoint ORDER BY task").fetchall()
    assert [task for task, _ in checkpoints] == ["sentiment", "sycophancy"]
    assert not [p for p in (tmp_path / "home").rglob("*") if ".partial" in p.name]
