"""Wake-ups for requests waiting on a locked session item, driven by PostgreSQL NOTIFY.

A provider call that finds an item locked marks it ``watched`` in the same statement; the
statement that next releases that lock sends ``NOTIFY sessdb_state, md5(key)``, from whichever
process (or state-server client) holds it. ``ReleaseWatcher`` keeps one ``LISTEN`` connection
per process and sets the ``Watch`` of every waiter on that key. A waiter registers its watch
*before* its attempt, so a release that commits after the attempt cannot be missed while the
listener is connected; when the listener reconnects every watch is woken, because
notifications may have been lost in between.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import psycopg

log = logging.getLogger("sessdb.stateserver")

CHANNEL = "sessdb_state"
Connect = Callable[[], Awaitable[psycopg.AsyncConnection[Any]]]


def key_digest(key: str) -> str:
    """The NOTIFY payload for ``key``: what ``md5(key)`` gives in PostgreSQL."""
    return hashlib.md5(key.encode("utf-8")).hexdigest()


class Watch:
    """One waiter's wake-up signal."""

    def __init__(self) -> None:
        self._event = asyncio.Event()

    def set(self) -> None:
        """Wake the waiter (idempotent)."""
        self._event.set()

    async def wait(self, timeout: float | None) -> bool:
        """Wait for a wake-up; False when ``timeout`` seconds passed first."""
        try:
            await asyncio.wait_for(self._event.wait(), timeout)
        except asyncio.TimeoutError:
            return False
        return True


class ReleaseWatcher:
    """The process's ``LISTEN sessdb_state`` connection and the watches registered per key."""

    def __init__(self, connect: Connect) -> None:
        self._connect = connect
        self._watches: dict[str, set[Watch]] = {}
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Connect and ``LISTEN``; raises ``psycopg.Error`` when PostgreSQL cannot be reached.
        Later connection losses are repaired in the background."""
        conn = await self._open()
        self._task = asyncio.get_running_loop().create_task(self._run(conn), name="sessdb-state-listener")

    async def stop(self) -> None:
        """Stop listening and wake every waiter."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        self.wake_all()

    @contextlib.contextmanager
    def watch(self, key: str) -> Iterator[Watch]:
        """Register a watch on ``key`` for the duration of the block."""
        digest, watch = key_digest(key), Watch()
        self._watches.setdefault(digest, set()).add(watch)
        try:
            yield watch
        finally:
            watches = self._watches.get(digest)
            if watches is not None:
                watches.discard(watch)
                if not watches:
                    del self._watches[digest]

    def wake(self, key: str) -> None:
        """Wake the watches on ``key`` (used directly for releases made by this process)."""
        self._wake_digest(key_digest(key))

    def wake_all(self) -> None:
        """Wake every watch (after a reconnect, or at stop)."""
        for watches in self._watches.values():
            for watch in watches:
                watch.set()

    def _wake_digest(self, digest: str) -> None:
        for watch in self._watches.get(digest, ()):
            watch.set()

    async def _open(self) -> psycopg.AsyncConnection[Any]:
        conn = await self._connect()
        try:
            await conn.execute(f"LISTEN {CHANNEL}")
        except BaseException:
            await _close_quietly(conn)
            raise
        return conn

    async def _run(self, conn: psycopg.AsyncConnection[Any]) -> None:
        while True:
            try:
                async for notify in conn.notifies():
                    self._wake_digest(notify.payload)
            except psycopg.Error as exc:
                log.warning("state listener lost its connection: %s", exc)
            finally:
                await _close_quietly(conn)
            conn = await self._reconnect()
            self.wake_all()  # whatever was released while we were not listening

    async def _reconnect(self) -> psycopg.AsyncConnection[Any]:
        delay = 0.1
        while True:
            try:
                return await self._open()
            except psycopg.Error as exc:
                log.warning("state listener cannot connect (retrying in %.1fs): %s", delay, exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)


async def _close_quietly(conn: psycopg.AsyncConnection[Any]) -> None:
    with contextlib.suppress(Exception):
        await conn.close()
