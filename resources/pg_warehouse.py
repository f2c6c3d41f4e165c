"""The warehouse on PostgreSQL: the shared deployment's tables, one per asset, one task's rows per partition, that many
runs on many machines write at once and any SQL client reads (psql, pandas, a BI tool), beside the instance and the
call cache on the same server.

Each partition is written in one transaction: the table made or widened if it must be, the task's rows deleted, the
new rows inserted. A reader sees the partition before or after, never half of it; a server that goes away mid-write
rolls the transaction back, and the step fails with a clear error (a retry writes it again whole). Writers of one
table take turns on a transaction-scoped advisory lock (a partition is milliseconds of work); writers of different
tables do not wait for each other.

Column types follow the DataFrame: integers BIGINT, floats DOUBLE PRECISION, booleans BOOLEAN, datetimes TIMESTAMP,
strings TEXT, anything else (lists, dicts, arrays: a sample's messages, a table's JSON) JSONB. Reading gives back
what was written: JSONB as Python lists and dicts, BIGINT without NULLs as int64. As in the DuckDB warehouse
(resources/stores.py ``_PandasTables``), a column an output brings is added (older rows read NULL), an empty output
leaves its partition empty and creates the table if missing, and a table that holds no rows yet takes its types
from the next non-empty output.
"""

from __future__ import annotations

import json
import zlib
from contextlib import contextmanager
from typing import Any, Iterator

import dagster as dg
import numpy as np
import pandas as pd
import psycopg2
import psycopg2.extras
from pydantic import Field

from resources.pg_cache import CacheUnavailableError, display_url

# (the table's type, an output's) -> the type that holds both: integers then floats; strings (or only NULLs) then
# lists. The other way round needs nothing: PostgreSQL casts integers into a float column, and a string is JSON.
WIDER = {
    ("BIGINT", "DOUBLE PRECISION"): ("DOUBLE PRECISION", ""),
    ("TEXT", "JSONB"): ("JSONB", " USING to_jsonb({column})"),
}


class WarehouseUnavailableError(CacheUnavailableError):
    """The warehouse's PostgreSQL server cannot be reached, or went away mid-write (nothing of that write is kept)."""


def _column_type(series: pd.Series) -> str:
    kind = series.dtype.kind
    if kind == "b":
        return "BOOLEAN"
    if kind in "iu":
        return "BIGINT"
    if kind == "f":
        return "DOUBLE PRECISION"
    if kind == "M":
        return "TIMESTAMP"
    values = series.dropna()
    if len(values) and not all(isinstance(v, str) for v in values):
        return "JSONB"
    return "TEXT"


def _jsonable(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return [_jsonable(v) for v in value.tolist()]
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, np.generic):
        return value.item()
    return value


def _cell(value: Any, kind: str) -> Any:
    if value is None or (not isinstance(value, (list, dict, np.ndarray)) and pd.isna(value)):
        return None
    if kind == "JSONB":
        return psycopg2.extras.Json(_jsonable(value))
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, pd.Timestamp):
        return value.to_pydatetime()
    return value


def _quoted(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


class PostgresWarehouse:
    """Reads and writes the warehouse's partitions on one database (the IO manager and `dsc report` share it)."""

    def __init__(self, url: str, schema: str = "dsc"):
        self.url, self.schema = url, schema

    def _connect(self):
        try:
            return psycopg2.connect(self.url, connect_timeout=10)
        except psycopg2.OperationalError as error:
            raise WarehouseUnavailableError(
                f"the warehouse's PostgreSQL server at {display_url(self.url)} cannot be reached "
                f"({str(error).strip().splitlines()[0]}): start it, or fix DSC_WAREHOUSE_URL / the profile's "
                "shared.warehouse_url"
            ) from None

    @contextmanager
    def _transaction(self, doing: str) -> Iterator:
        """A cursor in one transaction of its own connection, committed at the end. A server that goes away inside
        it is a WarehouseUnavailableError naming what was being done (psycopg2's own ``with connection`` would try
        to roll back on the dead connection and replace the error with "connection already closed")."""
        connection = self._connect()
        try:
            with connection.cursor() as cursor:
                yield cursor
            connection.commit()
        except (psycopg2.OperationalError, psycopg2.InterfaceError) as error:  # the server went away inside
            raise WarehouseUnavailableError(
                f"the warehouse's PostgreSQL server at {display_url(self.url)} went away while {doing} "
                f"({str(error).strip().splitlines()[0]}): nothing of it was kept; run the step again"
            ) from None
        except BaseException:
            connection.rollback()
            raise
        finally:
            connection.close()

    def _name(self, table: str) -> str:
        return f"{_quoted(self.schema)}.{_quoted(table)}"

    def _columns(self, cursor, table: str) -> dict[str, str]:
        cursor.execute(
            "SELECT column_name, upper(data_type) FROM information_schema.columns WHERE table_schema = %s "
            "AND table_name = %s ORDER BY ordinal_position",
            [self.schema, table],
        )
        return {name: {"TIMESTAMP WITHOUT TIME ZONE": "TIMESTAMP"}.get(kind, kind) for name, kind in cursor.fetchall()}

    def write(self, table: str, task: str, frame: pd.DataFrame) -> None:
        """Replace ``task``'s rows of ``table`` by ``frame`` (which holds a ``task`` column), in one transaction."""
        wanted = {str(column): _column_type(frame[column]) for column in frame.columns}
        if "task" in wanted:
            wanted["task"] = "TEXT"  # the partition key, whatever an empty frame's placeholder dtype says
        with self._transaction(f"{table}'s partition {task!r} was written") as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", [zlib.crc32(f"{self.schema}.{table}".encode())])
            cursor.execute(f"CREATE SCHEMA IF NOT EXISTS {_quoted(self.schema)}")
            have = self._columns(cursor, table)
            if have and len(frame):
                cursor.execute(f"SELECT EXISTS (SELECT 1 FROM {self._name(table)})")
                if not cursor.fetchone()[0]:  # only empty outputs so far: placeholder types
                    cursor.execute(f"DROP TABLE {self._name(table)}")
                    have = {}
            if not have:
                columns = ", ".join(f"{_quoted(c)} {kind}" for c, kind in wanted.items())
                cursor.execute(f"CREATE TABLE {self._name(table)} ({columns})")
                have = dict(wanted)
            for column, kind in wanted.items():
                if column not in have:
                    cursor.execute(f"ALTER TABLE {self._name(table)} ADD COLUMN {_quoted(column)} {kind}")
                    have[column] = kind
                elif have[column] != kind and len(frame[column].dropna()):
                    self._widen(cursor, table, column, have, kind)
            if "task" in have:
                cursor.execute(f"DELETE FROM {self._name(table)} WHERE task = %s", [task])
            if len(frame):
                kinds = [have[str(c)] for c in frame.columns]
                rows = [
                    tuple(_cell(v, kind) for v, kind in zip(row, kinds))
                    for row in frame.itertuples(index=False, name=None)
                ]
                names = ", ".join(_quoted(str(c)) for c in frame.columns)
                psycopg2.extras.execute_values(
                    cursor, f"INSERT INTO {self._name(table)} ({names}) VALUES %s", rows, page_size=500
                )

    def _widen(self, cursor, table: str, column: str, have: dict[str, str], kind: str) -> None:
        if (kind, have[column]) in WIDER:
            return  # the table's type already holds these values
        if (have[column], kind) not in WIDER:
            raise ValueError(
                f"warehouse table {self.schema}.{table}: column {column!r} holds {have[column]} but this output "
                f"writes {kind}; drop the table (its partitions are rebuilt by the next run) or keep the type"
            )
        wider, using = WIDER[(have[column], kind)]
        cursor.execute(
            f"ALTER TABLE {self._name(table)} ALTER COLUMN {_quoted(column)} TYPE {wider}"
            + using.format(column=_quoted(column))
        )
        have[column] = wider

    def read(self, table: str, tasks: list[str] | None = None) -> pd.DataFrame | None:
        """The rows of ``tasks`` (every task when None); None when the table does not exist (never written)."""
        with self._transaction(f"{table} was read") as cursor:
            kinds = self._columns(cursor, table)
            if not kinds:
                return None
            where, params = ("WHERE task = ANY(%s)", [list(tasks)]) if tasks is not None else ("", [])
            cursor.execute(f"SELECT * FROM {self._name(table)} {where}", params)
            frame = pd.DataFrame(cursor.fetchall(), columns=list(kinds))
        for column, kind in kinds.items():
            if kind == "BIGINT" and not frame[column].isna().any():
                frame[column] = frame[column].astype("int64")
            elif kind == "DOUBLE PRECISION":
                frame[column] = frame[column].astype("float64")
            elif kind == "BOOLEAN" and not frame[column].isna().any():
                frame[column] = frame[column].astype(bool)
            elif kind == "TIMESTAMP":
                frame[column] = pd.to_datetime(frame[column])
        return frame

    def read_partition(self, table: str, task: str) -> pd.DataFrame | None:
        """``resources.stores.read_table``'s contract: one task's rows, None without the table."""
        return self.read(table, [task])

    def close(self) -> None:
        """Nothing to close: each read and write takes its own connection (a reader's ``close`` contract)."""

    def tables(self) -> list[str]:
        with self._transaction("its tables were listed") as cursor:
            cursor.execute("SELECT table_name FROM information_schema.tables WHERE table_schema = %s", [self.schema])
            return sorted(name for (name,) in cursor.fetchall())


class PostgresWarehouseIOManager(dg.ConfigurableIOManager):
    """Every asset's table on PostgreSQL (``shared.warehouse_url``), partitioned by task as the DuckDB warehouse is."""

    url: str = Field(description="postgresql:// URL of the warehouse's database (its password in PGPASSWORD/.pgpass)")
    schema_name: str = Field(default="dsc", description="The schema that holds one table per asset.")

    def _warehouse(self) -> PostgresWarehouse:
        return PostgresWarehouse(self.url, self.schema_name)

    def handle_output(self, context: dg.OutputContext, obj: pd.DataFrame) -> None:
        table, tasks = context.asset_key.path[-1], context.asset_partition_keys
        if len(tasks) != 1:
            raise ValueError(f"{table}: the warehouse writes one task's partition at a time, not {tasks}")
        self._warehouse().write(table, tasks[0], obj)
        context.add_output_metadata(
            {
                "dagster/partition_row_count": len(obj),
                "dagster/storage_kind": "postgresql",
                "dataframe_columns": dg.MetadataValue.table_schema(
                    dg.TableSchema(columns=[dg.TableColumn(name=str(c), type=str(t)) for c, t in obj.dtypes.items()])
                ),
            }
        )

    def load_input(self, context: dg.InputContext) -> pd.DataFrame:
        table = context.asset_key.path[-1]
        tasks = list(context.asset_partition_keys) if context.has_asset_partitions else None
        frame = self._warehouse().read(table, tasks)
        if frame is None:
            raise dg.Failure(f"warehouse table {self.schema_name}.{table} does not exist: materialize {table} first")
        return frame


def dumps(frame: pd.DataFrame) -> str:
    """A frame's rows as canonical JSON (tests and benchmarks compare two warehouses with it)."""
    records = [{str(k): _jsonable(v) for k, v in row.items()} for row in frame.to_dict(orient="records")]
    return json.dumps(records, sort_keys=True, default=str)
