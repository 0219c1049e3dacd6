"""A real PostgreSQL for the test run: ``SESSDB_TEST_DSN``, or one embedded cluster per run.

The embedded cluster lives in a fresh data dir under /tmp and is removed at the end. The
database is migrated once (alembic + sql/) and the fixtures of ``tests/fixtures`` are loaded.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from sessdb.embedded import EmbeddedPostgres
from sessdb.migrate import migrate

FIXTURES = Path(__file__).parent / "fixtures"


def tcp_host(conninfo: dict) -> str:  # type: ignore[type-arg]
    """The host to reach the server of ``conninfo`` (from ``conninfo_to_dict``) through TCP:
    the embedded cluster's URL names its Unix socket directory, and it also listens on loopback."""
    host = str(conninfo.get("host") or "127.0.0.1")
    return "127.0.0.1" if host.startswith("/") else host


def make_data_dir(prefix: str = "sessdb-test-") -> Path:
    """A new, empty data dir under /tmp that sessdb's OS user can reach."""
    path = Path(tempfile.mkdtemp(prefix=prefix))
    path.chmod(0o755)  # the data dir itself is sessdb's own; mkdtemp makes it 0700
    return path


@pytest.fixture(scope="session")
def pg_server() -> Iterator[str]:
    """A DSN of a PostgreSQL server's maintenance database, for creating scratch databases."""
    external = os.environ.get("SESSDB_TEST_DSN")
    if external:
        yield external
        return
    data_dir = make_data_dir()
    cluster = EmbeddedPostgres(data_dir)
    cluster.start()
    try:
        yield cluster.url("postgres")
    finally:
        cluster.stop()
        shutil.rmtree(data_dir, ignore_errors=True)


def create_database(server_dsn: str, name: str) -> str:
    """Create database ``name`` on the server and return its DSN."""
    with psycopg.connect(server_dsn, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return psycopg.conninfo.make_conninfo(server_dsn, dbname=name)


def drop_database(server_dsn: str, name: str) -> None:
    """Drop database ``name``, ending its connections first."""
    with psycopg.connect(server_dsn, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def dsn(pg_server: str) -> Iterator[str]:
    """The migrated test database, with tests/fixtures/*.sql loaded."""
    name = f"sessdb_test_{uuid.uuid4().hex[:8]}"
    url = create_database(pg_server, name)
    migrate(url)
    with psycopg.connect(url, autocommit=True) as conn:
        for path in sorted(FIXTURES.glob("*.sql")):
            conn.execute(path.read_text().encode())
    yield url
    drop_database(pg_server, name)


@pytest.fixture
def scratch_dsn(pg_server: str) -> Iterator[str]:
    """An empty database of its own, dropped after the test."""
    name = f"sessdb_scratch_{uuid.uuid4().hex[:8]}"
    url = create_database(pg_server, name)
    yield url
    drop_database(pg_server, name)


@pytest.fixture
def svcconn(dsn: str) -> Iterator[psycopg.Connection]:
    """A superuser connection to the test database for inspecting and inducing faults."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        yield conn
