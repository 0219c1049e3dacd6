"""New sessions' mirror rows, written in batches after their creators' statements (sessdb/mirror.py).

A test holds ``sessdb.http_sessions`` locked so that the batch out waits on it for as long as the
test needs, and creations ending meanwhile queue for the next batch; reading the table is not
blocked by that lock. Faults are real: the batch's statement is cancelled, its backend killed.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator

import psycopg
import pytest

from tests.fix_app import engine_of
from tests.fix_gate import HANG_GUARD


@pytest.fixture
async def table_lock(dsn: str) -> AsyncIterator[psycopg.AsyncConnection]:
    """A transaction holding sessdb.http_sessions in EXCLUSIVE mode: writes wait, reads do not.
    Commit it to let the writes go on."""
    async with await psycopg.AsyncConnection.connect(dsn) as conn:
        await conn.execute("LOCK TABLE sessdb.http_sessions IN EXCLUSIVE MODE")
        yield conn
        await conn.rollback()


async def create(client, sid: str) -> tuple[int, dict | str]:  # type: ignore[no-untyped-def,type-arg]
    resp = await client.get("/sess", params={"op": "set", "arg": sid})
    text = await resp.text()
    return resp.status, json.loads(text) if resp.status == 200 else text


def rows(conn: psycopg.Connection, *sids: str) -> dict[str, int]:  # type: ignore[type-arg]
    """The mirror rows of these session ids: id to connection."""
    found = conn.execute("SELECT session_id, conn_id FROM sessdb.http_sessions WHERE session_id = ANY(%s)",
                         [list(sids)]).fetchall()
    return dict(found)


def waiting_on_the_table(conn: psycopg.Connection, statement: str) -> list[int]:  # type: ignore[type-arg]
    """Backends whose statement naming ``statement`` waits for a lock."""
    found = conn.execute("SELECT pid FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND query LIKE %s"
                         " ORDER BY pid", [f"%{statement}%"]).fetchall()
    return [pid for (pid,) in found]


async def until(predicate, what: str) -> None:  # type: ignore[no-untyped-def]
    """Wait for state with no event of its own; the deadline only guards against a hang."""
    deadline = time.monotonic() + HANG_GUARD
    while not predicate():
        assert time.monotonic() < deadline, f"never came: {what}"
        await asyncio.sleep(0.01)


async def test_creations_ending_meanwhile_share_one_batch_and_answer_after_their_rows(  # type: ignore[no-untyped-def]
        client, svcconn, table_lock) -> None:
    engine = engine_of(client)
    batches = engine.new_rows.batches
    first = asyncio.ensure_future(create(client, "R-first"))
    await until(lambda: first.done() or waiting_on_the_table(svcconn, "_mirror_new_sessions"), "the first batch")
    later = [asyncio.ensure_future(create(client, f"R-later-{i}")) for i in range(4)]
    await until(lambda: any(t.done() for t in later) or engine.new_rows.queued == 4, "four creations queued")
    assert not first.done() and not any(t.done() for t in later), "no creator answers before its row is written"
    assert rows(svcconn, "R-first", *(f"R-later-{i}" for i in range(4))) == {}
    await table_lock.commit()
    answers = [await first] + [await t for t in later]
    assert [status for status, _ in answers] == [200] * 5, answers
    written = rows(svcconn, "R-first", *(f"R-later-{i}" for i in range(4)))
    assert written == {body["sid"]: body["pid"] for _, body in answers}  # type: ignore[index]
    assert engine.new_rows.batches == batches + 2, "the four that ended meanwhile were written together"
    for _, body in answers:
        seen = svcconn.execute("SELECT connection_property('SessionID', %s)", [body["pid"]]).fetchone()  # type: ignore[index]
        assert seen == (body["sid"],)  # type: ignore[index]


async def test_a_cancelled_batch_falls_back_to_each_sessions_own_connection(  # type: ignore[no-untyped-def]
        client, svcconn, table_lock) -> None:
    engine = engine_of(client)
    batches = engine.new_rows.batches
    first = asyncio.ensure_future(create(client, "R-c0"))
    await until(lambda: first.done() or waiting_on_the_table(svcconn, "_mirror_new_sessions"), "the first batch")
    later = [asyncio.ensure_future(create(client, f"R-c{i}")) for i in (1, 2)]
    await until(lambda: any(t.done() for t in later) or engine.new_rows.queued == 2, "two creations queued")
    for fallen_back in (1, 3):  # cancel the batch of R-c0, then the one of the two that queued
        # the second batch starts as the first fails, but nothing orders its arrival at the lock
        # before that of the first one's fallback: wait for it
        await until(lambda: len(waiting_on_the_table(svcconn, "_mirror_new_sessions")) == 1 or first.done(),
                    "a batch at the table")
        (carrier,) = waiting_on_the_table(svcconn, "_mirror_new_sessions")
        svcconn.execute("SELECT pg_cancel_backend(%s)", [carrier])
        await until(lambda: len(waiting_on_the_table(svcconn, "_sync_session")) == fallen_back
                    or first.done(), f"{fallen_back} own-connection writes")
    await until(lambda: not waiting_on_the_table(svcconn, "_mirror_new_sessions"), "no batch left")
    assert not first.done() and not any(t.done() for t in later)
    await table_lock.commit()
    answers = [await first] + [await t for t in later]
    assert [status for status, _ in answers] == [200] * 3, answers
    assert rows(svcconn, "R-c0", "R-c1", "R-c2") == {body["sid"]: body["pid"] for _, body in answers}  # type: ignore[index]
    assert engine.new_rows.batches == batches, "no batch was written"
    for sid in ("R-c0", "R-c1", "R-c2"):  # the sessions serve their next requests
        resp = await client.get("/sess", params={"op": "state", "sessionid": sid})
        assert json.loads(await resp.text())["sid"] == sid


async def test_a_batch_whose_connection_is_killed_loses_only_that_session(  # type: ignore[no-untyped-def]
        client, svcconn, table_lock) -> None:
    engine = engine_of(client)
    first = asyncio.ensure_future(create(client, "R-k0"))
    await until(lambda: first.done() or waiting_on_the_table(svcconn, "_mirror_new_sessions"), "the first batch")
    later = asyncio.ensure_future(create(client, "R-k1"))
    await until(lambda: later.done() or engine.new_rows.queued == 1, "a creation queued")
    (carrier,) = waiting_on_the_table(svcconn, "_mirror_new_sessions")
    svcconn.execute("SELECT pg_terminate_backend(%s)", [carrier])
    status, text = await first
    assert status == 503 and "connection was lost" in str(text)
    assert engine.sessions.lookup("R-k0") is None
    await until(lambda: later.done() or waiting_on_the_table(svcconn, "_mirror_new_sessions") not in ([], [carrier]),
                "the next batch")
    await table_lock.commit()
    status, body = await later
    assert status == 200, body
    assert rows(svcconn, "R-k0", "R-k1") == {"R-k1": body["pid"]}  # type: ignore[index]
