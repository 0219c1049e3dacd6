"""The Engine: the one object the web layer talks to.

It owns the connection pool and the background parts (service catalog, sessions, sweeper,
state server), starts them in order and stops them in reverse order.
"""

from __future__ import annotations

import asyncio
import logging

import psycopg

from sessdb.config import Settings
from sessdb.pool import ConnectionPool

log = logging.getLogger("sessdb.engine")


class Engine:
    """Everything a running sessdb needs besides the HTTP listener."""

    def __init__(self, settings: Settings, dsn: str) -> None:
        self.settings = settings
        self.dsn = dsn
        self.pool = ConnectionPool(dsn, settings.pool_size)
        self.state_server = None  # sessdb.stateserver.server.StateServer when STATE_PORT is set
        self._stopping = False

    async def start(self) -> None:
        """Open the pool and start the background parts; raises ``DatabaseError``."""
        await self.pool.open()
        if self.settings.state_port is not None:
            from sessdb.stateserver.server import StateServer

            self.state_server = StateServer(self.settings, self.dsn)
            await self.state_server.start()

    async def stop(self) -> None:
        """Stop the parts and close every connection."""
        self._stopping = True
        if self.state_server is not None:
            await self.state_server.stop()
        await self.pool.close()

    async def ready(self) -> bool:
        """True when the database answers a query within 5 seconds."""
        if self._stopping:
            return False
        try:
            backend = await self.pool.acquire(timeout=5)
        except Exception:
            return False
        try:
            await asyncio.wait_for(backend.conn.execute("SELECT 1"), 5)
            return True
        except (psycopg.Error, asyncio.TimeoutError):
            return False
        finally:
            self.pool.release(backend)
