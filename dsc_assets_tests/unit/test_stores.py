"""Concurrent runs share the call cache and the warehouse: `dsc run` beside another run, a process holding the cache
for a while, and (test_backfill.py) a backfill of three partitions through the instance's run queue."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import duckdb
import pytest

from dsc_assets.lib.paths import PROJECT_ROOT
from resources.stores import CacheBusyError, CallCache, close_all

HOLD = """
import sys, time, duckdb
con = duckdb.connect(sys.argv[1])  # what the old cache did for a whole run
print("holding", flush=True)
time.sleep(float(sys.argv[2]))
"""


def _hold(path, seconds: float) -> subprocess.Popen:
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(path), str(seconds)], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "holding"
    return holder


def test_cache_waits_while_another_process_holds_it(tmp_path):
    path = tmp_path / "cache.duckdb"
    CallCache(path).put("k0", "chat", "m", {"q": 0}, {"text": "a"}, 0.1)
    close_all()
    holder = _hold(path, 1.5)
    started = time.monotonic()
    CallCache(path).put("k1", "chat", "m", {"q": 1}, {"text": "b"}, 0.1)  # waits for its turn, then writes
    assert time.monotonic() - started > 0.5
    assert CallCache(path).get("k1") == {"text": "b"} and CallCache(path).count() == 2
    holder.wait()
    close_all()
    # plan's read-only view sees the same rows, and a missing file reads as empty
    assert CallCache(path, read_only=True).get_many(["k0", "k1"]).keys() == {"k0", "k1"}
    assert CallCache(tmp_path / "none.duckdb", read_only=True).get("k0") is None
    close_all()


def test_a_cache_held_too_long_fails_with_what_to_do(tmp_path, monkeypatch):
    path = tmp_path / "cache.duckdb"
    monkeypatch.setenv("DSC_CACHE_WAIT_S", "0.5")
    holder = _hold(path, 5)
    try:
        with pytest.raises(CacheBusyError, match="another process kept it open") as error:
            CallCache(path).get("k")
        assert "Re-execute" in str(error.value) and "cached" in str(error.value)
    finally:
        holder.kill()
        holder.wait()


def test_instance_config_queues_runs_and_leaves_a_users_own_alone(tmp_path, monkeypatch):
    import dagster as dg

    from dsc_assets.cli.common import prepare_environment as _prepare_environment

    home = tmp_path / "dagster"
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")  # what older dsc versions wrote
    _prepare_environment(None)
    with dg.DagsterInstance.from_config(str(home)) as instance:
        assert instance.get_concurrency_config().run_queue_config.max_concurrent_runs == 1
    (home / "dagster.yaml").write_text(
        "telemetry:\n  enabled: false\nconcurrency:\n  runs:\n    max_concurrent_runs: 2\n"
    )
    _prepare_environment(None)  # the user's own file (no dsc marker): kept
    assert "max_concurrent_runs: 2" in (home / "dagster.yaml").read_text()


EXIT_AFTER_WRITES = """
import sys, time
from resources.stores import CallCache, IDLE_CLOSE_S
cache = CallCache(sys.argv[1])
for i in range(20):
    cache.put(f"key-{i}", "chat", "model", {"i": i}, {"text": "x" * 1000}, 0.1)
time.sleep(IDLE_CLOSE_S + float(sys.argv[2]))  # exit while the idle-close timer fires
"""


def test_a_process_exiting_as_the_cache_closes_exits_cleanly(tmp_path):
    """A CLI run (`dagster asset materialize`) ended as the cache's idle timer fired: with a daemon timer, the
    interpreter ended the timer's thread inside DuckDB's close() and the process aborted after a successful run
    (exit -6, 'FATAL: exception not rethrown'; 10 of 40 such exits here). The timer is joined at exit instead."""
    offsets = [round(-0.03 + 0.004 * i, 3) for i in range(16)]  # across the moment the timer fires
    script = tmp_path / "exit_after_writes.py"
    script.write_text(EXIT_AFTER_WRITES)
    env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT)}
    failures = []
    for pair in range(0, len(offsets), 2):  # two at a time: 2 cores
        procs = [
            subprocess.Popen(
                [sys.executable, str(script), str(tmp_path / f"cache{i}.duckdb"), str(offsets[i])],
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
            for i in (pair, pair + 1)
        ]
        for i, proc in zip((pair, pair + 1), procs):
            out, _ = proc.communicate(timeout=120)
            if proc.returncode != 0:
                failures.append((offsets[i], proc.returncode, out[-300:]))
    assert not failures, failures
    with duckdb.connect(str(tmp_path / "cache0.duckdb"), read_only=True) as con:  # and the writes are all there
        assert con.execute("SELECT count(*) FROM calls").fetchone()[0] == 20


def test_a_cache_copied_to_parquet_and_back_keeps_every_row_and_copies_each_key_once(tmp_path, capsys):
    """A home that will not survive (a study across sessions) leaves its calls in a Parquet file to commit; copying it
    into a new home's cache gives the same rows, created_at and seconds included, and a second copy adds nothing."""
    from dsc_assets.cli.main import main
    from resources.cache_files import ParquetCalls

    def copy(source, target) -> str:
        assert main(["cache", "copy", "--from", str(source), "--to", str(target)]) == 0
        return capsys.readouterr().out

    source, back, parquet = tmp_path / "a.duckdb", tmp_path / "b.duckdb", tmp_path / "calls" / "study.parquet"
    cache = CallCache(source)
    for n in range(12):
        cache.put(f"k{n:03d}", "chat" if n % 3 else "score", f"m{n % 2}", {"q": f"é {n}"}, {"text": f"✓ {n}"}, n / 4)
    close_all()
    assert "12 copied" in copy(source, parquet)
    cache.put("k999", "chat", "m0", {"q": "new"}, {"text": "later"}, 1.0)  # the home went on: one more call
    close_all()
    again = copy(source, parquet)
    assert "13 calls read" in again and " 1 copied" in again, again
    assert "13 copied" in copy(parquet, back)

    def rows(store):
        return [tuple(row) for batch in store.rows(batch=5) for row in batch]

    original = rows(CallCache(source, read_only=True))
    assert rows(ParquetCalls(parquet)) == original == rows(CallCache(back, read_only=True))
    assert CallCache(back, read_only=True).get("k004") == {"text": "✓ 4"}


def test_mean_seconds_leaves_out_unmeasured_rows_beside_measured_ones_and_keeps_a_scorer_that_takes_no_time(tmp_path):
    """Judge scores cached before scores recorded their time sit at 0.0 s beside measured ones, and a call during which
    the run was paused took 200x the others: the plan's rate is the mean of the measured, typical ones; a scorer whose
    every call took 0.0 s (VADER) keeps a rate of 0, not an unknown one."""
    cache = CallCache(tmp_path / "cache.duckdb")
    for n in range(6):
        cache.put(f"old{n}", "score", "judge", {"n": n}, {"score": 0.5}, 0.0)
    for n, seconds in enumerate((4.0, 5.0)):
        cache.put(f"new{n}", "score", "judge", {"n": n}, {"score": 0.5}, seconds)
    for n in range(3):
        cache.put(f"vader{n}", "score", "vader", {"n": n}, {"score": 0.1}, 0.0)
    assert cache.mean_seconds("judge") == 4.5 and cache.mean_seconds("vader") == 0.0
    assert cache.mean_seconds("absent") is None
    for n in range(40):  # a judge's verdicts record the time since the previous one: a wave's time lands on its first
        cache.put(f"wave{n}", "score", "judge", {"w": n}, {"score": 0.5}, 36.0 if n % 8 == 0 else 0.01)
    typical = (4.0 + 5.0 + 5 * 36.0 + 35 * 0.01) / 42
    assert cache.mean_seconds("judge") == pytest.approx(typical)
    cache.put("paused", "score", "judge", {"n": "p"}, {"score": 0.5}, 900.0)  # the run sat stopped for 15 minutes
    assert cache.mean_seconds("judge") == pytest.approx(typical)
    cache.put("reward_model:v1", "score", "reward_model:v1", {}, {"score": 1.0}, 1.5)
    assert cache.mean_seconds("reward_model:*") == 1.5
    close_all()
