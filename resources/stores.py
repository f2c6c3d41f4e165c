"""Stores: the content-addressed cache of every model call, in DuckDB.

Each finished call is committed on its own, so a killed run loses at most the call in flight, and a rerun
asks the model only for keys it has never seen.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

import duckdb

_CONNECTIONS: dict[str, duckdb.DuckDBPyConnection] = {}
_LOCK = threading.Lock()

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


class CallCache:
    """A DuckDB table of model calls keyed by content hash. Safe to share within one process."""

    def __init__(self, path: str | Path):
        self.path = str(Path(path).expanduser().resolve())
        with _LOCK:
            con = _CONNECTIONS.get(self.path)
            if con is None:
                Path(self.path).parent.mkdir(parents=True, exist_ok=True)
                con = _connect(self.path)
                con.execute(_SCHEMA)
                _CONNECTIONS[self.path] = con
        self._con = con

    def get(self, key: str) -> dict[str, Any] | None:
        with _LOCK:
            row = self._con.execute("SELECT response FROM calls WHERE key = ?", [key]).fetchone()
        return json.loads(row[0]) if row else None

    def get_many(self, keys: list[str]) -> dict[str, dict[str, Any]]:
        if not keys:
            return {}
        with _LOCK:
            rows = self._con.execute(
                "SELECT key, response FROM calls WHERE key IN (SELECT unnest(?))", [list(keys)]
            ).fetchall()
        return {key: json.loads(response) for key, response in rows}

    def put(self, key: str, kind: str, model: str, request: Any, response: dict[str, Any], seconds: float) -> None:
        with _LOCK:
            self._con.execute(
                "INSERT OR REPLACE INTO calls VALUES (?, ?, ?, ?, ?, ?, ?)",
                [key, kind, model, json.dumps(request, sort_keys=True, ensure_ascii=False),
                 json.dumps(response, ensure_ascii=False), seconds, time.time()],
            )

    def count(self, kind: str | None = None) -> int:
        with _LOCK:
            if kind is None:
                return self._con.execute("SELECT count(*) FROM calls").fetchone()[0]
            return self._con.execute("SELECT count(*) FROM calls WHERE kind = ?", [kind]).fetchone()[0]


def _connect(path: str) -> duckdb.DuckDBPyConnection:
    # Another process (say `dagster dev` and a CLI run) may hold the file for a moment: wait, then say who.
    deadline = time.monotonic() + 30
    while True:
        try:
            return duckdb.connect(path)
        except duckdb.IOException as error:
            if "lock" not in str(error).lower() or time.monotonic() > deadline:
                raise RuntimeError(
                    f"cannot open the call cache {path}: {error}. Another dsc or dagster process holds it; "
                    "stop it or point DSC_HOME elsewhere."
                ) from error
            time.sleep(0.5)


def close_all() -> None:
    """Close every cached connection (tests use a fresh DSC_HOME each)."""
    with _LOCK:
        for con in _CONNECTIONS.values():
            con.close()
        _CONNECTIONS.clear()
