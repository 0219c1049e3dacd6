"""The service catalog in memory, reloaded whenever ``sessdb.services`` changes.

A dedicated connection LISTENs on ``sessdb_services`` (the table's trigger notifies it), so a
created, altered or dropped service is seen within milliseconds. If that connection is lost
the catalog reconnects and reloads, and it also reloads every ``POLL_SECONDS`` as a backstop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from types import MappingProxyType

import psycopg
from psycopg.rows import dict_row

from sessdb.routing import Service

log = logging.getLogger("sessdb.services")

CHANNEL = "sessdb_services"
ADMIN_CHANNEL = "sessdb_admin"
POLL_SECONDS = 30.0
_QUERY = """
SELECT name, type, statement, url, methods, "authorization", user_name, session, enabled, group_name, format
FROM sessdb.services
"""


def service_from_row(row: dict) -> Service:  # type: ignore[type-arg]
    """A ``Service`` from a row of ``sessdb.services``."""
    methods = tuple(m for m in (row["methods"] or "").split(",") if m)
    return Service(
        name=row["name"], type=row["type"], statement=row["statement"], url=row["url"], methods=methods,
        authorization=row["authorization"], user_name=row["user_name"], session=row["session"],
        enabled=row["enabled"], group_name=row["group_name"], format=row["format"],
    )


class Catalog:
    """The current services by name; ``services`` is replaced whole on every reload."""

    def __init__(self, dsn: str, on_admin: Callable[[str], None] | None = None) -> None:
        self.dsn = dsn
        self.on_admin = on_admin
        self.services: MappingProxyType[str, Service] = MappingProxyType({})
        self.dbname: str | None = None
        self.options: MappingProxyType[str, str] = MappingProxyType({})  # sessdb.options
        self._task: asyncio.Task[None] | None = None
        self._loaded = asyncio.Event()
        self.generation = 0

    async def start(self) -> None:
        """Load the catalog and start listening; raises ``psycopg.Error`` if the DB is unreachable."""
        conn = await self._connect()
        self._task = asyncio.get_running_loop().create_task(self._run(conn), name="sessdb-catalog")

    async def stop(self) -> None:
        """Stop listening."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def wait_for_generation(self, generation: int, timeout: float = 5.0) -> None:
        """Wait until the catalog has reloaded past ``generation`` (tests use this)."""
        async with asyncio.timeout(timeout):
            while self.generation <= generation:
                self._loaded.clear()
                await self._loaded.wait()

    async def _connect(self) -> psycopg.AsyncConnection:
        conn = await psycopg.AsyncConnection.connect(self.dsn, autocommit=True, application_name="sessdb-catalog")
        await conn.execute(f"LISTEN {CHANNEL}")
        await conn.execute(f"LISTEN {ADMIN_CHANNEL}")
        await self._reload(conn)
        return conn

    async def _reload(self, conn: psycopg.AsyncConnection) -> None:
        """Read the services and the database options (both change rarely and notify)."""
        async with conn.cursor(row_factory=dict_row) as cur:
            await cur.execute(_QUERY)
            rows = await cur.fetchall()
            await cur.execute("SELECT current_database()")
            self.dbname = (await cur.fetchone())["current_database"]  # type: ignore[index]
            await cur.execute("SELECT name, value FROM sessdb.options")
            self.options = MappingProxyType({r["name"]: r["value"] for r in await cur.fetchall()})
        self.services = MappingProxyType({row["name"]: service_from_row(row) for row in rows})
        self.generation += 1
        self._loaded.set()
        log.debug("loaded %d services", len(rows))

    async def _run(self, conn: psycopg.AsyncConnection | None) -> None:
        delay = 0.1
        while True:
            try:
                if conn is None or conn.closed:
                    conn = await self._connect()
                    delay = 0.1
                await self._listen(conn)
            except asyncio.CancelledError:
                if conn is not None:
                    await conn.close()
                raise
            except Exception as exc:
                log.warning("service catalog connection lost (%s); reconnecting in %.1fs", exc, delay)
                if conn is not None:
                    with contextlib.suppress(Exception):
                        await conn.close()
                conn = None
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    async def _listen(self, conn: psycopg.AsyncConnection) -> None:
        while True:
            changed = not await self._take(conn, timeout=POLL_SECONDS, stop_after=1)
            if changed:
                # several changes in a burst: drain them before one reload
                await self._take(conn, timeout=0.01)
            await self._reload(conn)

    async def _take(self, conn: psycopg.AsyncConnection, **kwargs: float) -> bool:
        """Handle notifications; True when only admin messages came (no catalog change)."""
        admin_only = True
        async for notify in conn.notifies(**kwargs):  # type: ignore[arg-type]
            if notify.channel == ADMIN_CHANNEL:
                if self.on_admin is not None:
                    try:
                        self.on_admin(notify.payload)
                    except Exception:
                        log.exception("admin message %r failed", notify.payload)
            else:
                admin_only = False
        return admin_only
