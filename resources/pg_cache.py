"""The call cache on PostgreSQL: the shared deployment's cache, one table that many processes on many machines write
at once. Same interface, same table and the same keys as the DuckDB file (resources/stores.py ``CallCache``), so
``dsc cache copy`` moves one into the other and a run finds every call either has made.

Each put is one ``INSERT ... ON CONFLICT (key) DO NOTHING`` in its own transaction: a row is in the table whole or
not at all, and the first writer of a key wins (every writer of one key computed the same call). A connection pool
per process and server keeps a connection open between calls (one round trip per operation, no file lock to take
turns on). When the server goes away (a restart, a failover), the operation is tried once more on a fresh connection;
when that fails too, a ``CacheUnavailableError`` names the server and says what to do.
"""

from __future__ import annotations

import json
import os
import threading
from contextlib import contextmanager
from typing import Any, Iterable, Iterator
from urllib.parse import urlsplit, urlunsplit

import psycopg2
import psycopg2.extras

from resources.call_rows import call_row, seconds_query

COLUMNS = ("key", "kind", "model", "request", "response", "seconds", "created_at")
_SCHEMA = """
CREATE TABLE IF NOT EXISTS calls (
    key TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    model TEXT NOT NULL,
    request TEXT NOT NULL,
    response TEXT NOT NULL,
    seconds DOUBLE PRECISION NOT NULL,
    created_at DOUBLE PRECISION NOT NULL
)
"""
_SCHEMA_LOCK = 0x647363  # one advisory lock id: concurrent CREATE TABLE IF NOT EXISTS can still collide in PostgreSQL
POOL_SIZE = 16  # connections per process and server at most (one per thread in flight; more threads wait)
CONNECT_TIMEOUT_S = 10


def is_postgres_url(location: str) -> bool:
    return str(location).startswith(("postgresql://", "postgres://"))


def display_url(url: str) -> str:
    """The URL without its password, for messages and logs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"{parts.username}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


class CacheUnavailableError(RuntimeError):
    """The cache's PostgreSQL server cannot be reached (down, restarting, wrong URL or credentials)."""


class _Pool:
    """This process's connections to one server (at most POOL_SIZE at once: more threads wait for one), with the
    schema made once. A connection found dropped means the server went away: the idle ones went with it, so they
    are closed too, and the retry connects afresh."""

    def __init__(self, url: str):
        self.url, self.pid = url, os.getpid()
        self.idle: list = []
        self.lock = threading.Lock()
        self.slots = threading.BoundedSemaphore(POOL_SIZE)
        self.schema_ready = False

    def take(self):
        self.slots.acquire()
        with self.lock:
            if self.idle:
                return self.idle.pop()
        try:
            return psycopg2.connect(self.url, connect_timeout=CONNECT_TIMEOUT_S)
        except BaseException:
            self.slots.release()
            raise

    def give(self, connection, broken: bool) -> None:
        try:
            if broken or connection.closed:
                connection.close()
                self.close()
            else:
                with self.lock:
                    self.idle.append(connection)
        finally:
            self.slots.release()

    def close(self) -> None:
        with self.lock:
            idle, self.idle = self.idle, []
        for connection in idle:
            connection.close()


_POOLS: dict[str, _Pool] = {}
_POOLS_LOCK = threading.Lock()


def _pool(url: str) -> _Pool:
    with _POOLS_LOCK:
        pool = _POOLS.get(url)
        if pool is None or pool.pid != os.getpid():  # a forked child must not share its parent's sockets
            pool = _POOLS[url] = _Pool(url)
        return pool


def close_pools() -> None:
    """Close this process's idle connections (tests; before exit)."""
    with _POOLS_LOCK:
        for pool in _POOLS.values():
            if pool.pid == os.getpid():
                pool.close()
        _POOLS.clear()


class PostgresCallCache:
    """The table ``calls`` in a PostgreSQL database, keyed by content hash: safe across threads, processes and
    machines. ``read_only``: never writes (and a database without the table reads as empty)."""

    def __init__(self, url: str, read_only: bool = False):
        self.url, self.path = url, display_url(url)  # ``path``: what messages call the cache, as for a file
        self.read_only = read_only

    @contextmanager
    def _cursor(self) -> Iterator[Any]:
        """A cursor in one transaction, committed on success; one retry on a fresh connection when the server
        dropped the pooled one (only operations whose retry is harmless use it: reads and idempotent inserts)."""
        pool = _pool(self.url)
        try:
            connection = pool.take()
        except psycopg2.OperationalError as error:  # the server is down or refuses: no retry helps now
            raise self._unavailable(error) from error
        broken = False
        try:
            with connection:  # commit, or roll back on an error
                if not self.read_only and not pool.schema_ready:
                    _make_schema(connection)
                    pool.schema_ready = True
                with connection.cursor() as cursor:
                    yield cursor
        except (psycopg2.OperationalError, psycopg2.InterfaceError):
            broken = True
            raise
        finally:
            pool.give(connection, broken)

    def _unavailable(self, error: Exception) -> CacheUnavailableError:
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        return CacheUnavailableError(
            f"the call cache's PostgreSQL server at {self.path} cannot be reached ({first_line}). Every call "
            "finished so far is in it, and a call is written whole or not at all: once the server is back, "
            "re-execute the failed run in the Dagster UI (Runs > the run > Re-execute) or rerun the dsc command."
        )

    def _retrying(self, operation):
        """``operation(cursor)``, tried once more on a fresh connection after a dropped one (a server restart leaves
        every pooled connection dead; the first use of each finds out)."""
        for attempt in (1, 2):
            try:
                with self._cursor() as cursor:
                    return operation(cursor)
            except (psycopg2.OperationalError, psycopg2.InterfaceError) as error:
                if attempt == 2:
                    raise self._unavailable(error) from error

    def get(self, key: str) -> dict[str, Any] | None:
        return self.get_many([key]).get(key)

    def get_many(self, keys: list[str]) -> dict[str, dict[str, Any]]:
        if not keys:
            return {}

        def read(cursor) -> list:
            if self.read_only and not _has_table(cursor):
                return []
            cursor.execute("SELECT key, response FROM calls WHERE key = ANY(%s)", (list(keys),))
            return cursor.fetchall()

        return {key: json.loads(response) for key, response in self._retrying(read)}

    def put(self, key: str, kind: str, model: str, request: Any, response: dict[str, Any], seconds: float) -> None:
        if self.read_only:
            raise RuntimeError(f"the call cache {self.path} was opened read-only")
        self.put_rows([call_row(key, kind, model, request, response, seconds)])

    def put_rows(self, rows: Iterable[tuple]) -> int:
        """Insert whole rows (``COLUMNS`` order) whose key is new, in one transaction; how many were new."""
        rows = list(rows)
        if not rows:
            return 0
        if self.read_only:
            raise RuntimeError(f"the call cache {self.path} was opened read-only")

        def insert(cursor) -> int:
            inserted = psycopg2.extras.execute_values(
                cursor,
                f"INSERT INTO calls ({', '.join(COLUMNS)}) VALUES %s ON CONFLICT (key) DO NOTHING RETURNING 1",
                rows,
                page_size=1000,
                fetch=True,
            )
            return len(inserted)

        return self._retrying(insert)

    def rows(self, batch: int = 5000) -> Iterator[list[tuple]]:
        """Every row (``COLUMNS`` order), ``batch`` at a time, in key order."""
        after = ""
        while True:

            def page(cursor, after=after) -> list:
                if not _has_table(cursor):
                    return []
                cursor.execute(
                    f"SELECT {', '.join(COLUMNS)} FROM calls WHERE key > %s ORDER BY key LIMIT %s", (after, batch)
                )
                return cursor.fetchall()

            found = self._retrying(page)
            if not found:
                return
            yield found
            after = found[-1][0]

    def mean_seconds(self, model: str | None = None, kind: str | None = None) -> float | None:
        """As CallCache.mean_seconds: the mean seconds of the computed calls of ``model`` and ``kind``."""
        sql, params = seconds_query(model, kind, "%s")

        def mean(cursor):
            if not _has_table(cursor):
                return None
            cursor.execute(sql, params)
            return cursor.fetchone()[0]

        value = self._retrying(mean)
        return None if value is None else float(value)

    def endpoint_seconds(self, model: str) -> dict[str, tuple[float, int]]:
        """As CallCache.endpoint_seconds: mean seconds and number of calls of ``model`` per endpoint."""

        def per_endpoint(cursor) -> list:
            if not _has_table(cursor):
                return []
            cursor.execute(
                "SELECT coalesce(response::jsonb ->> 'endpoint', ''), avg(seconds), count(*) "
                "FROM calls WHERE seconds > 0 AND model = %s GROUP BY 1",
                (model,),
            )
            return cursor.fetchall()

        return {endpoint: (float(s), int(n)) for endpoint, s, n in self._retrying(per_endpoint)}

    def count(self, kind: str | None = None) -> int:
        def number(cursor) -> int:
            if not _has_table(cursor):
                return 0
            if kind is None:
                cursor.execute("SELECT count(*) FROM calls")
            else:
                cursor.execute("SELECT count(*) FROM calls WHERE kind = %s", (kind,))
            return cursor.fetchone()[0]

        return self._retrying(number)


def _make_schema(connection) -> None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_xact_lock(%s)", (_SCHEMA_LOCK,))
        cursor.execute(_SCHEMA)


def _has_table(cursor) -> bool:
    cursor.execute("SELECT to_regclass('calls') IS NOT NULL")
    return cursor.fetchone()[0]


def copy_calls(source, target, batch: int = 5000) -> tuple[int, int]:
    """Every row of the call cache ``source`` into ``target`` (either kind), keys already there left as they are:
    (rows read, rows copied). Idempotent: a second copy reads every row and copies none."""
    read = copied = 0
    for rows in source.rows(batch):
        read += len(rows)
        copied += target.put_rows([tuple(row) for row in rows])
    return read, copied
