"""The pool of connections for sessionless requests.

Connections are reset after every use, before anyone can take them again: in the request's
own round trip when it can be (``sessdb._reset_request``), else here, in the background. A
connection can also leave the pool for good with ``detach`` when its request makes it a
session's; the pool then opens a replacement in the background, so that ``size`` connections
stay ready (contract 5.9).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging

import psycopg

from sessdb.connection import Backend
from sessdb.errors import DatabaseError, ServiceUnavailable

log = logging.getLogger("sessdb.pool")


class ConnectionPool:
    """A fixed number of reset, ready connections, and a FIFO of requests waiting for one."""

    def __init__(self, dsn: str, size: int) -> None:
        self.dsn = dsn
        self.size = size
        self._idle: collections.deque[Backend] = collections.deque()
        self._waiters: collections.deque[asyncio.Future[Backend]] = collections.deque()
        self._all: set[Backend] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._opening = 0
        self._closed = False
        self._failing: str | None = None  # why the last attempt to open a connection failed

    async def open(self) -> None:
        """Open all connections; raises ``DatabaseError`` when PostgreSQL cannot be reached."""
        try:
            backends = await asyncio.gather(*(Backend.open(self.dsn) for _ in range(self.size)))
        except psycopg.Error as exc:
            raise DatabaseError(f"cannot open connections: {str(exc).strip().splitlines()[0]}") from None
        for backend in backends:
            self._all.add(backend)
            self._idle.append(backend)

    @property
    def backends(self) -> frozenset[Backend]:
        """Every connection the pool owns, idle or lent out."""
        return frozenset(self._all)

    async def acquire(self, timeout: float = 30.0) -> Backend:
        """A reset connection; raises ``ServiceUnavailable`` when none frees up in ``timeout``."""
        if self._closed:
            raise ServiceUnavailable("the engine is shutting down")
        if self._idle and not self._waiters:
            return self._idle.popleft()
        if self._failing is not None and not self._idle:
            # PostgreSQL is unreachable: answer at once rather than keep the client waiting
            self._spawn(self._replace())
            raise ServiceUnavailable(f"the database is unavailable: {self._failing}", retry_after=1)
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Backend] = loop.create_future()
        self._waiters.append(future)
        expiry = loop.call_later(timeout, _expire, future)  # cheaper than asyncio.timeout
        try:
            return await future
        except BaseException as exc:
            # Critical section: the waiter may have been handed a connection just as it timed
            # out or its client left; give it on rather than lose it.
            if future.done() and not future.cancelled() and future.exception() is None:
                self._give(future.result())
            with contextlib.suppress(ValueError):
                self._waiters.remove(future)
            if isinstance(exc, TimeoutError):
                raise ServiceUnavailable("no database connection became free in time", retry_after=1) from None
            raise
        finally:
            expiry.cancel()

    def release(self, backend: Backend, *, clean: bool = False) -> None:
        """Give a connection back; it is reset in the background before reuse, unless ``clean``."""
        if clean and not self._closed and not backend.broken and backend.cancelling is None:
            backend.on_notice = None
            self._give(backend)
            return
        self._spawn(self._reset_and_return(backend))

    def detach(self, backend: Backend) -> None:
        """The connection leaves the pool (it now belongs to a session); a new one replaces it."""
        self._all.discard(backend)
        self._spawn(self._replace())

    def adopt(self, backend: Backend, *, reset_sql: bytes = b"") -> None:
        """Take in the connection of an ended session; it is reset first.

        Up to ``size`` connections beyond the pool's size are kept as spares, so that sessions
        created and ended at a high rate reuse connections instead of opening new ones; the
        sweeper trims the spares again (``trim``). ``reset_sql`` runs in the reset's round trip.
        """
        if len(self._all) + self._opening >= 2 * self.size or self._closed:
            self._spawn(backend.close())
            return
        self._all.add(backend)
        self._spawn(self._reset_and_return(backend, reset_sql))

    async def trim(self) -> int:
        """Close idle connections beyond the pool's size; returns how many were closed."""
        closed = 0
        while len(self._all) > self.size and self._idle:
            backend = self._idle.pop()
            self._all.discard(backend)
            await backend.close()
            closed += 1
        return closed

    async def close(self) -> None:
        """Close every connection and fail the waiters."""
        self._closed = True
        for future in self._waiters:
            if not future.done():
                future.set_exception(ServiceUnavailable("the engine is shutting down"))
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await asyncio.gather(*(b.close() for b in self._all))
        self._all.clear()
        self._idle.clear()

    # -- internals -----------------------------------------------------------------------------

    def _give(self, backend: Backend) -> None:
        """Hand a ready connection to the oldest live waiter, or keep it idle."""
        while self._waiters:
            future = self._waiters.popleft()
            if not future.done():
                future.set_result(backend)
                return
        self._idle.append(backend)

    async def _reset_and_return(self, backend: Backend, reset_sql: bytes = b"") -> None:
        backend.on_notice = None
        await backend.settle_cancel()
        if not self._closed and await backend.reset(reset_sql):
            self._give(backend)
            return
        self._all.discard(backend)
        await backend.close()
        await self._replace()

    async def _replace(self) -> None:
        if self._closed or len(self._all) + self._opening >= self.size:
            return
        if self._failing is not None and self._opening > 0:
            return  # one opener at a time retries while PostgreSQL is unreachable
        self._opening += 1
        try:
            backend = await self._open_with_retry()
        finally:
            self._opening -= 1
        if backend is None:
            return
        if self._closed:
            await backend.close()
            return
        self._all.add(backend)
        self._give(backend)
        if len(self._all) + self._opening < self.size:
            self._spawn(self._replace())  # replacements skipped during an outage are made now

    async def _open_with_retry(self) -> Backend | None:
        delay = 0.1
        while not self._closed:
            try:
                backend = await Backend.open(self.dsn)
                self._failing = None
                return backend
            except psycopg.Error as exc:
                self._failing = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                log.warning("cannot open a pool connection (retrying in %.1fs): %s", delay, exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 1.0)
        return None

    def _spawn(self, coro) -> None:  # type: ignore[no-untyped-def]
        task = asyncio.get_running_loop().create_task(coro, name="sessdb-pool")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


def _expire(future: asyncio.Future[Backend]) -> None:
    """A waiter's time is up (unless it was served just now)."""
    if not future.done():
        future.set_exception(TimeoutError())
