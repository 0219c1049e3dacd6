"""New sessions' rows of ``sessdb.http_sessions``, written in batches (a group commit).

A creator request no longer writes its new session's row in its own transaction: that made
every creation a writing transaction (a transaction id, a commit record, the insert and its
index entries) on a connection that had been idle, which cost PostgreSQL more than the rest
of the creation. Instead, once the creator's statement is done, the engine hands the session
to ``NewSessionRows.write``, which writes the rows of every session handed over meanwhile in
one statement and one transaction, on the connection of one of them (its creator still holds
it, and it has just run). At most one batch is out at a time; creations that end while it is
out make the next one, so a burst of creations costs PostgreSQL a few transactions.

The creator answers, and lets the session serve its next request, only once the row is
committed: a client that got its answer finds the session from any connection, as before.
When a batch fails (its connection was killed or cancelled, the table is locked past the
timeout), each of its sessions writes its own row on its own connection instead.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import psycopg

from sessdb.connection import ENGINE_ROLE
from sessdb.session import Session
from sessdb.wire import Step

log = logging.getLogger("sessdb.mirror")

# $1 the engine's id, $2 a JSON array of [pid, session id, created (ISO), timeout minutes,
# client address]; answers when the rows got their release time (PostgreSQL's epoch)
_BATCH_SQL = b"SELECT sessdb._mirror_new_sessions($1, $2)"

# The batch runs in a transaction block of its own, read-write and read committed whatever
# defaults the carrier's session left (SET default_transaction_read_only, a serializable default)
_BEGIN = Step(b"BEGIN ISOLATION LEVEL READ COMMITTED READ WRITE")
_COMMIT = Step(b"COMMIT")

_LEAD = object()  # a waiter's result: write the next batch yourself


class NewSessionRows:
    """The batches of one engine; ``write_one`` writes a single session's row on its own
    connection when its batch failed."""

    def __init__(self, engine_id: str, write_one: Callable[[Session], Awaitable[None]]) -> None:
        self.engine_id = engine_id
        self._write_one = write_one
        self._queue: list[tuple[Session, asyncio.Future[Any]]] = []
        self._out = False  # a batch is being written
        self.batches = 0  # how many were written (for tests and metrics)

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
        carrier = next((s.backend for s in sessions if not s.backend.broken), None)
        if carrier is None:
            return None
        # no row for a lost connection: PostgreSQL may give its pid to a new connection already
        rows = {s.backend.pid: [s.backend.pid, s.id, s.created_at.isoformat(), s.timeout_minutes,
                                s.creator_addr or ""] for s in sessions if not s.backend.broken}
        try:
            await carrier.settle_cancel()
            results = await carrier.wire.run([_BEGIN, ENGINE_ROLE, Step(_BATCH_SQL, [
                self.engine_id, json.dumps(list(rows.values()))]), _COMMIT])
        except psycopg.Error as exc:
            log.debug("writing %d session rows on connection %s failed: %s", len(rows), carrier.pid, exc)
            return None
        res = results[2]
        failed = next((e for e in map(carrier.wire.error_of, results) if e is not None), None)
        if failed is not None or res is None or res.ntuples != 1 or results[3] is None:
            log.debug("writing %d session rows on connection %s failed: %s", len(rows), carrier.pid, failed)
            await carrier.rollback_if_needed()  # the block is left open and failed after an error
            return None
        self.batches += 1
        value = res.get_value(0, 0)
        return None if value is None else bytes(value).decode()

    async def _settle(self, session: Session, at: str | None) -> None:
        if at is not None:
            session.mirrored(session.creator_addr, at)
        elif not session.backend.broken:
            await self._write_one(session)
