"""The state-item store: one call of a ``sessdb.state_*`` function per operation.

Every function takes an autocommit psycopg ``AsyncConnection``; each call is one statement and
therefore one transaction, so an operation either happens whole or not at all, whatever
happens to the client or to this process meanwhile. Database errors propagate as
``psycopg.Error``: callers must never turn them into "not found".
"""

from __future__ import annotations

from typing import Any

import psycopg

from sessdb.stateserver.locks import ItemResult, Status
from sessdb.stateserver.protocol import Operation, Verb

_COLUMNS = "status, data, timeout_minutes, lock_cookie, lock_date, db_now, action_flags"
_GET = f"SELECT {_COLUMNS} FROM sessdb.state_get(%s, %s, %s)"
_RELEASE = f"SELECT {_COLUMNS} FROM sessdb.state_release(%s, %s)"
_PUT = f"SELECT {_COLUMNS} FROM sessdb.state_put(%s, %s, %s, %s, %s, %s)"
_REMOVE = f"SELECT {_COLUMNS} FROM sessdb.state_remove(%s, %s, %s)"
_TOUCH = f"SELECT {_COLUMNS} FROM sessdb.state_touch(%s)"
_SWEEP = "SELECT sessdb.state_sweep(%s)"

DEFAULT_SWEEP_BATCH = 1000


async def _one(conn: psycopg.AsyncConnection[Any], query: str, params: tuple[Any, ...]) -> ItemResult:
    cur = await conn.execute(query, params, binary=True)
    row = await cur.fetchone()
    assert row is not None, "sessdb.state_* functions always return one row"
    status, data, timeout, cookie, lock_date, now, flags = row
    return ItemResult(Status(status), None if data is None else bytes(data), timeout, cookie, lock_date, now, flags)


async def get(conn: psycopg.AsyncConnection[Any], key: str, *, exclusive: bool, watch: bool = False) -> ItemResult:
    """Read an item (and lock it when ``exclusive``); 423 leaves it alone but, with ``watch``,
    asks for a NOTIFY when its lock is released."""
    return await _one(conn, _GET, (key, exclusive, watch))


async def release(conn: psycopg.AsyncConnection[Any], key: str, cookie: int) -> ItemResult:
    """Unlock an item whose lock carries ``cookie`` (200 also when it was not locked)."""
    return await _one(conn, _RELEASE, (key, cookie))


async def put(
    conn: psycopg.AsyncConnection[Any], key: str, data: bytes, *, timeout: int, cookie: int | None,
    extra_flags: int = 0, strict: bool = False,
) -> ItemResult:
    """Store ``data`` and unlock; bit 0 of ``extra_flags`` makes it insert-only.

    Without ``strict`` (the wire protocol, [REF] semantics) an unlocked item takes any cookie;
    with it the cookie must be the item's current one (ASP.NET's SQL provider semantics).
    """
    return await _one(conn, _PUT, (key, data, timeout, cookie, extra_flags, strict))


async def remove(conn: psycopg.AsyncConnection[Any], key: str, cookie: int | None, *, strict: bool = False) -> ItemResult:
    """Delete an item that is unlocked or locked with ``cookie`` (``strict``: see ``put``)."""
    return await _one(conn, _REMOVE, (key, cookie, strict))


async def touch(conn: psycopg.AsyncConnection[Any], key: str) -> ItemResult:
    """Slide the expiry of a live item."""
    return await _one(conn, _TOUCH, (key,))


async def apply(conn: psycopg.AsyncConnection[Any], op: Operation) -> ItemResult:
    """Run the store call that a wire ``Operation`` asks for."""
    if op.verb in (Verb.GET, Verb.ACQUIRE):
        return await get(conn, op.key, exclusive=op.verb is Verb.ACQUIRE)
    if op.verb is Verb.RELEASE:
        assert op.lock_cookie is not None
        return await release(conn, op.key, op.lock_cookie)
    if op.verb is Verb.PUT:
        return await put(conn, op.key, op.body, timeout=op.timeout, cookie=op.lock_cookie, extra_flags=op.extra_flags)
    if op.verb is Verb.DELETE:
        return await remove(conn, op.key, op.lock_cookie)
    return await touch(conn, op.key)


async def sweep_expired(conn: psycopg.AsyncConnection[Any], batch: int = DEFAULT_SWEEP_BATCH) -> int:
    """Delete every expired item, ``batch`` rows per transaction; returns how many went.

    ``conn`` must be in autocommit mode so that each batch commits (and frees its row locks)
    on its own; rows that a live statement holds are skipped until the next sweep.
    """
    total = 0
    while True:
        cur = await conn.execute(_SWEEP, (batch,))
        row = await cur.fetchone()
        deleted = int(row[0]) if row else 0
        total += deleted
        if deleted < batch:
            return total
