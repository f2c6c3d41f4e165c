"""Stores: the content-addressed cache of every model call, in DuckDB.

Each finished call is committed on its own, so a killed run loses at most the call in flight, and a rerun
asks the model only for keys it has never seen.

DuckDB lets one process at a time open a file for writing, and a reader excludes writers in other processes. So the
cache never keeps the file open for long: an operation opens it (or reuses the connection the previous operation
left), and the connection is closed once no operation used it for ``IDLE_CLOSE_S`` (opening costs ~10-40 ms, so a
loop of cache reads and writes keeps one connection; a model call of a second or more between two writes does not
keep the file). Meanwhile another process (a run from the UI, `dsc run`, a backfill's run, the sensor) waits for its
turn and retries. `dsc plan` opens it read-only.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import dagster as dg
import duckdb
import pandas as pd
from dagster_duckdb_pandas import DuckDBPandasIOManager, DuckDBPandasTypeHandler

from resources.call_rows import call_row, seconds_query

# Within one process the operations take turns: DuckDB refuses a read-only and a read-write connection to the same
# file at once in one process, and the turns are short.
_LOCK = threading.RLock()
IDLE_CLOSE_S = 0.3


class _Lease:
    """The one open connection of this process to one cache file, closed when idle."""

    def __init__(self, path: str, con: duckdb.DuckDBPyConnection, read_only: bool):
        self.path, self.con, self.read_only = path, con, read_only
        self.timer: threading.Timer | None = None

    def hold(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def release(self) -> None:
        timer = threading.Timer(IDLE_CLOSE_S, lambda: _close_idle(self, timer))
        # Not a daemon: the interpreter joins it at exit (at most IDLE_CLOSE_S), so the connection closes before
        # finalization. A daemon timer that fired during finalization was ended inside DuckDB's close() when it
        # asked for the GIL back; the forced unwind through the binding's catch-all aborted the process after a
        # successful run ("terminate called ... FATAL: exception not rethrown", exit -6 in CI).
        timer.daemon = False
        self.timer = timer
        timer.start()

    def close(self) -> None:
        self.hold()
        self.con.close()


_LEASES: dict[str, _Lease] = {}


def _close_idle(lease: _Lease, timer: threading.Timer) -> None:
    with _LOCK:
        if _LEASES.get(lease.path) is lease and lease.timer is timer:  # not used again since this timer started
            del _LEASES[lease.path]
            lease.con.close()


WAIT_ENV = "DSC_CACHE_WAIT_S"  # how long to wait for another process's turn before giving up

_SCHEMA = """
CREATE TABLE IF NOT EXISTS calls (
    key VARCHAR PRIMARY KEY,
    kind VARCHAR NOT NULL,          -- 'chat' or 'score'
    model VARCHAR NOT NULL,
    request VARCHAR NOT NULL,       -- canonical JSON of what was asked
    response VARCHAR NOT NULL,      -- JSON of what came back
    seconds DOUBLE NOT NULL,
    created_at DOUBLE NOT NULL
)
"""


class CacheBusyError(RuntimeError):
    """Another process kept the call cache open for longer than dsc waits."""


class CallCache:
    """A DuckDB table of model calls keyed by content hash, opened per operation: safe across threads and processes.
    ``read_only``: never writes (and a missing file reads as empty)."""

    def __init__(self, path: str | Path, read_only: bool = False):
        self.path = str(Path(path).expanduser().resolve())
        self.read_only = read_only

    @contextmanager
    def _connection(self) -> Iterator[duckdb.DuckDBPyConnection | None]:
        with _LOCK:
            lease = _LEASES.get(self.path)
            if lease is not None and lease.read_only and not self.read_only:
                del _LEASES[self.path]
                lease.close()
                lease = None
            if lease is None:
                if self.read_only and not os.path.exists(self.path):
                    yield None
                    return
                if not self.read_only:
                    Path(self.path).parent.mkdir(parents=True, exist_ok=True)
                con = _connect(self.path, self.read_only)
                if not self.read_only:
                    con.execute(_SCHEMA)
                lease = _LEASES[self.path] = _Lease(self.path, con, self.read_only)
            lease.hold()
            try:
                yield lease.con
            finally:
                lease.release()

    def get(self, key: str) -> dict[str, Any] | None:
        return self.get_many([key]).get(key)

    def get_many(self, keys: list[str]) -> dict[str, dict[str, Any]]:
        if not keys:
            return {}
        with self._connection() as con:
            if con is None or not _has_table(con):
                return {}
            rows = con.execute(
                "SELECT key, response FROM calls WHERE key IN (SELECT unnest(?))", [list(keys)]
            ).fetchall()
        return {key: json.loads(response) for key, response in rows}

    def put(self, key: str, kind: str, model: str, request: Any, response: dict[str, Any], seconds: float) -> None:
        if self.read_only:
            raise RuntimeError(f"the call cache {self.path} was opened read-only")
        with self._connection() as con:
            con.execute(
                "INSERT OR REPLACE INTO calls VALUES (?, ?, ?, ?, ?, ?, ?)",
                list(call_row(key, kind, model, request, response, seconds)),
            )

    def put_rows(self, rows: list[tuple]) -> int:
        """Insert whole rows (``COLUMNS`` order: key, kind, model, request, response, seconds, created_at) whose key
        is new, in one transaction; how many were new (``dsc cache copy``)."""
        if self.read_only:
            raise RuntimeError(f"the call cache {self.path} was opened read-only")
        if not rows:
            return 0
        with self._connection() as con:
            before = con.execute("SELECT count(*) FROM calls").fetchone()[0]
            con.executemany("INSERT INTO calls VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (key) DO NOTHING", rows)
            return con.execute("SELECT count(*) FROM calls").fetchone()[0] - before

    def rows(self, batch: int = 5000) -> Iterator[list[tuple]]:
        """Every row, ``batch`` at a time, in key order (each batch its own short turn on the file)."""
        after = ""
        while True:
            with self._connection() as con:
                if con is None or not _has_table(con):
                    return
                found = con.execute("SELECT * FROM calls WHERE key > ? ORDER BY key LIMIT ?", [after, batch]).fetchall()
            if not found:
                return
            yield found
            after = found[-1][0]

    def mean_seconds(self, model: str | None = None, kind: str | None = None) -> float | None:
        """Mean seconds of the computed calls of ``model`` and of ``kind`` (any when None; a ``model`` ending in
        ``*`` is a prefix); None without any. See ``seconds_query`` for what the mean leaves out."""
        with self._connection() as con:
            if con is None or not _has_table(con):
                return None
            sql, params = seconds_query(model, kind, "?")
            value = con.execute(sql, params).fetchone()
            return None if value[0] is None else float(value[0])

    def endpoint_seconds(self, model: str) -> dict[str, tuple[float, int]]:
        """Mean seconds and number of the computed calls of ``model`` per endpoint that answered them (the response's
        ``endpoint``; "" for answers that name none): a server pool's rate is measured per server."""
        with self._connection() as con:
            if con is None or not _has_table(con):
                return {}
            rows = con.execute(
                "SELECT coalesce(json_extract_string(response, '$.endpoint'), ''), avg(seconds), count(*) "
                "FROM calls WHERE seconds > 0 AND model = ? GROUP BY 1",
                [model],
            ).fetchall()
        return {endpoint: (float(seconds), int(calls)) for endpoint, seconds, calls in rows}

    def count(self, kind: str | None = None) -> int:
        with self._connection() as con:
            if con is None or not _has_table(con):
                return 0
            if kind is None:
                return con.execute("SELECT count(*) FROM calls").fetchone()[0]
            return con.execute("SELECT count(*) FROM calls WHERE kind = ?", [kind]).fetchone()[0]


def _has_table(con: duckdb.DuckDBPyConnection) -> bool:
    return con.execute("SELECT count(*) FROM information_schema.tables WHERE table_name = 'calls'").fetchone()[0] > 0


def open_when_free(path: str, read_only: bool, wait_s: float) -> duckdb.DuckDBPyConnection:
    """Open a DuckDB file, waiting (with backoff) while another process holds its lock; after ``wait_s`` the lock
    error itself (duckdb.IOException). The one wait loop for DuckDB's one-writer-process rule."""
    deadline, pause = time.monotonic() + wait_s, 0.02
    while True:
        try:
            return duckdb.connect(path, read_only=read_only)
        except duckdb.IOException as error:
            if "lock" not in str(error).lower() or time.monotonic() > deadline:
                raise
            time.sleep(pause)
            pause = min(pause * 2, 0.5)


def _connect(path: str, read_only: bool) -> duckdb.DuckDBPyConnection:
    """Open the file, waiting while another process holds it; say who and what to do when that lasts too long."""
    wait = float(os.environ.get(WAIT_ENV, "300"))
    try:
        return open_when_free(path, read_only, wait)
    except duckdb.IOException as error:
        if "lock" not in str(error).lower():
            raise
        raise CacheBusyError(
            f"cannot open the call cache {path}: another process kept it open for more than {wait:.0f}s "
            f"({error}). dsc and its runs open it only for a moment per call, so this is a process that "
            "keeps it open (a DuckDB shell, a notebook, an old dsc or dagster process): close it, then "
            "re-execute the failed run in the Dagster UI (Runs > the run > Re-execute) or rerun the dsc "
            "command; every call finished so far is cached."
        ) from error


def close_all() -> None:
    """Close this process's connections now (tests that delete a cache file; before handing the file on), and its
    PostgreSQL cache connections if it has any."""
    with _LOCK:
        for lease in list(_LEASES.values()):
            lease.close()
        _LEASES.clear()
    if "resources.pg_cache" in sys.modules:
        sys.modules["resources.pg_cache"].close_pools()


def open_cache(location: str | Path, read_only: bool = False):
    """The call cache at ``location``: a ``postgresql://`` URL (the shared deployment's PostgresCallCache, same
    interface and keys) or a DuckDB file path (the embedded default, CallCache)."""
    if str(location).startswith(("postgresql://", "postgres://")):
        from resources.pg_cache import PostgresCallCache  # psycopg2 only where a deployment asks for it

        return PostgresCallCache(str(location), read_only=read_only)
    return CallCache(location, read_only=read_only)


# ---- the warehouse: one DuckDB table per asset, one task's rows per partition ---------------------------------------


class _PandasTables(DuckDBPandasTypeHandler):
    """dagster-duckdb's pandas handler, with two changes to how a partition is written:

    - an empty output creates its table if missing (dagster-duckdb skips it, so the first partition of a table with
      no rows, a branch a profile switches off, left no table and every asset reading it failed on load); a table
      that holds no rows at all is replaced by the next non-empty output, so its placeholder column types never
      receive data;
    - rows are inserted by column name, and a column the table lacks is added: dagster-duckdb inserts by position,
      so an asset that gained a column (the evaluation's guard columns) failed against a warehouse written before
      ("table has 9 columns but 12 values were supplied"). Other tasks' older rows read NULL in the new column."""

    def handle_output(self, context, table_slice, obj: pd.DataFrame, connection) -> None:
        def sql(query: str, params: list | None = None) -> list:
            return connection.execute(query, params or []).fetchall()  # DuckDB wants each result read in full

        name = f"{table_slice.schema}.{table_slice.table}"
        exists = sql(
            "select count(*) from information_schema.tables where table_schema = ? and table_name = ?",
            [table_slice.schema, table_slice.table],
        )[0][0]
        connection.register("dsc_output", obj)
        try:
            if obj.empty:
                sql(f"create table if not exists {name} as select * from dsc_output")
            else:
                if exists and sql(f"select count(*) from {name}")[0][0] == 0:
                    sql(f"drop table {name}")  # only empty outputs so far: placeholder types
                    exists = False
                if not exists:
                    sql(f"create table {name} as select * from dsc_output")
                else:
                    have = {row[0] for row in sql(f"describe {name}")}
                    for column, kind, *_ in sql("describe select * from dsc_output"):
                        if column not in have:
                            sql(f'alter table {name} add column "{column}" {kind}')
                    sql(f"insert into {name} by name select * from dsc_output")
        finally:
            connection.unregister("dsc_output")
        rows = len(obj)  # the metadata dagster-duckdb writes: row count, storage kind, columns
        context.add_output_metadata(
            {
                "dagster/partition_row_count" if context.has_partition_key else "dagster/row_count": rows,
                "dagster/storage_kind": "duckdb",
                "dataframe_columns": dg.MetadataValue.table_schema(
                    dg.TableSchema(
                        columns=[
                            dg.TableColumn(name=str(column), type=str(dtype)) for column, dtype in obj.dtypes.items()
                        ]
                    )
                ),
            }
        )


class WarehouseIOManager(DuckDBPandasIOManager):
    """The DuckDB pandas IO manager with empty outputs stored as empty partitions (see _PandasTables)."""

    @staticmethod
    def type_handlers():
        return [_PandasTables()]


def read_table(con: duckdb.DuckDBPyConnection | None, name: str, task: str) -> pd.DataFrame | None:
    """One task's rows of the warehouse table ``dsc.<name>``; None when there is no warehouse or no such table yet
    (the asset never ran). The one reader of the warehouse's tables outside the IO manager."""
    if con is None:
        return None
    if hasattr(con, "read_partition"):  # the shared warehouse (resources/pg_warehouse.py)
        return con.read_partition(name, task)
    try:
        return con.execute(f"SELECT * FROM dsc.{name} WHERE task = ?", [task]).df()
    except duckdb.CatalogException:
        return None


def warehouse_io_manager(location: str):
    """The IO manager of the warehouse at ``location``: a postgresql:// URL (the shared deployment) or a DuckDB file."""
    if str(location).startswith(("postgresql://", "postgres://")):
        from resources.pg_warehouse import PostgresWarehouseIOManager

        return PostgresWarehouseIOManager(url=str(location))
    return WarehouseIOManager(database=str(location), schema="dsc")  # the file's name must differ from the schema's


def open_warehouse(location: str):
    """A reader of the warehouse at ``location`` for ``read_table``: the PostgreSQL warehouse, or the DuckDB file
    opened read-only (None when the file does not exist: nothing has run). DuckDB's IOException passes through (a
    running job holds the file)."""
    if str(location).startswith(("postgresql://", "postgres://")):
        from resources.pg_warehouse import PostgresWarehouse

        return PostgresWarehouse(str(location))
    if not Path(location).exists():
        return None
    return duckdb.connect(str(location), read_only=True)
