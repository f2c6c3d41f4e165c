"""The command line as a user runs it: Dagster's own CLI, `dsc run`, and a run killed with SIGKILL."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import yaml

from dsc_assets_tests.conftest import PROJECT_ROOT, run_cli


def _env(tmp_path: Path, **extra) -> dict[str, str]:
    (tmp_path / "dagster_home").mkdir(exist_ok=True)
    return {
        "DSC_PROFILE": "test",
        "DSC_HOME": str(tmp_path / "home"),
        "DAGSTER_HOME": str(tmp_path / "dagster_home"),
        **extra,
    }


def test_dagster_asset_materialize_selects_the_chain(tmp_path):
    result = run_cli(
        [
            "dagster",
            "asset",
            "materialize",
            "-m",
            "dsc_assets.definitions",
            "--select",
            "raw_prompts,drafts,critiques,revisions",
            "--partition",
            "sentiment",
        ],
        _env(tmp_path),
    )
    assert result.returncode == 0, result.stderr[-3000:]
    with duckdb.connect(str(tmp_path / "home" / "warehouse.duckdb"), read_only=True) as con:
        rows = con.execute("SELECT count(*) FROM dsc.revisions WHERE task = 'sentiment'").fetchone()[0]
        prompts = con.execute("SELECT count(*) FROM dsc.raw_prompts WHERE split = 'train'").fetchone()[0]
    assert rows == prompts > 0


def test_killed_run_loses_only_the_rows_in_flight(tmp_path):
    """kill -9 during drafts, run again: the rerun calls the model once per row not finished before the kill."""
    profile = yaml.safe_load((PROJECT_ROOT / "profiles" / "test.yaml").read_text())
    profile.update(max_prompts_per_task=24, max_tokens_cap=48)
    profile_path = tmp_path / "kill.yaml"
    profile_path.write_text(yaml.safe_dump(profile))
    env = {
        **os.environ,
        **_env(tmp_path),
        "PYTHONUNBUFFERED": "1",
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
    }
    command = [
        "dsc",
        "run",
        "--tasks",
        "sentiment",
        "--profile",
        str(profile_path),
        "--select",
        "raw_prompts,drafts,critiques,revisions",
    ]
    process = subprocess.Popen(
        command, cwd=PROJECT_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    deadline = time.monotonic() + 300
    for line in process.stdout:  # wait until some drafts are committed and others in flight, then kill without warning
        progress = re.search(r"draft step 0: (\d+)/(\d+) rows generated", line)
        if (progress and int(progress.group(1)) < int(progress.group(2))) or time.monotonic() > deadline:
            break
    os.kill(process.pid, signal.SIGKILL)
    process.wait()

    with duckdb.connect(str(tmp_path / "home" / "cache.duckdb"), read_only=True) as con:  # closed before the rerun
        done_before_kill = con.execute("SELECT count(*) FROM calls").fetchone()[0]
    assert 5 <= done_before_kill < 24, "the kill must land inside drafts"

    rerun = subprocess.run(command, cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stdout[-3000:] + rerun.stderr[-3000:]
    with duckdb.connect(str(tmp_path / "home" / "warehouse.duckdb"), read_only=True) as con:  # not corrupt, not locked
        train = con.execute("SELECT count(*) FROM dsc.raw_prompts WHERE split = 'train'").fetchone()[0]
        drafts = con.execute("SELECT count(*) FROM dsc.drafts").fetchone()[0]
    assert drafts == train
    # The rerun asked the model only for the drafts not finished before the kill; the rest came from the cache.
    metadata = _latest_metadata(tmp_path / "dagster_home", "drafts", "sentiment")
    assert metadata["model_calls"] == train - done_before_kill
    assert metadata["cache_hits"] == done_before_kill


def _latest_metadata(dagster_home: Path, asset: str, partition: str) -> dict:
    import dagster as dg

    with dg.DagsterInstance.from_config(str(dagster_home)) as instance:
        records = instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=dg.AssetKey(asset), asset_partitions=[partition]), limit=1
        ).records
        materialization = records[0].event_log_entry.asset_materialization
        return {key: value.value for key, value in materialization.metadata.items()}


def _first_error_line(stderr: str) -> str:
    """The first line of stderr that is not Dagster's log of the run (those start with a timestamp)."""
    return next(line for line in stderr.splitlines() if line.strip() and not line[:4].isdigit())


def test_first_error_line_names_a_server_fault(tmp_path):
    import http.server
    import threading

    class Failing(http.server.BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802  the server is down behind its proxy
            self.send_response(500)
            self.end_headers()
            self.wfile.write(b"upstream model crashed")

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Failing)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    profile = yaml.safe_load((PROJECT_ROOT / "profiles" / "test.yaml").read_text())
    profile["generator"] = {
        "backend": "openai",
        "base_url": f"http://127.0.0.1:{server.server_port}/v1",
        "model": "m",
        "max_retries": 0,
        "timeout_s": 10,
    }
    path = tmp_path / "server.yaml"
    path.write_text(yaml.safe_dump(profile))
    try:
        result = run_cli(
            ["dsc", "run", "--tasks", "sentiment", "--profile", str(path), "--select", "raw_prompts,drafts"],
            _env(tmp_path),
        )
    finally:
        server.shutdown()
    assert result.returncode == 1
    first = _first_error_line(result.stderr)
    assert first.startswith("dsc run: sentiment: drafts failed: GenerationError:") and "500" in first, first
    assert "Stack Trace" not in result.stderr and "DagsterExecutionStepExecutionError" not in result.stderr


def _session_members(session: int) -> list[str]:
    listing = subprocess.run(["ps", "-eo", "sid=,pid=,args="], capture_output=True, text=True).stdout
    return [line for line in listing.splitlines() if line.split()[0] == str(session)]


def test_a_run_killed_with_sigkill_leaves_no_process_behind(tmp_path):
    """`kill -9` of `dsc run` mid-step: the step's helpers (Dagster's compute-log `tail -F` mirrors and their
    watch_orphans guards) end by themselves once their parent is gone (the guards poll each second), so within a
    few seconds nothing of the run's session is left."""
    env = {**os.environ, **_env(tmp_path), "PATH": f"{os.path.dirname(sys.executable)}{os.pathsep}{os.environ['PATH']}"}
    run = subprocess.Popen(
        ["dsc", "run", "--tasks", "sentiment", "--select", "raw_prompts,drafts"],
        cwd=PROJECT_ROOT,
        env=env,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    for line in run.stdout:  # mid-step: the drafts are being generated
        if "to generate" in line:
            break
    assert any("tail" in line or "watch_orphans" in line for line in _session_members(run.pid)), _session_members(
        run.pid
    )  # helpers exist mid-step
    os.kill(run.pid, signal.SIGKILL)
    run.wait()
    deadline = time.monotonic() + 15
    while _session_members(run.pid) and time.monotonic() < deadline:
        time.sleep(0.25)
    assert not _session_members(run.pid), _session_members(run.pid)
