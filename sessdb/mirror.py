"""New sessions' rows of ``sessdb.http_sessions``, written in batches (a group commit) on a
connection of the engine's own.

A creator request does not write its new session's row in its own transaction: that made
every creation a writing transaction (a transaction id, a commit record, the insert and its
index entries) on a connection that had been idle, which cost PostgreSQL more than the rest
of the creation. Instead, once the creator's statement is done, the engine hands the session
to ``NewSessionRows.write``, which writes the rows of every session handed over meanwhile in
one statement and one transaction. At most one batch is out at a time; creations that end
while it is out make the next one, so a burst of creations costs PostgreSQL a few
transactions.

The batches run on the writer, a connection that runs nothing else (``application_name``
``sessdb-mirror``), so its backend has the batch's plan and catalog entries at hand. Carried
by the connection of one of the new sessions instead, each batch ran on a backend that had
carried none for a long while: measured in bursts of creations, the writer saves PostgreSQL
about 80 us of CPU per creation. Its transactions are read committed and read-write whatever
the database's defaults, and commit without waiting for the WAL flush
(``synchronous_commit = off``): another connection sees a commit at once either way, and the
rows mirror sessions whose connections a crash of PostgreSQL ends anyway.

The creator answers, and lets the session serve its next request, only once the row is
committed: a client that got its answer finds the session from any connection. When a batch
fails (the writer was cancelled or killed, or is not open), each of its sessions writes its own
row on its own connection instead. A writer found lost is closed and another one opened in the
background at once; should that fail, the next batches try again, at most once per interval
(from half a second, doubling up to 30 seconds), and a warning is logged once per outage.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import psycopg

from sessdb.connection import Backend
from sessdb.errors import first_line
from sessdb.session import Session
from sessdb.wire import Step

log = logging.getLogger("sessdb.mirror")

WRITER_APP_NAME = "sessdb-mirror"
_WRITER_SETTINGS = (("default_transaction_isolation", "read committed"), ("default_transaction_read_only", "off"),
                    ("synchronous_commit", "off"), ("statement_timeout", "0"))
_RETRY_FIRST, _RETRY_MAX = 0.5, 30.0  # seconds between attempts to open the writer, after a failed one

# $1 the engine's id, $2 a JSON array of [pid, session id, created (ISO), timeout minutes,
# client address]; answers when the rows got their release time (PostgreSQL's epoch)
_BATCH_SQL = b"SELECT sessdb._mirror_new_sessions($1, $2)"

_LEAD = object()  # a waiter's result: write the next batch yourself


class NewSessionRows:
    """The batches of one engine; ``write_one`` writes a single session's row on its own
    connection when its batch failed."""

    def __init__(self, engine_id: str, dsn: str, write_one: Callable[[Session], Awaitable[None]]) -> None:
        self.engine_id = engine_id
        self.dsn = dsn
        self._write_one = write_one
        self._queue: list[tuple[Session, asyncio.Future[Any]]] = []
        self._out = False  # a batch is being written
        self.batches = 0  # how many were written (for tests and metrics)
        self._writer: Backend | None = None
        self._reopening: asyncio.Task[None] | None = None
        self._closed = False
        self._failing = False  # the last attempt to open the writer failed
        self._retry_delay = _RETRY_FIRST
        self._retry_at = 0.0  # the event loop's time before which no attempt is made

    async def open(self) -> None:
        """Open the writer. Should it fail, sessions write their own rows until it is opened
        again, which the next batch starts."""
        self._writer = await self._open_writer()

    async def close(self) -> None:
        """Close the writer (no batch may be out)."""
        self._closed = True
        if self._reopening is not None:
            self._reopening.cancel()
            await asyncio.gather(self._reopening, return_exceptions=True)
        if self._writer is not None:
            await self._writer.close()
            self._writer = None

    @property
    def writer_pid(self) -> int | None:
        """The writer's backend pid, when it is open."""
        return None if self._writer is None else self._writer.pid

    @property
    def queued(self) -> int:
        """Sessions waiting for a batch (not counting the one out)."""
        return len(self._queue)

    async def write(self, session: Session) -> None:
        """Return once ``session``'s row is committed (the creator has finished with the
        connection: nothing else may use it until this returns)."""
        waiter: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        entry = (session, waiter)
        self._queue.append(entry)
        if self._out:
            try:
                at = await waiter
            except BaseException:
                if entry in self._queue:
                    self._queue.remove(entry)
                if waiter.done() and not waiter.cancelled() and waiter.result() is _LEAD:
                    # cancelled once handed the next batch: hand it on, or nobody ever writes it
                    self._out = False
                    self._hand_over()
                raise
            if at is not _LEAD:
                await self._settle(session, at)
                return
        at = await self._lead(entry)
        await self._settle(session, at)

    async def _lead(self, own: tuple[Session, asyncio.Future[Any]]) -> str | None:
        """Write the batch of every session queued now (``own``'s among them), answer the
        others, and hand the next batch to the first session queued meanwhile."""
        self._out = True
        batch, self._queue = self._queue, []
        at = None
        try:
            at = await self._write_batch([session for session, _ in batch])
        finally:
            for _, waiter in batch:
                if waiter is not own[1] and not waiter.done():
                    waiter.set_result(at)
            self._out = False
            self._hand_over()
        return at

    def _hand_over(self) -> None:
        while self._queue:
            _, waiter = self._queue[0]
            if not waiter.done():
                self._out = True
                waiter.set_result(_LEAD)
                return
            self._queue.pop(0)  # its request is gone

    async def _write_batch(self, sessions: list[Session]) -> str | None:
        """PostgreSQL's epoch of the rows' release time, or None when the batch failed."""
        writer = await self._ready_writer()
        # no row for a lost connection: PostgreSQL may give its pid to a new connection already
        rows = {s.backend.pid: [s.backend.pid, s.id, s.created_at.isoformat(), s.timeout_minutes,
                                s.creator_addr or ""] for s in sessions if not s.backend.broken}
        if writer is None or not rows:
            return None
        failed: object = None
        try:
            (res,) = await writer.wire.run([Step(_BATCH_SQL, [self.engine_id, json.dumps(list(rows.values()))])])
            failed = writer.wire.error_of(res) or (None if res is not None and res.ntuples == 1 else "no answer")
        except psycopg.Error as exc:
            failed = exc
        if failed is not None:
            log.debug("writing %d session rows on connection %s failed: %s", len(rows), writer.pid, failed)
            if writer.broken:
                log.info("the connection that writes new sessions' rows was lost; opening another")
                await self._retire()
            return None
        self.batches += 1
        value = res.get_value(0, 0)
        return None if value is None else bytes(value).decode()

    async def _ready_writer(self) -> Backend | None:
        """The writer when it can be used; else None (see ``_retire``)."""
        writer = self._writer
        if writer is not None and not writer.broken:
            return writer
        await self._retire()
        return None

    async def _retire(self) -> None:
        """Close the writer, if any, and start opening another one unless one is being opened
        or the last attempt failed less than the retry interval ago."""
        writer, self._writer = self._writer, None
        if writer is not None:
            await writer.close()
        loop = asyncio.get_running_loop()
        if self._reopening is None and not self._closed and loop.time() >= self._retry_at:
            self._reopening = loop.create_task(self._reopen(), name="sessdb-mirror-open")

    async def _reopen(self) -> None:
        try:
            writer = await self._open_writer()
        finally:
            self._reopening = None
        if writer is not None and self._closed:
            await writer.close()
        elif writer is not None:
            self._writer = writer

    async def _open_writer(self) -> Backend | None:
        """A new writer, or None after a failed attempt (which sets when to try again)."""
        try:
            writer = await Backend.open(self.dsn, app_name=WRITER_APP_NAME, settings=_WRITER_SETTINGS)
        except psycopg.Error as exc:
            reason = first_line(exc)
            if not self._failing:
                log.warning("cannot open the connection that writes new sessions' rows (each session writes its "
                            "own meanwhile): %s", reason)
            else:
                log.debug("still cannot open the connection that writes new sessions' rows: %s", reason)
            self._failing = True
            self._retry_at = asyncio.get_running_loop().time() + self._retry_delay
            self._retry_delay = min(self._retry_delay * 2, _RETRY_MAX)
            return None
        if self._failing:
            log.info("the connection that writes new sessions' rows is open again")
        self._failing, self._retry_delay, self._retry_at = False, _RETRY_FIRST, 0.0
        return writer

    async def _settle(self, session: Session, at: str | None) -> None:
        if at is not None:
            session.mirrored(session.creator_addr, at)
        elif not session.backend.broken:
            await self._write_one(session)
