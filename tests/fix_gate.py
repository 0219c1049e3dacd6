"""A gate the test holds shut: a request's statement waits at it until the test opens it.

The op ``gate`` of the session test service (tests/fixtures/20_sessions.sql) takes a shared
transaction-level advisory lock keyed by the gate's name; the test holds the exclusive
session-level lock on that key through a connection of its own. So a statement is "still
running" for exactly as long as the test needs, however slow the machine, and
``until_waiting`` awaits the statement actually being at the gate instead of sleeping.

The key's prefix ``sessdb-test-gate:`` keeps it apart from sessdb's own advisory locks (ids
through ``hashtextextended('sessdb-session:' || id, 0)``, slots on two int keys).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator

import psycopg
import pytest

HANG_GUARD = 20.0  # seconds: only for something that, broken, never comes


async def until(predicate, what: str = "the condition", timeout: float = HANG_GUARD) -> None:  # type: ignore[no-untyped-def]
    """Wait for state that has no event of its own (engine state, a backend at a lock); the
    deadline is a hang guard only (for something that, broken, never comes), never a bound on speed."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"never came: {what}"
        await asyncio.sleep(0.01)

_KEY = "hashtextextended('sessdb-test-gate:' || %(name)s, 0)"
_WAITING = f"""
    SELECT count(*) FROM pg_locks
    WHERE locktype = 'advisory' AND NOT granted AND objsubid = 1
      AND database = (SELECT oid FROM pg_database WHERE datname = current_database())
      AND classid::bigint = ({_KEY} >> 32) & 4294967295
      AND objid::bigint = {_KEY} & 4294967295
"""


class Gate:
    """A shut gate named ``name`` (pass it as the request parameter ``gate``)."""

    def __init__(self, conn: psycopg.AsyncConnection, name: str) -> None:
        self.conn = conn
        self.name = name
        self.shut = False

    async def close(self) -> None:
        """Shut the gate: statements arriving at it wait."""
        await self.conn.execute(f"SELECT pg_advisory_lock({_KEY})", {"name": self.name})
        self.shut = True

    async def open(self) -> None:
        """Open the gate: every statement waiting at it goes on."""
        if self.shut:
            await self.conn.execute(f"SELECT pg_advisory_unlock({_KEY})", {"name": self.name})
            self.shut = False

    async def waiting(self) -> int:
        """How many statements wait at the gate now."""
        cur = await self.conn.execute(_WAITING, {"name": self.name})
        return int((await cur.fetchone())[0])  # type: ignore[index]

    async def until_waiting(self, *requests: asyncio.Future, count: int | None = None,  # type: ignore[type-arg]
                            timeout: float = HANG_GUARD) -> None:
        """Wait until ``count`` statements (by default one per request given, else one) wait at
        the gate; fail at once when one of ``requests`` ends before, and after ``timeout``."""
        want = count if count is not None else max(1, len(requests))
        deadline = time.monotonic() + timeout
        while await self.waiting() < want:
            for request in requests:
                if request.done():
                    outcome = "cancelled" if request.cancelled() else repr(request.exception() or request.result())
                    raise AssertionError(f"a request ended before reaching gate {self.name}: {outcome}")
            if time.monotonic() > deadline:
                raise AssertionError(f"no {want} statement(s) at gate {self.name} within {timeout}s")
            await asyncio.sleep(0.01)


@pytest.fixture
async def gate(make_client, dsn: str) -> AsyncIterator[Gate]:  # type: ignore[no-untyped-def]
    """A shut gate. Set up after ``make_client`` so that it is torn down before the clients close:
    its connection's end opens the gate, so a test that fails with a statement still waiting at
    it leaves nothing hanging."""
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True,
                                                     application_name="sessdb-test-gate") as conn:
        gate = Gate(conn, uuid.uuid4().hex)
        await gate.close()
        yield gate
