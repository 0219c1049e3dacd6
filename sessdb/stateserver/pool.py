"""A small pool of autocommit connections for the state store.

Connections are opened on demand, at most ``size`` at a time, and kept while they stay usable.
A connection that comes back broken, mid-statement or inside a transaction is closed instead
of reused. There is no background reconnecting: while PostgreSQL is down every ``connection()``
fails at once with ``psycopg.OperationalError``, and the first one after it is back succeeds.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import psycopg
from psycopg.pq import TransactionStatus

APP_NAME = "sessdb-state"


class StatePool:
    """At most ``size`` connections to ``dsn``, lent one caller at a time."""

    def __init__(self, dsn: str, size: int = 10, *, connect_timeout: int = 5, statement_timeout_ms: int = 5000,
                 app_name: str = APP_NAME) -> None:
        self.dsn = dsn
        self.size = size
        self._connect_timeout = connect_timeout
        self._options = f"-c statement_timeout={statement_timeout_ms}"
        self._app_name = app_name
        self._slots = asyncio.Semaphore(size)
        self._idle: list[psycopg.AsyncConnection[Any]] = []
        self._closing: set[asyncio.Task[None]] = set()
        self._closed = False

    async def connect(self) -> psycopg.AsyncConnection[Any]:
        """A new autocommit connection outside the pool (the caller closes it)."""
        return await psycopg.AsyncConnection.connect(
            self.dsn, autocommit=True, application_name=self._app_name, options=self._options,
            connect_timeout=self._connect_timeout,
        )

    @contextlib.asynccontextmanager
    async def connection(self) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
        """Lend a connection for the block; raises ``psycopg.OperationalError`` when none can
        be opened, and ``RuntimeError`` after ``close()``."""
        if self._closed:
            raise RuntimeError("the state store pool is closed")
        async with self._slots:
            conn = self._idle.pop() if self._idle else await self.connect()
            try:
                yield conn
            finally:
                self._give_back(conn)

    def _give_back(self, conn: psycopg.AsyncConnection[Any]) -> None:
        reusable = not (conn.closed or conn.broken) and conn.info.transaction_status == TransactionStatus.IDLE
        if reusable and not self._closed:
            self._idle.append(conn)
        else:
            # A cancelled or failed statement may leave the connection mid-protocol: drop it.
            task = asyncio.get_running_loop().create_task(_close_quietly(conn), name="sessdb-state-pool-close")
            self._closing.add(task)
            task.add_done_callback(self._closing.discard)

    async def close(self) -> None:
        """Close the idle connections; lent ones are closed when they come back."""
        self._closed = True
        idle, self._idle = self._idle, []
        await asyncio.gather(*(_close_quietly(c) for c in idle), *self._closing)


async def _close_quietly(conn: psycopg.AsyncConnection[Any]) -> None:
    with contextlib.suppress(Exception):
        await conn.close()
