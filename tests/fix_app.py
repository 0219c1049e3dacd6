"""The in-process engine behind a real HTTP listener on loopback, and a client for it."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import psycopg

import pytest
from aiohttp.test_utils import TestClient, TestServer

from sessdb.config import Settings
from sessdb.web.app import ENGINE, make_app
from sessdb.web.protocol import SessdbRunner


class SessdbTestServer(TestServer):
    """aiohttp's TestServer on sessdb's runner (parse-error statuses, read timeout, cancellation)."""

    def __init__(self, app, *, read_timeout: float = 30.0, **kwargs):  # type: ignore[no-untyped-def]
        super().__init__(app, **kwargs)
        self.read_timeout = read_timeout

    async def _make_runner(self, **kwargs):  # type: ignore[no-untyped-def]
        return SessdbRunner(self.app, read_timeout=self.read_timeout, **kwargs)


def app_settings(dsn: str, **changes: object) -> Settings:
    """Settings for tests: the test database, short sweeps, a small pool."""
    base = Settings(dsn=dsn, port=0, sweep_interval=0.1, pool_size=4, session_reserve=0)
    return base.replace(**changes)


@pytest.fixture
def settings(dsn: str) -> Settings:
    """Default test settings; a test overrides them with ``make_client(**changes)``."""
    return app_settings(dsn)


@pytest.fixture
async def make_client(dsn: str) -> AsyncIterator:
    """A factory of HTTP clients on fresh apps: ``client = await make_client(pool_size=2)``."""
    clients: list[TestClient] = []

    async def factory(read_timeout: float = 30.0, **changes: object) -> TestClient:
        app = make_app(app_settings(dsn, **changes), dsn)
        client = TestClient(SessdbTestServer(app, host="127.0.0.1", read_timeout=read_timeout))
        await client.start_server()
        clients.append(client)
        return client

    yield factory
    try:
        await assert_no_connection_leak(dsn, [engine_of(c) for c in clients if not c.server.closed])
    finally:
        for client in reversed(clients):
            await client.close()


async def assert_no_connection_leak(dsn: str, engines: list, timeout: float = 10.0) -> None:  # type: ignore[type-arg]
    """The engines' connections in pg_stat_activity are exactly their pools and live sessions, and
    each pool holds its size and at most its reserve more; their mirror writers are one each.

    Connections are replaced and reset in the background, so the count is polled until it
    settles or the deadline passes (there is no event to await for another process's view).
    """
    query = ("SELECT count(*) FILTER (WHERE application_name = 'sessdb'), "
             "count(*) FILTER (WHERE application_name = 'sessdb-mirror') "
             "FROM pg_stat_activity WHERE datname = current_database()")
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        deadline = time.monotonic() + timeout
        while True:
            pools = [len(e.pool.backends) for e in engines]
            expected = sum(pools) + sum(len(e.sessions) for e in engines)
            writers = sum(e.new_rows.writer_pid is not None for e in engines)  # each engine's mirror writer
            found, found_writers = await (await conn.execute(query)).fetchone()  # type: ignore[misc]
            whole = all(e.pool.size <= n <= e.pool.target for e, n in zip(engines, pools, strict=True))
            if found == expected and found_writers == writers and whole:
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"connection leak: {found} engine connections, expected {expected} "
                                     f"(pools {pools} of sizes {[e.pool.size for e in engines]} and reserves "
                                     f"{[e.pool.reserve for e in engines]}, plus live sessions); "
                                     f"{found_writers} mirror writers, expected {writers}")
            await asyncio.sleep(0.05)


@pytest.fixture
async def client(make_client) -> TestClient:  # type: ignore[no-untyped-def]
    """An HTTP client on an app with the default test settings."""
    return await make_client()


def engine_of(client: TestClient):  # type: ignore[no-untyped-def]
    """The Engine behind a test client."""
    return client.server.app[ENGINE]
