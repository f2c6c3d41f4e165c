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
