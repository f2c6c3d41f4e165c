"""A real PostgreSQL server for the tests (resources/postgres_server.py): one per test session on a free port of
127.0.0.1, a fresh database per test, stopped and deleted at the end.

Skipped when Debian's server binaries are missing, except under CI (``CI`` set), where that is a failure: `make test`
installs them (`make postgres`), so CI can never pass without the PostgreSQL tests."""

from __future__ import annotations

import itertools
import os
from typing import Iterator

import pytest

from resources.postgres_server import INSTALL_HINT, PostgresServer, server_binaries

_DATABASES = itertools.count()


def postgres_or_skip() -> None:
    """Skip (locally) or fail (CI) when this machine cannot run a PostgreSQL server or talk to one."""
    missing = []
    if server_binaries() is None:
        missing.append(f"PostgreSQL's server binaries ({INSTALL_HINT})")
    try:
        import psycopg2  # noqa: F401
    except ImportError:
        missing.append("psycopg2 (pip install psycopg2-binary)")
    if missing:
        reason = f"the PostgreSQL tests need {' and '.join(missing)}"
        if os.environ.get("CI"):
            pytest.fail(f"cannot run in CI: {reason}")
        pytest.skip(reason)


def _started() -> Iterator[PostgresServer]:
    postgres_or_skip()
    server = PostgresServer()
    try:
        yield server.start()
    finally:
        server.close()


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """One server for the whole session (initdb and start take seconds); tests get their own database on it."""
    yield from _started()


@pytest.fixture
def postgres_url(postgres_server: PostgresServer) -> str:
    """The URL of a new empty database on the session's server."""
    return postgres_server.create_database(f"test_{os.getpid()}_{next(_DATABASES)}")


@pytest.fixture
def own_postgres_server() -> Iterator[PostgresServer]:
    """A server of this test's own, for a test that stops and restarts it."""
    yield from _started()
