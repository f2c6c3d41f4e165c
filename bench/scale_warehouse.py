"""``bench/scale.py --parts warehouse``: a partition's write and read on the shared warehouse's candidate stores
against the embedded DuckDB file, and writers of different partitions at once.

Each store gets the same frame: ``--rows`` rows shaped like a generation table (a prompt, a ~600-character answer, a
chat's messages as a list of dicts, integers, floats, a boolean), one task's partition. Measured per store:

- ``write``: replace one partition (the previous rows of the task deleted, the new ones inserted), as the IO manager
  does after each step;
- ``read``: one task's rows back into pandas, as the next step's input;
- ``concurrent``: ``--writers`` processes each replacing its own partition ``--partition-writes`` times at once
  (partitions as concurrent runs): partitions written per second in all.

Stores: ``postgres`` (resources/pg_warehouse.py: the shared deployment's warehouse, a server started here on
127.0.0.1), ``duckdb`` (the warehouse file: the same SQL the DuckDB IO manager runs, ``DELETE`` then ``INSERT BY
NAME`` on a fresh connection per operation, a writer that finds the file locked retrying as dagster-duckdb does), and
``delta`` (``deltalake``'s ``write_deltalake`` with ``partition_by=task`` and a ``task = ...`` predicate, read with a
partition filter) when the ``deltalake`` package is installed (it is not a dependency of dsc:
``pip install deltalake==1.6.6`` to include it). Rounds alternate the stores' order.
"""

from __future__ import annotations

import multiprocessing
import statistics
import tempfile
import time
from pathlib import Path

import duckdb
import pandas as pd

from resources.pg_warehouse import PostgresWarehouse
from resources.postgres_server import PostgresServer


def frame(task: str, rows: int) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "task": [task] * rows,
            "prompt_id": [f"{task}-{i:05d}" for i in range(rows)],
            "step": list(range(rows)),
            "prompt": [f"Write a short review of film number {i}, from someone who loved it." for i in range(rows)],
            "text": [
                f"Answer {i}: " + "A warm, funny and beautifully shot film that stays with you. " * 10
                for i in range(rows)
            ],
            "messages": [
                [{"role": "system", "content": "You review films."}, {"role": "user", "content": f"q{i}"}]
                for i in range(rows)
            ],
            "reward": [0.01 * i for i in range(rows)],
            "completion_tokens": [96] * rows,
            "accepted": [i % 3 != 0 for i in range(rows)],
        }
    )


class DuckDBStore:
    def __init__(self, path: str):
        self.path = path

    def _connect(self):
        while True:
            try:
                return duckdb.connect(self.path)
            except duckdb.IOException:  # another process holds the file: dagster-duckdb retries the same way
                time.sleep(0.01)

    def write(self, table: str, task: str, data: pd.DataFrame) -> None:
        con = self._connect()
        try:
            con.execute("CREATE SCHEMA IF NOT EXISTS dsc")
            con.register("dsc_output", data)
            exists = con.execute(
                "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'dsc' AND table_name = ?", [table]
            ).fetchone()[0]
            if not exists:
                con.execute(f"CREATE TABLE dsc.{table} AS SELECT * FROM dsc_output")
            else:
                con.execute("BEGIN")
                con.execute(f"DELETE FROM dsc.{table} WHERE task = ?", [task])
                con.execute(f"INSERT INTO dsc.{table} BY NAME SELECT * FROM dsc_output")
                con.execute("COMMIT")
        finally:
            con.close()

    def read_partition(self, table: str, task: str) -> pd.DataFrame:
        con = self._connect()
        try:
            return con.execute(f"SELECT * FROM dsc.{table} WHERE task = ?", [task]).df()
        finally:
            con.close()


class DeltaStore:
    def __init__(self, root: str):
        self.root = root

    def write(self, table: str, task: str, data: pd.DataFrame) -> None:
        from deltalake import write_deltalake

        path = f"{self.root}/{table}"
        try:
            write_deltalake(path, data, partition_by=["task"], mode="overwrite", predicate=f"task = '{task}'")
        except Exception:  # noqa: BLE001 - the first write of a table: no predicate on a table that does not exist
            write_deltalake(path, data, partition_by=["task"], mode="append")

    def read_partition(self, table: str, task: str) -> pd.DataFrame:
        from deltalake import DeltaTable

        return DeltaTable(f"{self.root}/{table}").to_pandas(filters=[("task", "=", task)])


def open_store(kind: str, location: str):
    return {"postgres": PostgresWarehouse, "duckdb": DuckDBStore, "delta": DeltaStore}[kind](location)


def _writer(kind: str, location: str, task: str, writes: int, rows: int, barrier, out) -> None:
    store, data = open_store(kind, location), frame(task, rows)
    barrier.wait()
    started = time.perf_counter()
    for _ in range(writes):
        store.write("bench", task, data)
    out.put(time.perf_counter() - started)


def measure(kind: str, location: str, args) -> dict:
    store, data = open_store(kind, location), frame("t0", args.rows)
    store.write("bench", "t0", data)  # the table exists: every timed write replaces a partition
    writes, reads = [], []
    for _ in range(args.repeats):
        started = time.perf_counter()
        store.write("bench", "t0", data)
        writes.append(time.perf_counter() - started)
        started = time.perf_counter()
        back = store.read_partition("bench", "t0")
        reads.append(time.perf_counter() - started)
        assert len(back) == args.rows, (kind, len(back))
    context = multiprocessing.get_context("spawn")
    barrier, out = context.Barrier(args.writers), context.Queue()
    tasks = [f"w{k}" for k in range(args.writers)]
    workers = [
        context.Process(target=_writer, args=(kind, location, t, args.partition_writes, args.rows, barrier, out))
        for t in tasks
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert all(w.exitcode == 0 for w in workers), kind
    wall = max(out.get() for _ in workers)  # from the barrier to the last writer's last commit (no process start)
    final = sum(len(store.read_partition("bench", t)) for t in tasks)
    assert final == args.rows * args.writers, (kind, final)
    return {
        "write_ms": round(1000 * statistics.median(writes), 2),
        "read_ms": round(1000 * statistics.median(reads), 2),
        "concurrent_partitions_per_s": round(args.writers * args.partition_writes / wall, 2),
    }


def warehouse_part(args) -> dict:
    kinds = ["postgres", "duckdb"]
    try:
        import deltalake  # noqa: F401

        kinds.append("delta")
    except ImportError:
        print("warehouse: deltalake is not installed: Delta tables are left out", flush=True)
    folder = Path(tempfile.mkdtemp(prefix="dsc-bench-warehouse-"))
    results: dict[str, list[dict]] = {kind: [] for kind in kinds}
    with PostgresServer() as server:
        for round_index in range(args.rounds):
            for kind in kinds if round_index % 2 == 0 else kinds[::-1]:
                if kind == "postgres":
                    location = server.create_database(f"warehouse_{round_index}")
                else:
                    location = str(folder / f"{kind}-{round_index}{'.duckdb' if kind == 'duckdb' else ''}")
                print(f"warehouse: round {round_index + 1}: {kind} ...", flush=True)
                results[kind].append(measure(kind, location, args))
    merged = {
        kind: {key: round(statistics.median(r[key] for r in rounds), 2) for key in rounds[0]}
        for kind, rounds in results.items()
    }
    ratios = {
        f"{kind}_over_duckdb": {key: round(merged[kind][key] / merged["duckdb"][key], 3) for key in merged[kind]}
        for kind in kinds
        if kind != "duckdb"
    }
    return {"rows": args.rows, "writers": args.writers, "stores": merged, "ratios": ratios}
