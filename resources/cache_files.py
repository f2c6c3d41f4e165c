"""The call cache as a Parquet file (zstd): a copy that can be committed or moved between machines whose homes do not
survive (a study run across sessions, CI). ``dsc cache copy`` reads and writes it like a cache: ``rows`` in key
order, ``put_rows`` keeps the rows whose key is new. Not a live cache: nothing generates into it."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterator

import duckdb
import pandas as pd

COLUMNS = ("key", "kind", "model", "request", "response", "seconds", "created_at")  # the calls table's


def is_parquet_path(location: str | Path) -> bool:
    return str(location).endswith(".parquet")


class ParquetCalls:
    """A call cache's rows in one Parquet file, the DuckDB cache's columns."""

    def __init__(self, path: str | Path):
        self.path = str(Path(path).expanduser().resolve())

    def _frame(self) -> pd.DataFrame:
        if not os.path.exists(self.path):
            return pd.DataFrame(columns=list(COLUMNS))
        with duckdb.connect() as con:
            return con.execute("SELECT * FROM read_parquet(?) ORDER BY key", [self.path]).df()[list(COLUMNS)]

    def rows(self, batch: int = 5000) -> Iterator[list[tuple]]:
        frame = self._frame()
        for start in range(0, len(frame), batch):
            yield list(frame.iloc[start : start + batch].itertuples(index=False, name=None))

    def count(self) -> int:
        return len(self._frame())

    def put_rows(self, rows: list[tuple]) -> int:
        """Add the rows whose key the file lacks (the file rewritten whole, atomically); how many were new."""
        existing = self._frame()
        new = pd.DataFrame(list(rows), columns=list(COLUMNS))
        new = new[~new["key"].isin(set(existing["key"]))].drop_duplicates("key")
        if new.empty:
            return 0
        merged = pd.concat([existing, new], ignore_index=True) if len(existing) else new
        merged = merged.sort_values("key").reset_index(drop=True)
        Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        partial = f"{self.path}.partial-{os.getpid()}"
        with duckdb.connect() as con:
            con.register("merged", merged)
            con.execute(f"COPY merged TO '{partial}' (FORMAT parquet, COMPRESSION zstd)")
        os.replace(partial, self.path)
        return len(new)
