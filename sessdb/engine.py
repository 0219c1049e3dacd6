"""The Engine: the one object the web layer talks to.

It owns the connection pool, the service catalog, the authenticator and the background parts
(sessions, sweeper, state server), starts them in order and stops them in reverse order.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

import psycopg

from sessdb.auth import Authenticator
from sessdb.config import Settings
from sessdb.connection import Backend
from sessdb.errors import DatabaseError, ServiceUnavailable
from sessdb.execute import Outcome, run_call
from sessdb.plan import Call
from sessdb.pool import ConnectionPool
from sessdb.services import Catalog
from sessdb.web.respond import ResponsePlan

log = logging.getLogger("sessdb.engine")


@dataclass
class Result:
    """A finished call: its outcome and the response changes the application asked for."""

    outcome: Outcome
    plan: ResponsePlan


class Engine:
    """Everything a running sessdb needs besides the HTTP listener."""

    def __init__(self, settings: Settings, dsn: str) -> None:
        self.settings = settings
        self.dsn = dsn
        self.pool = ConnectionPool(dsn, settings.pool_size)
        self.catalog = Catalog(dsn)
        self.auth = Authenticator(dsn)
        self.state_server = None  # sessdb.stateserver.server.StateServer when STATE_PORT is set
        self._tasks: set[asyncio.Task[Result]] = set()
        self._stopping = False

    async def start(self) -> None:
        """Open the pool, load the catalog, start the background parts; raises ``DatabaseError``."""
        await self.pool.open()
        try:
            await self.catalog.start()
        except psycopg.Error as exc:
            await self.pool.close()
            raise DatabaseError(f"cannot load the service catalog: {exc}") from None
        if self.settings.state_port is not None:
            from sessdb.stateserver.server import StateServer

            self.state_server = StateServer(self.settings, self.dsn)
            await self.state_server.start()

    async def stop(self) -> None:
        """Stop the parts and close every connection."""
        self._stopping = True
        if self.state_server is not None:
            await self.state_server.stop()
        await self.catalog.stop()
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

    @property
    def statement_timeout_ms(self) -> int | None:
        """REQUEST_TIMEOUT in milliseconds, None for no limit."""
        seconds = self.settings.request_timeout
        return max(1, int(seconds * 1000)) if seconds else None

    async def run_sessionless(self, call: Call) -> Result:
        """Run ``call`` on a pooled connection; the SQL runs in a task owned by the engine.

        If the caller is cancelled (its client went away), the statement is cancelled in
        PostgreSQL and the task rolls back and returns the connection by itself.
        """
        if self._stopping:
            raise ServiceUnavailable("the engine is shutting down")
        backend = await self.pool.acquire()
        task = asyncio.get_running_loop().create_task(self._run_pooled(backend, call), name="sessdb-call")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        try:
            return await asyncio.shield(task)
        except asyncio.CancelledError:
            if not task.done():
                await backend.cancel()
            raise

    async def _run_pooled(self, backend: Backend, call: Call) -> Result:
        plan = ResponsePlan()
        try:
            outcome = await run_call(backend, call, on_event=lambda e: _apply_event(plan, e),
                                     statement_timeout_ms=self.statement_timeout_ms)
        finally:
            self.pool.release(backend)
        if outcome.error is not None and isinstance(outcome.error, psycopg.OperationalError) and backend.broken:
            raise ServiceUnavailable("the database connection was lost", retry_after=1)
        return Result(outcome, plan)


def _apply_event(plan: ResponsePlan, event: dict) -> None:  # type: ignore[type-arg]
    if event.get("kind") == "header" and isinstance(event.get("name"), str):
        plan.apply_header_event(event["name"], event.get("value"))
