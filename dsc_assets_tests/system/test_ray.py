"""Steps on Ray (DSC_EXECUTOR=ray: dagster-ray's ray_executor) against a real local cluster of two worker nodes on
127.0.0.1 (resources/ray_cluster.py): the same tables as an in-process build; three partitions as concurrent runs
through the instance's queue on the whole shared deployment (PostgreSQL instance, cache and warehouse, two llama.cpp
servers); a Ray worker killed mid-generation and the step's retry."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import duckdb
import pytest

from dsc_assets.lib.paths import PROJECT_ROOT
from dsc_assets_tests.conftest import dagster_dev, graphql, private_tasks, run_cli
from dsc_assets_tests.system.test_backfill import LAUNCH, backfill_params

VOLATILE = ("seconds", "cached")  # how long a call took and whether this run found it cached: not the data


@pytest.fixture(scope="module")
def ray_cluster():
    from resources.ray_cluster import LocalRayCluster

    with LocalRayCluster(workers=2, cpus=1) as cluster:
        yield cluster


def _env(tmp_path: Path, name: str, **extra: str) -> dict[str, str]:
    return {
        "DSC_PROFILE": "test",
        "DSC_HOME": str(tmp_path / name / "home"),
        "DAGSTER_HOME": str(tmp_path / name / "dagster"),
        "DSC_LLAMA_THREADS": "1",  # several step processes at once on 2 cores
        "OMP_WAIT_POLICY": "PASSIVE",
        **extra,
    }


def _on_ray(cluster, **extra: str) -> dict[str, str]:
    return {"DSC_EXECUTOR": "ray", "DSC_RAY_ADDRESS": cluster.address, "PYTHONPATH": str(PROJECT_ROOT), **extra}


def _tables(home: Path, assets: list[str]) -> dict[str, list[dict]]:
    """Each asset's rows, sorted, without the per-run columns."""
    out = {}
    with duckdb.connect(str(home / "warehouse.duckdb"), read_only=True) as con:
        for asset in assets:
            df = con.execute(f"SELECT * FROM dsc.{asset}").df()
            df = df[[c for c in df.columns if c not in VOLATILE]]
            out[asset] = sorted(df.astype(str).to_dict("records"), key=lambda row: sorted(row.items()))
    return out


def _calls(home: Path) -> dict[str, tuple]:
    """The call cache by key: what was answered (text, finish reason, tokens), not how long it took."""
    with duckdb.connect(str(home / "cache.duckdb"), read_only=True) as con:
        rows = con.execute(
            "SELECT key, kind, model, request, json_extract_string(response, '$.text'), "
            "json_extract_string(response, '$.finish_reason'), json_extract_string(response, '$.completion_tokens') "
            "FROM calls"
        ).fetchall()
    return {row[0]: row[1:] for row in rows}


def _ray_jobs(cluster, run_ids: set[str]) -> list:
    from ray.job_submission import JobSubmissionClient

    jobs = JobSubmissionClient(cluster.address).list_jobs()
    return [job for job in jobs if (job.metadata or {}).get("dagster/run-id") in run_ids]


def _run_ids(dagster_home: str) -> set[str]:
    with dg.DagsterInstance.from_config(dagster_home) as instance:
        return {run.run_id for run in instance.get_runs()}


SELECTION = ["raw_prompts", "drafts", "critiques", "revisions", "reward_scores"]


def test_steps_on_ray_write_the_tables_an_in_process_build_writes(tmp_path, ray_cluster):
    """The sentiment partition's chain through reward_scores, built from empty caches twice: in process (home A) and
    with every step a Ray job on the two worker nodes (home B). Same tables row for row, same calls (keys, texts)."""
    command = ["dsc", "run", "--tasks", "sentiment", "--select", ",".join(SELECTION)]
    started = time.monotonic()
    local = run_cli(command, _env(tmp_path, "a"))
    assert local.returncode == 0, local.stdout[-3000:] + local.stderr[-3000:]
    in_process_s, started = time.monotonic() - started, time.monotonic()
    ray = run_cli(command, _env(tmp_path, "b", **_on_ray(ray_cluster)))
    assert ray.returncode == 0, ray.stdout[-3000:] + ray.stderr[-3000:]
    print(f"in process {in_process_s:.0f}s, on Ray {time.monotonic() - started:.0f}s")
    jobs = _ray_jobs(ray_cluster, _run_ids(str(tmp_path / "b" / "dagster")))
    steps = {job.metadata["dagster/op"] for job in jobs}
    assert set(SELECTION) <= steps, steps  # every asset (and its check) was a Ray job
    assert all(job.status == "SUCCEEDED" for job in jobs)
    assert len({job.driver_node_id for job in jobs}) == 2, "the steps ran on both worker nodes"
    a, b = tmp_path / "a" / "home", tmp_path / "b" / "home"
    assert _tables(a, SELECTION) == _tables(b, SELECTION)
    calls = _calls(a)
    assert len(calls) >= 3 * 4 and calls == _calls(b)  # drafts, critiques, revisions of 4 prompts, and the judge's


TASKS = ["privacy", "sentiment", "sycophancy"]


def _warehouse_rows(frame) -> list:
    """A table's rows without the per-run columns, as canonical JSON, sorted: DuckDB's and PostgreSQL's alike."""
    import json

    from resources.pg_warehouse import dumps

    frame = frame[[c for c in frame.columns if c not in VOLATILE]]
    return sorted(json.dumps(row, sort_keys=True) for row in json.loads(dumps(frame)))


def test_three_partitions_as_concurrent_runs_on_the_shared_deployment_equal_a_serial_build(
    tmp_path, ray_cluster, postgres_server
):
    """Issue 25's acceptance: a backfill of three tasks through `dagster dev` (the UI's path) on the shared
    deployment (the Dagster instance, the call cache and the warehouse on PostgreSQL; every step on the two Ray
    workers; generation over two llama.cpp servers) with the queue at DSC_MAX_CONCURRENT_RUNS=3: the three runs are
    under way at once and succeed. The same partitions built one after the other in process on the embedded default
    (SQLite, DuckDB) with a copy of that cache make no model call and write the same tables, row for row."""
    from resources.llama_server import start_servers
    from resources.pg_warehouse import PostgresWarehouse
    from resources.shared_deployment import pool_profile

    root = private_tasks(tmp_path / "prompts", {task: 2 for task in TASKS})
    servers = start_servers(2, model_cache_dir=tmp_path / "models", n_threads=1, n_ctx=1024)
    try:
        header = "the test profile, generating through a pool of two llama.cpp servers (the 135M model)"
        (tmp_path / "shared.yaml").write_text(pool_profile(servers, "test", "smollm2-135m", "test", header))
        # names of this test's own: the session's server holds other tests' databases (cache_<pid> among them)
        urls = postgres_server.shared_databases(f"ray_{os.getpid()}_")
        on_ray = _env(tmp_path, "c", DSC_PROMPTS_DIR=str(root), DSC_MAX_CONCURRENT_RUNS="3", **_on_ray(ray_cluster))
        on_ray.update(DSC_PROFILE=str(tmp_path / "shared.yaml"), **urls)
        env = {**os.environ, **on_ray, "PATH": f"{os.path.dirname(sys.executable)}{os.pathsep}{os.environ['PATH']}"}
        with dagster_dev(env) as port:
            assert "max_concurrent_runs: 3" in (tmp_path / "c" / "dagster" / "dagster.yaml").read_text()
            params = backfill_params(TASKS, ["raw_prompts", "drafts"])
            result = graphql(port, LAUNCH, {"params": params})["data"]["launchPartitionBackfill"]
            assert result["__typename"] == "LaunchBackfillSuccess", result
            run_ids = set(result["launchedRunIds"])
            with dg.DagsterInstance.from_config(env["DAGSTER_HOME"]) as instance:
                assert type(instance.run_storage).__name__ == "PostgresRunStorage"
                deadline = time.monotonic() + 600
                while time.monotonic() < deadline:
                    runs = instance.get_runs(dg.RunsFilter(run_ids=list(run_ids)))
                    if len(runs) == 3 and all(r.is_finished for r in runs):
                        break
                    time.sleep(2)
                records = instance.get_run_records(dg.RunsFilter(run_ids=list(run_ids)))
        assert sorted((r.dagster_run.tags["dagster/partition"], r.dagster_run.status.value) for r in records) == [
            (task, "SUCCESS") for task in TASKS
        ]
        starts, ends = [r.start_time for r in records], [r.end_time for r in records]
        assert max(starts) < min(ends), "the three runs were under way at the same time"
        print(
            f"three concurrent runs, shared deployment: {max(ends) - min(starts):.0f}s from the first start to the last end"
        )
        jobs = _ray_jobs(ray_cluster, run_ids)
        assert {job.metadata["dagster/op"] for job in jobs} >= {"raw_prompts", "drafts"}
        assert len({job.driver_node_id for job in jobs}) == 2
        assert not (tmp_path / "c" / "home" / "warehouse.duckdb").exists()
        assert not (tmp_path / "c" / "home" / "cache.duckdb").exists()

        # The embedded default, serially, with a copy of the shared cache: it must make no call (asserted on the cache).
        serial_env = _env(tmp_path, "s", DSC_PROMPTS_DIR=str(root), DSC_PROFILE=str(tmp_path / "shared.yaml"))
        one_by_one = tmp_path / "s" / "home"
        one_by_one.mkdir(parents=True)
        copied = run_cli(
            ["dsc", "cache", "copy", "--from", urls["DSC_CACHE_URL"], "--to", str(one_by_one / "cache.duckdb")],
            serial_env,
        )
        assert copied.returncode == 0, copied.stdout + copied.stderr
        calls = _calls(one_by_one)
        assert len(calls) == 3 * 2, "each task's two drafts, made once across the three runs"
        serial = run_cli(["dsc", "run", "--tasks", ",".join(TASKS), "--select", "raw_prompts,drafts"], serial_env)
        assert serial.returncode == 0, serial.stdout[-3000:] + serial.stderr[-3000:]
        assert _calls(one_by_one) == calls, "the serial build answered every call from the copied cache"
        shared = PostgresWarehouse(urls["DSC_WAREHOUSE_URL"])
        with duckdb.connect(str(one_by_one / "warehouse.duckdb"), read_only=True) as con:
            for asset in ("raw_prompts", "drafts"):
                local = con.execute(f"SELECT * FROM dsc.{asset}").df()
                assert len(local) > 0
                assert _warehouse_rows(shared.read(asset)) == _warehouse_rows(local), asset
    finally:
        for server in servers:
            server.stop()


FAULT_PROFILE = """# the test profile, answering one prompt at a time: each draft is cached the moment it is finished
extends: {test}
generator: {{batch_size: 1}}
max_prompts_per_task: 6
"""


def _chat_rows(home: Path, after: float = 0.0) -> int | None:
    """Chat calls in the cache (created after ``after``), or None while a writer holds the file."""
    try:
        with duckdb.connect(str(home / "cache.duckdb"), read_only=True) as con:
            query = "SELECT count(*) FROM calls WHERE kind = 'chat' AND created_at > ?"
            return con.execute(query, [after]).fetchone()[0]
    except (duckdb.IOException, duckdb.CatalogException):
        return None


def _step_process(step: str) -> tuple[int, int] | None:
    """(pid, parent pid) of the `dagster api execute_step` process running ``step``: its parent is the Ray worker
    (the job's supervisor actor) that started it."""
    for proc in Path("/proc").iterdir():
        try:
            environ = (proc / "environ").read_bytes().split(b"\0")
            if (
                f"DAGSTER_RUN_STEP_KEY={step}".encode() in environ
                and b"execute_step" in (proc / "cmdline").read_bytes()
            ):
                return int(proc.name), int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
    return None


def test_a_ray_worker_killed_mid_generation_costs_only_what_was_in_flight(tmp_path, ray_cluster):
    """`kill -9` of the Ray worker running the drafts step once some drafts are cached: Ray ends the step's process
    with it, Dagster's health check finds the Ray job failed and the step's RetryPolicy starts it again; the retry
    asks the model only for the drafts not cached before the kill, and the table holds each prompt once."""
    root = private_tasks(tmp_path / "prompts", {"sentiment": 6})
    profile = tmp_path / "fault.yaml"
    profile.write_text(FAULT_PROFILE.format(test=PROJECT_ROOT / "profiles" / "test.yaml"))
    settings = _env(tmp_path, "f", DSC_PROFILE=str(profile), DSC_PROMPTS_DIR=str(root), DSC_STEP_RETRIES="1")
    env = {**os.environ, **settings, **_on_ray(ray_cluster)}
    env["PATH"] = f"{os.path.dirname(sys.executable)}{os.pathsep}{os.environ['PATH']}"
    home, log = tmp_path / "f" / "home", tmp_path / "run.log"
    with open(log, "w") as out:
        command = ["dsc", "run", "--tasks", "sentiment", "--select", "raw_prompts,drafts"]
        run = subprocess.Popen(command, cwd=PROJECT_ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 400
        while (_chat_rows(home) or 0) < 2:
            assert run.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.2)
        step, worker = _step_process("drafts")
        os.kill(worker, signal.SIGKILL)  # the Ray worker process; Ray kills the step's process group with it
        killed_at = time.time()
        while (
            Path(f"/proc/{step}").exists()
            and Path(f"/proc/{step}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
        ):
            assert time.time() - killed_at < 30, "the step's process outlived its Ray worker"
            time.sleep(0.2)
        # The step may commit one more answer between its worker's death and its own (Ray ends it within a second):
        # "before" is what the cache holds once the step's process is gone.
        dead_at = time.time()
        while (cached_before := _chat_rows(home)) is None:
            time.sleep(0.2)
        assert 2 <= cached_before < 6, f"killed mid-generation: {cached_before} of 6 drafts cached"
        assert run.wait(timeout=600) == 0, log.read_text()[-3000:]
    finally:
        if run.poll() is None:
            run.kill()
    jobs = [
        job for job in _ray_jobs(ray_cluster, _run_ids(env["DAGSTER_HOME"])) if job.metadata["dagster/op"] == "drafts"
    ]
    assert sorted(job.status for job in jobs) == ["FAILED", "SUCCEEDED"], [(j.submission_id, j.status) for j in jobs]
    assert _chat_rows(home) == 6
    print(f"Ray worker killed with {cached_before} of 6 drafts cached; the retry made {6 - cached_before} calls")
    assert _chat_rows(home, after=dead_at) == 6 - cached_before, "the retry asked only for the uncached drafts"
    with duckdb.connect(str(home / "warehouse.duckdb"), read_only=True) as con:
        rows = con.execute("SELECT prompt_id, cached FROM dsc.drafts WHERE task = 'sentiment'").fetchall()
    assert sorted(r[0] for r in rows) == sorted(r[0] for r in _prompt_ids(root / "sentiment"))
    assert sum(1 for r in rows if r[1]) == cached_before  # the retry found these in the cache


def _prompt_ids(task_dir: Path) -> list[tuple[str]]:
    import json

    return [(json.loads(line)["id"],) for line in (task_dir / "prompts.jsonl").read_text().splitlines()]
