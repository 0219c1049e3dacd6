"""The pool of connections for sessionless requests.

Connections are reset after every use, before anyone can take them again: in the request's
own round trip when it can be (``sessdb._end_pooled``), else here, in the background. A
connection can also leave the pool for good with ``detach`` when its request makes it a
session's; the pool then takes a spare from its reserve at once (``SESSION_RESERVE``
connections opened ahead, so that creating a session never waits for PostgreSQL to open a
connection) and opens a replacement in the background, so that ``size`` connections stay
ready (contract 5.9). The connection of an ended session comes back with ``adopt``: reset, it
fills a gap in the pool or the reserve, or is closed.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
from collections.abc import Awaitable, Callable

import psycopg

from sessdb.connection import Backend
from sessdb.errors import DatabaseError, ServiceUnavailable, first_line

log = logging.getLogger("sessdb.pool")

_OPENERS = 4  # connections opened at once to fill gaps (each costs PostgreSQL a few ms of CPU)


class ConnectionPool:
    """A fixed number of reset, ready connections, a FIFO of requests waiting for one, and a
    reserve of spares that replace the connections that become sessions'."""

    def __init__(self, dsn: str, size: int, reserve: int = 0,
                 warm_up: Callable[[Backend], Awaitable[bool]] | None = None) -> None:
        self.dsn = dsn
        self.size = size
        self.reserve = reserve
        # readies a new spare for its first request; False when the connection is closed
        self._warm_up = warm_up or Backend.warm_up
        self._idle: collections.deque[Backend] = collections.deque()
        self._spares: collections.deque[Backend] = collections.deque()  # the reserve, ready
        self._waiters: collections.deque[asyncio.Future[Backend]] = collections.deque()
        self._all: set[Backend] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._opening = 0
        self._adopting: set[Backend] = set()  # ended sessions' connections being reset, each to fill a gap
        self._refilling = False  # the reserve fell to half: it is being filled up again
        self._closed = False
        self._failing: str | None = None  # why the last attempt to open a connection failed

    async def open(self) -> None:
        """Open the pool's connections; raises ``DatabaseError`` when PostgreSQL cannot be reached.

        The reserve fills in the background.
        """
        results = await asyncio.gather(*(Backend.open(self.dsn) for _ in range(self.size)), return_exceptions=True)
        backends = [r for r in results if isinstance(r, Backend)]
        failed = [r for r in results if not isinstance(r, Backend)]
        if failed:
            await asyncio.gather(*(b.close() for b in backends))
            if not isinstance(failed[0], psycopg.Error):
                raise failed[0]
            raise DatabaseError(f"cannot open connections: {first_line(failed[0])}") from None
        for backend in backends:
            self._all.add(backend)
            self._idle.append(backend)
        self._fill()

    @property
    def backends(self) -> frozenset[Backend]:
        """Every connection the pool owns: idle, lent out, or spare."""
        return frozenset(self._all.union(self._spares))

    @property
    def target(self) -> int:
        """How many connections the pool keeps when nothing is missing: its size plus its reserve."""
        return self.size + self.reserve

    async def acquire(self, timeout: float = 30.0) -> Backend:
        """A reset connection; raises ``ServiceUnavailable`` when none frees up in ``timeout``."""
        if self._closed:
            raise ServiceUnavailable("the engine is shutting down")
        if self._idle and not self._waiters:
            return self._idle.popleft()
        if self._failing is not None and not self._idle:
            # PostgreSQL is unreachable: answer at once rather than keep the client waiting
            self._fill()
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
        """The connection leaves the pool (it now belongs to a session); a spare replaces it."""
        self._all.discard(backend)
        self._fill()

    def adopt(self, backend: Backend, *, forget: bytes) -> None:
        """Take in the connection of an ended session: reset (the statement ``forget`` first, in
        the same round trip), it fills a gap in the pool or the reserve; else it is closed.

        The reset keeps the engine's prepared statements when it can (see
        ``Backend.reset_keeping_statements``), else it is the whole reset."""
        if self._closed:
            self._spawn(backend.close())
            return
        self._adopting.add(backend)
        self._spawn(self._adopt(backend, forget))

    async def close(self) -> None:
        """Close every connection and fail the waiters."""
        self._closed = True
        for future in self._waiters:
            if not future.done():
                future.set_exception(ServiceUnavailable("the engine is shutting down"))
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        # connections being reset when their task was cancelled (perhaps before it started)
        await asyncio.gather(*(b.close() for b in self.backends | self._adopting))
        self._adopting.clear()
        self._all.clear()
        self._idle.clear()
        self._spares.clear()

    # -- internals -----------------------------------------------------------------------------

    def _give(self, backend: Backend) -> None:
        """Hand a ready connection to the oldest live waiter, or keep it idle."""
        while self._waiters:
            future = self._waiters.popleft()
            if not future.done():
                future.set_result(backend)
                return
        self._idle.append(backend)

    async def _reset_and_return(self, backend: Backend) -> None:
        backend.on_notice = None
        await backend.settle_cancel()
        if not self._closed and await backend.reset():
            self._give(backend)
            return
        self._all.discard(backend)
        await backend.close()
        self._fill()

    async def _adopt(self, backend: Backend, forget: bytes) -> None:
        ready = False
        try:
            backend.on_notice = None
            await backend.settle_cancel()
            ready = not self._closed and (await backend.reset_keeping_statements(forget)
                                          or await backend.reset(forget + b";"))
        finally:
            self._adopting.discard(backend)
            if not ready:
                await backend.close()
        if ready:
            self._place(backend, warm=True)
        else:
            self._fill()

    def _place(self, backend: Backend, *, warm: bool = False) -> None:
        """A new or reset connection fills the pool first, then the reserve; else it is closed."""
        if self._closed:
            self._spawn(backend.close())
        elif len(self._all) < self.size:
            self._all.add(backend)
            self._give(backend)
        elif len(self._spares) < self.reserve:
            # given-back connections are warm (caches, plans) and go first, new ones last
            if warm:
                self._spares.append(backend)
            else:
                self._spares.appendleft(backend)
        else:
            self._spawn(backend.close())

    def _fill(self) -> None:
        """Open what is missing: a gap in the pool at once, the reserve once half of it is gone
        (then whole), a few connections at a time, one during an outage."""
        if self._closed:
            return
        while len(self._all) < self.size and self._spares:  # a gap in the pool takes a spare at once
            spare = self._spares.pop()
            if spare.broken:
                self._spawn(spare.close())
                continue
            self._all.add(spare)
            self._give(spare)
        # spares there or on their way, once the pool's own gaps are filled
        spares = len(self._spares) + self._opening + len(self._adopting) - max(0, self.size - len(self._all))
        if spares >= self.reserve:
            self._refilling = False
            return
        if spares >= (self.reserve + 1) // 2 and not self._refilling:
            return  # ended sessions give connections back: create-and-delete cycles open none
        self._refilling = True
        room = 1 if self._failing is not None else _OPENERS
        for _ in range(min(self.reserve - spares, room - self._opening)):
            self._opening += 1
            self._spawn(self._open_one())

    async def _open_one(self) -> None:
        lost = False
        try:
            backend = await self._open_with_retry()
            if backend is not None and len(self._all) >= self.size and not await self._warm_up(backend):
                backend, lost = None, True  # killed while being readied (it is closed)
        finally:
            self._opening -= 1
        if backend is not None:
            self._place(backend)
            self._fill()
        elif lost and not self._closed:
            await asyncio.sleep(0.1)  # another one, but not in a tight loop should every new one fail
            self._fill()

    async def _open_with_retry(self) -> Backend | None:
        delay = 0.1
        while not self._closed:
            try:
                backend = await Backend.open(self.dsn)
                self._failing = None
                return backend
            except psycopg.Error as exc:
                self._failing = first_line(exc)
                if self._opening > 1:
                    return None  # one opener retries while PostgreSQL is unreachable
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
