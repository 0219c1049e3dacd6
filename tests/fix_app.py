"""The in-process engine behind a real HTTP listener on loopback, and a client for it."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from aiohttp.test_utils import TestClient, TestServer

from sessdb.config import Settings
from sessdb.web.app import ENGINE, make_app
from sessdb.web.protocol import SessdbRunner


class SessdbTestServer(TestServer):
    """aiohttp's TestServer on sessdb's runner (parse-error statuses, read timeout, cancellation)."""

    async def _make_runner(self, **kwargs):  # type: ignore[no-untyped-def]
        return SessdbRunner(self.app, **kwargs)


def test_settings(dsn: str, **changes: object) -> Settings:
    """Settings for tests: the test database, short sweeps, a small pool."""
    base = Settings(dsn=dsn, port=0, sweep_interval=0.1, pool_size=4)
    return base.replace(**changes)


@pytest.fixture
def settings(dsn: str) -> Settings:
    """Default test settings; a test overrides them with ``make_client(**changes)``."""
    return test_settings(dsn)


@pytest.fixture
async def make_client(dsn: str) -> AsyncIterator:
    """A factory of HTTP clients on fresh apps: ``client = await make_client(pool_size=2)``."""
    clients: list[TestClient] = []

    async def factory(read_timeout: float = 30.0, **changes: object) -> TestClient:
        app = make_app(test_settings(dsn, **changes), dsn)
        client = TestClient(SessdbTestServer(app, host="127.0.0.1", read_timeout=read_timeout))
        await client.start_server()
        clients.append(client)
        return client

    yield factory
    for client in reversed(clients):
        await client.close()


@pytest.fixture
async def client(make_client) -> TestClient:  # type: ignore[no-untyped-def]
    """An HTTP client on an app with the default test settings."""
    return await make_client()


def engine_of(client: TestClient):  # type: ignore[no-untyped-def]
    """The Engine behind a test client."""
    return client.server.app[ENGINE]
