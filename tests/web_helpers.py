"""Helpers for the web-service tests: services made and dropped per test, catalog waits, raw HTTP.

``services`` creates services with unique names through ``sessdb.create_service`` (or any
SQL) and waits until a running engine's catalog agrees with the table: a wait on the
catalog's reload generation with a hang guard for a deadline (CATALOG_HANG_GUARD), never a
fixed sleep. The contract's one second (PICKUP_SECONDS) is asserted only by the test of it.
Everything a test created is dropped at its end.
"""

from __future__ import annotations

import asyncio
import base64
import uuid
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import psycopg
import pytest
from aiohttp.test_utils import TestClient
from psycopg.rows import dict_row

from sessdb.routing import Service
from sessdb.services import service_from_row
from tests.fix_app import engine_of

PICKUP_SECONDS = 1.0  # contract 3: a running engine sees catalog changes within one second
CATALOG_HANG_GUARD = 10.0  # seconds: the waits' deadline, for a change that, broken, never comes


def unique(prefix: str = "w") -> str:
    """A service or table name no other test uses."""
    return f"{prefix}{uuid.uuid4().hex[:10]}"


def basic(user: str, password: str) -> dict[str, str]:
    """An ``Authorization: Basic`` header."""
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


async def wait_catalog(client: TestClient, ready: Callable[[Mapping[str, Service]], bool],
                       timeout: float = CATALOG_HANG_GUARD) -> None:
    """Wait until ``ready(catalog.services)`` holds; TimeoutError after ``timeout`` seconds."""
    catalog = engine_of(client).catalog
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not ready(catalog.services):
        left = deadline - loop.time()
        if left <= 0:
            raise TimeoutError(f"catalog did not catch up within {timeout}s")
        await catalog.wait_for_generation(catalog.generation, timeout=left)


def catalog_row(conn: psycopg.Connection, name: str) -> Service | None:
    """The service ``name`` as the table holds it now, or None."""
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute("SELECT * FROM sessdb.services WHERE name = %s", [name])
        row = cur.fetchone()
    return service_from_row(row) if row else None


class ServiceMaker:
    """Creates services with unique names and waits for engines to see them."""

    def __init__(self, conn: psycopg.Connection) -> None:
        self.conn = conn
        self.created: set[str] = set()

    async def sync(self, client: TestClient, *names: str) -> None:
        """Wait until ``client``'s engine sees each of ``names`` exactly as the table holds it."""
        want = {name: catalog_row(self.conn, name) for name in names}
        await wait_catalog(client, lambda services: all(services.get(n) == s for n, s in want.items()))

    async def create(self, client: TestClient | None, type: str, statement: str | None,
                     name: str | None = None, **options: Any) -> str:
        """Create a service (unique name unless given) and wait for ``client`` to see it."""
        name = name or unique()
        args = {"name": name, "type": type, "statement": statement, **options}
        placeholders = ", ".join(f'"{key}" => %s' for key in args)
        self.conn.execute(f"SELECT sessdb.create_service({placeholders})", list(args.values()))
        self.created.add(name)
        if client is not None:
            await self.sync(client, name)
        return name

    async def alter(self, client: TestClient | None, name: str, **options: Any) -> None:
        """Alter a service and wait for ``client`` to see the change."""
        placeholders = ", ".join(f'"{key}" => %s' for key in ["name", *options])
        self.conn.execute(f"SELECT sessdb.alter_service({placeholders})", [name, *options.values()])
        if client is not None:
            await self.sync(client, name)

    async def drop(self, client: TestClient | None, name: str) -> None:
        """Drop a service and wait for ``client`` to stop seeing it."""
        self.conn.execute("SELECT sessdb.drop_service(%s)", [name])
        self.created.discard(name)
        if client is not None:
            await self.sync(client, name)

    def cleanup(self) -> None:
        """Drop every service this maker created that still exists."""
        for name in self.created:
            self.conn.execute("DELETE FROM sessdb.services WHERE name = %s", [name])
        self.created.clear()


@pytest.fixture
def services(svcconn: psycopg.Connection) -> Iterator[ServiceMaker]:
    """A ``ServiceMaker`` whose services are dropped after the test."""
    maker = ServiceMaker(svcconn)
    try:
        yield maker
    finally:
        maker.cleanup()


@pytest.fixture
def table(svcconn: psycopg.Connection) -> Iterator[str]:
    """A fresh table ``(id serial, v text)`` everyone may use, dropped after the test."""
    name = unique("t")
    svcconn.execute(f"CREATE TABLE public.{name} (id serial PRIMARY KEY, v text)")
    svcconn.execute(f"GRANT ALL ON public.{name} TO PUBLIC")
    svcconn.execute(f"GRANT ALL ON SEQUENCE public.{name}_id_seq TO PUBLIC")
    try:
        yield name
    finally:
        svcconn.execute(f"DROP TABLE IF EXISTS public.{name}")


async def raw_http(client: TestClient, data: bytes, *, timeout: float = 5.0) -> bytes:
    """Send ``data`` on a fresh TCP connection and read until the server closes it."""
    reader, writer = await asyncio.open_connection(client.server.host, client.server.port)
    try:
        writer.write(data)
        await writer.drain()
        async with asyncio.timeout(timeout):
            return await reader.read()
    finally:
        writer.close()
        await writer.wait_closed()


def status_of(response: bytes) -> int:
    """The status code of a raw HTTP/1.x response."""
    return int(response.split(b" ", 2)[1])
