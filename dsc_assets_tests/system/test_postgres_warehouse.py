"""The warehouse on a real PostgreSQL server (resources/pg_warehouse.py): partitions written whole and read back as
written, writers of many partitions at once, a server that dies mid-write, and `dsc run` building the same tables on
it as the DuckDB warehouse does."""

from __future__ import annotations

import multiprocessing
import threading
import time

import duckdb
import numpy as np
import pandas as pd
import psycopg2
import pytest

from dsc_assets_tests.conftest import run_cli
from resources.pg_warehouse import PostgresWarehouse, WarehouseUnavailableError, dumps

VOLATILE = ["cached"]  # whether this run found a call in the cache (the first run made them): not the data


def _frame(task: str, rows: int, start: int = 0) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "task": [task] * rows,
            "prompt_id": [f"{task}-{i:03d}" for i in range(start, start + rows)],
            "step": np.arange(start, start + rows, dtype="int64"),
            "reward": [0.25 * i for i in range(start, start + rows)],
            "accepted": [i % 2 == 0 for i in range(start, start + rows)],
            "text": [f"answer {i}" if i % 3 else None for i in range(start, start + rows)],
            "messages": [[{"role": "user", "content": f"q{i}"}] for i in range(start, start + rows)],
            "scores": [np.array([i, i + 0.5]) for i in range(start, start + rows)],
        }
    )


def test_partitions_are_written_whole_and_read_back_as_written(postgres_url):
    warehouse = PostgresWarehouse(postgres_url)
    assert warehouse.read("samples", ["a"]) is None  # never written
    warehouse.write("samples", "a", _frame("a", 5))
    warehouse.write("samples", "b", _frame("b", 3))
    back = warehouse.read("samples", ["a"])
    assert list(back.columns) == list(_frame("a", 5).columns)
    assert back["step"].dtype == "int64" and back["reward"].dtype == "float64" and back["accepted"].dtype == bool
    assert back.loc[0, "messages"] == [{"role": "user", "content": "q0"}] and back.loc[1, "scores"] == [1, 1.5]
    assert back["text"].isna().sum() == 2 and back.loc[1, "text"] == "answer 1"
    assert dumps(back) == dumps(_frame("a", 5))
    # a partition is replaced, the other kept; a new column is added, older rows read NULL
    again = _frame("a", 2, start=10).assign(guard=[0.5, 1.0])
    warehouse.write("samples", "a", again)
    assert dumps(warehouse.read("samples", ["a"])) == dumps(again)
    assert dumps(warehouse.read("samples", ["b"])) == dumps(
        _frame("b", 3).assign(guard=np.nan)
    )  # NULL reads NaN, as DuckDB
    # an empty output empties its partition; a table first written empty takes the next output's types
    warehouse.write("samples", "a", _frame("a", 0))
    assert len(warehouse.read("samples", ["a"])) == 0 and len(warehouse.read("samples", None)) == 3
    warehouse.write("placeholder", "a", pd.DataFrame({"task": [], "value": []}))
    warehouse.write("placeholder", "b", pd.DataFrame({"task": ["b"], "value": [3]}))
    assert warehouse.read("placeholder", ["b"])["value"].tolist() == [3]
    # integers then floats widen the column; a type that cannot hold the table's values is named
    warehouse.write("placeholder", "c", pd.DataFrame({"task": ["c"], "value": [2.5]}))
    assert sorted(warehouse.read("placeholder", None)["value"]) == [2.5, 3.0]
    with pytest.raises(ValueError, match=r"dsc.placeholder: column 'value' holds DOUBLE PRECISION .* BOOLEAN"):
        warehouse.write("placeholder", "d", pd.DataFrame({"task": ["d"], "value": [True]}))
    assert sorted(warehouse.tables()) == ["placeholder", "samples"]


def _writer(url: str, task: str, rounds: int, barrier) -> None:
    warehouse = PostgresWarehouse(url)
    barrier.wait()
    for k in range(rounds):
        warehouse.write("samples", task, _frame(task, 20 + k, start=100 * k))


def test_writers_of_many_partitions_at_once_leave_each_partitions_last_write(postgres_url):
    """Four processes rewrite their own partition of one table (and create it) at the same moment, ten times each:
    no error, and the table holds exactly each partition's last write."""
    tasks, rounds = ["t0", "t1", "t2", "t3"], 10
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(len(tasks))
    workers = [context.Process(target=_writer, args=(postgres_url, task, rounds, barrier)) for task in tasks]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(120)
    assert [worker.exitcode for worker in workers] == [0] * len(tasks)
    table = PostgresWarehouse(postgres_url).read("samples", None)
    for task in tasks:
        expected = _frame(task, 20 + rounds - 1, start=100 * (rounds - 1))
        mine = table[table["task"] == task].sort_values("step").reset_index(drop=True)
        assert dumps(mine) == dumps(expected)


def test_a_server_that_dies_mid_write_keeps_the_old_partition_whole(own_postgres_server):
    url = own_postgres_server.create_database("dsc")
    warehouse = PostgresWarehouse(url)
    warehouse.write("samples", "a", _frame("a", 4))
    # Another session holds one of the partition's rows, so the rewrite stops inside its transaction (at DELETE);
    # the server is then killed (pg_ctl -m immediate) with the write half done.
    holder = psycopg2.connect(url)
    holder.cursor().execute("SELECT * FROM dsc.samples WHERE prompt_id = 'a-002' FOR UPDATE")
    failures: list[BaseException] = []

    def rewrite() -> None:
        try:
            warehouse.write("samples", "a", _frame("a", 9, start=50))
        except BaseException as error:  # noqa: BLE001
            failures.append(error)

    thread = threading.Thread(target=rewrite)
    thread.start()
    watcher = psycopg2.connect(url)
    watcher.autocommit = True  # pg_stat_activity is read once per transaction: each query its own
    with watcher.cursor() as cursor:
        for _ in range(200):
            cursor.execute("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'")
            if cursor.fetchone()[0]:
                break
            time.sleep(0.05)
        else:
            pytest.fail(f"the rewrite never waited inside its transaction ({failures})")
    watcher.close()
    own_postgres_server.stop("immediate")
    thread.join(30)
    holder.close()
    assert len(failures) == 1 and isinstance(failures[0], WarehouseUnavailableError), failures
    assert "went away while samples's partition 'a' was written" in str(failures[0])
    assert "nothing of it was kept; run the step again" in str(failures[0])
    with pytest.raises(WarehouseUnavailableError, match=rf"PostgreSQL server at {url} cannot be reached"):
        warehouse.read("samples", ["a"])
    own_postgres_server.start()
    assert dumps(warehouse.read("samples", ["a"])) == dumps(_frame("a", 4))


def test_dsc_run_builds_the_same_tables_on_the_shared_warehouse_as_on_duckdb(postgres_server, tmp_path):
    """`dsc run` with DSC_WAREHOUSE_URL writes no warehouse file and the same rows as the embedded default on the same
    cache (the second run makes no model call); `dsc gate` and the verdict printer read it back."""
    warehouse_url = postgres_server.create_database(f"warehouse_{tmp_path.name[-12:]}")
    cache = str(tmp_path / "cache.duckdb")
    shared = {
        "DSC_PROFILE": "test",
        "DSC_HOME": str(tmp_path / "shared"),
        "DAGSTER_HOME": str(tmp_path / "shared_dagster"),
        "DSC_CACHE_URL": cache,
        "DSC_WAREHOUSE_URL": warehouse_url,
    }
    embedded = {**shared, "DSC_HOME": str(tmp_path / "embedded"), "DAGSTER_HOME": str(tmp_path / "embedded_dagster")}
    del embedded["DSC_WAREHOUSE_URL"]
    select = ["dsc", "run", "--tasks", "sentiment", "--select", "raw_prompts,drafts"]
    for env in (shared, embedded):
        done = run_cli(select, env)
        assert done.returncode == 0, done.stdout + done.stderr
    assert not (tmp_path / "shared" / "warehouse.duckdb").exists()
    with duckdb.connect(str(tmp_path / "embedded" / "warehouse.duckdb"), read_only=True) as con:
        for table in ("raw_prompts", "drafts"):
            local = (
                con.execute(f"SELECT * FROM dsc.{table} ORDER BY prompt_id")
                .df()
                .drop(columns=VOLATILE, errors="ignore")
            )
            remote = PostgresWarehouse(warehouse_url).read(table, ["sentiment"]).sort_values("prompt_id")
            remote = remote.reset_index(drop=True).drop(columns=VOLATILE, errors="ignore")
            assert len(local) > 0 and dumps(remote) == dumps(local), table
    gate = run_cli(["dsc", "gate", "--partition", "sentiment", "--assets", "raw_prompts,drafts"], shared)
    assert gate.returncode == 0 and "raw_prompts" in gate.stdout, gate.stdout + gate.stderr
