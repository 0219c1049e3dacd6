"""The sweeper: every SWEEP_INTERVAL, close sessions that timed out or were dropped.

It also notices idle sessions whose backend was killed from outside (``pg_terminate_backend``,
a PostgreSQL restart) and closes them the same way, removes rows of dead connections from the
``sessdb.http_sessions`` mirror, and deletes expired ASP.NET state items when the state store
is installed. It reschedules before working and never dies of an error.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import TYPE_CHECKING

import psycopg

if TYPE_CHECKING:
    from sessdb.engine import Engine

log = logging.getLogger("sessdb.sweeper")


class Sweeper:
    """The periodic task of one engine."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.interval = engine.settings.sweep_interval
        self.sweeps = 0
        self._task: asyncio.Task[None] | None = None
        self._conn: psycopg.AsyncConnection | None = None

    def start(self) -> None:
        """Start sweeping in the background."""
        self._task = asyncio.get_running_loop().create_task(self._loop(), name="sessdb-sweeper")

    async def stop(self) -> None:
        """Stop sweeping and close the sweeper's connection."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._conn is not None:
            await self._conn.close()

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        next_at = loop.time()
        while True:
            next_at += self.interval
            await asyncio.sleep(max(0.0, next_at - loop.time()))
            try:
                await self.sweep()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("sweep failed; trying again next interval")

    async def sweep(self) -> int:
        """One sweep; returns the number of sessions closed."""
        sessions = self.engine.sessions
        closed = 0
        for session in sessions.expired(time.monotonic()):
            log.info("closing session %s (%s)", session.id, session.marked or "timed out")
            sessions.close(session)
            closed += 1
        closed += await self._close_killed()
        await self._sweep_state_items()
        self.sweeps += 1
        return closed

    async def _connection(self) -> psycopg.AsyncConnection:
        if self._conn is None or self._conn.closed or self._conn.broken:
            self._conn = await psycopg.AsyncConnection.connect(self.engine.dsn, autocommit=True,
                                                               application_name="sessdb-sweeper")
        return self._conn

    async def _close_killed(self) -> int:
        sessions = self.engine.sessions
        idle = {s.backend.pid: s for s in sessions if not s.busy}
        conn = await self._connection()
        cur = await conn.execute("SELECT array_agg(pid) FROM pg_stat_activity WHERE pid = ANY(%s)", [list(idle)])
        row = await cur.fetchone()
        alive = set(row[0] or []) if row else set()
        closed = 0
        for pid, session in idle.items():
            if pid not in alive and not session.closed:
                log.info("session %s lost its connection %s; closing it", session.id, pid)
                await session.backend.close()
                sessions.drop(session, "killed")
                sessions.close(session)
                closed += 1
        await conn.execute(
            "DELETE FROM sessdb.http_sessions s WHERE NOT EXISTS "
            "(SELECT 1 FROM pg_stat_activity a WHERE a.pid = s.conn_id AND a.backend_start <= s.created_at)"
        )
        return closed

    async def _sweep_state_items(self) -> None:
        try:
            from sessdb.stateserver.store import sweep_expired
        except ImportError:
            return
        if self.engine.state_server is not None:
            return  # the state server sweeps its own items
        conn = await self._connection()
        await sweep_expired(conn)
