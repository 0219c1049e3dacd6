"""New sessions' mirror rows, written in batches after their creators' statements, on the engine's
own writer connection (sessdb/mirror.py).

A test holds ``sessdb.http_sessions`` locked so that the batch out waits on it for as long as the
test needs, and creations ending meanwhile queue for the next batch; reading the table is not
blocked by that lock. Faults are real: the batch's statement is cancelled, the writer's backend killed.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import psycopg
import psycopg.sql
import pytest

from sessdb.connection import Backend
from sessdb.mirror import NewSessionRows
from sessdb.session import Session
from sessdb.sessions import wall_now
from tests.fix_app import engine_of
from tests.fix_gate import HANG_GUARD, until


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


async def creations_behind_a_held_batch(client, svcconn, sid: str, later_sids: list[str]):  # type: ignore[no-untyped-def]
    """Creator ``sid``'s batch waits at the locked table and the creators ``later_sids`` are
    queued for the next one: (the first request, the later ones)."""
    first = asyncio.ensure_future(create(client, sid))
    await until(lambda: first.done() or waiting_on_the_table(svcconn, "_mirror_new_sessions"), "the first batch")
    later = [asyncio.ensure_future(create(client, later_sid)) for later_sid in later_sids]
    await until(lambda: any(t.done() for t in later) or engine_of(client).new_rows.queued == len(later),
                f"{len(later)} creations queued")
    return first, later


async def batch_held_at_the_table(client, svcconn, sid: str, later_sid: str):  # type: ignore[no-untyped-def]
    """As ``creations_behind_a_held_batch`` with one later creator: (the first request, the later
    one, the pid writing the batch)."""
    first, (later,) = await creations_behind_a_held_batch(client, svcconn, sid, [later_sid])
    (writer,) = waiting_on_the_table(svcconn, "_mirror_new_sessions")
    return first, later, writer


async def test_creations_ending_meanwhile_share_one_batch_and_answer_after_their_rows(  # type: ignore[no-untyped-def]
        client, svcconn, table_lock) -> None:
    engine = engine_of(client)
    batches = engine.new_rows.batches
    first, later = await creations_behind_a_held_batch(client, svcconn, "R-first", [f"R-later-{i}" for i in range(4)])
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
    first, later = await creations_behind_a_held_batch(client, svcconn, "R-c0", ["R-c1", "R-c2"])
    for fallen_back in (1, 3):  # cancel the batch of R-c0, then the one of the two that queued
        # the second batch starts as the first fails, but nothing orders its arrival at the lock
        # before that of the first one's fallback: wait for it
        await until(lambda: len(waiting_on_the_table(svcconn, "_mirror_new_sessions")) == 1 or first.done(),
                    "a batch at the table")
        (writer,) = waiting_on_the_table(svcconn, "_mirror_new_sessions")
        svcconn.execute("SELECT pg_cancel_backend(%s)", [writer])
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


@pytest.mark.parametrize("ending", ["pg_terminate_backend", "sessdb.drop_connection"])
async def test_a_batch_whose_writer_is_killed_falls_back_and_the_writer_is_opened_again(  # type: ignore[no-untyped-def]
        client, svcconn, table_lock, ending) -> None:
    engine = engine_of(client)
    first, later, writer = await batch_held_at_the_table(client, svcconn, "R-k0", "R-k1")
    assert writer == engine.new_rows.writer_pid, "batches run on the engine's own writer"
    svcconn.execute(f"SELECT {ending}(%s)", [writer])
    # the batch out falls back to its session's own connection, and so does the next one while
    # the writer is opened again
    await until(lambda: first.done() or len(waiting_on_the_table(svcconn, "_sync_session")) == 2, "two fallbacks")
    await table_lock.commit()
    answers = [await first, await later]
    assert [status for status, _ in answers] == [200, 200], answers
    assert rows(svcconn, "R-k0", "R-k1") == {body["sid"]: body["pid"] for _, body in answers}  # type: ignore[index]
    await until(lambda: engine.new_rows.writer_pid not in (None, writer), "a new writer")
    batches = engine.new_rows.batches
    status, body = await create(client, "R-k2")
    assert status == 200, body
    assert engine.new_rows.batches == batches + 1, "batches run on the new writer"
    assert rows(svcconn, "R-k2") == {"R-k2": body["pid"]}  # type: ignore[index]


async def test_without_a_writer_each_session_writes_its_own_row(dsn, svcconn, caplog) -> None:  # type: ignore[no-untyped-def]
    backend = await Backend.open(dsn)
    written: list[str] = []

    async def write_one(session: Session) -> None:
        written.append(session.id)

    # nothing listens on port 1: the writer cannot be opened, at the start nor at the batch
    new_rows = NewSessionRows("review-engine", "postgresql://sessdb@127.0.0.1:1/sessdb?connect_timeout=5", write_one)
    try:
        await new_rows.open()
        assert new_rows.writer_pid is None
        assert "cannot open the connection that writes new sessions' rows" in caplog.text
        session = Session(id="W-1", backend=backend, created_at=wall_now(), timeout_minutes=30.0, creator_addr=None)
        await asyncio.wait_for(new_rows.write(session), HANG_GUARD)
        assert written == ["W-1"] and new_rows.batches == 0
    finally:
        await new_rows.close()
        await backend.close()


class HookedSession(Session):
    """A session whose ``mirrored`` runs a hook: the leader calls it synchronously right after
    ``_lead`` handed the next batch over, before the next leader's task has run."""

    hook = None

    def mirrored(self, peer, at):  # type: ignore[no-untyped-def]
        super().mirrored(peer, at)
        if self.hook is not None:
            self.hook()


async def test_a_creator_cancelled_just_after_being_handed_the_lead_does_not_wedge_the_batches(  # type: ignore[no-untyped-def]
        dsn, svcconn, table_lock) -> None:
    backends = [await Backend.open(dsn) for _ in range(4)]

    async def write_one(session: Session) -> None:  # a failed batch's fallback: none fails here
        raise AssertionError(f"no batch should fail: {session.id}")

    new_rows = NewSessionRows("review-engine", dsn, write_one)
    try:
        await new_rows.open()
        sessions = [HookedSession(id=f"H-{i}", backend=b, created_at=wall_now(), timeout_minutes=30.0,
                                  creator_addr=None) for i, b in enumerate(backends)]
        first = asyncio.ensure_future(new_rows.write(sessions[0]))
        await until(lambda: first.done() or waiting_on_the_table(svcconn, "_mirror_new_sessions"), "the first batch")
        handed = asyncio.ensure_future(new_rows.write(sessions[1]))
        behind = asyncio.ensure_future(new_rows.write(sessions[2]))
        await until(lambda: new_rows.queued == 2, "two queued")
        sessions[0].hook = handed.cancel  # e.g. aiohttp's shutdown cancelling that creator's handler
        await table_lock.commit()
        await first
        with pytest.raises(asyncio.CancelledError):
            await handed
        # the creator queued behind the cancelled one must still get its row written
        await asyncio.wait_for(behind, HANG_GUARD)
        await asyncio.wait_for(new_rows.write(sessions[3]), HANG_GUARD)
        assert set(rows(svcconn, "H-0", "H-2", "H-3")) == {"H-0", "H-2", "H-3"}
    finally:
        await new_rows.close()
        for b in backends:
            await b.close()
        svcconn.execute("DELETE FROM sessdb.http_sessions WHERE engine_id = 'review-engine'")


async def without_the_writer(client, writer: str) -> None:  # type: ignore[no-untyped-def]
    """With ``writer`` 'closed', the engine's writer is closed for good: each new session writes
    its own row (``Engine._mirror``), as while the writer is down."""
    if writer == "closed":
        await engine_of(client).new_rows.close()


@pytest.mark.parametrize("writer", ["open", "closed"])
async def test_a_creator_that_leaves_its_connection_read_only_answers_with_its_row(  # type: ignore[no-untyped-def]
        client, svcconn, writer) -> None:
    await without_the_writer(client, writer)
    svcconn.execute("""
        CREATE OR REPLACE FUNCTION public.review_ro(arg text) RETURNS text LANGUAGE plpgsql AS $$
        BEGIN
            PERFORM sa_set_http_option('SessionID', arg);
            SET default_transaction_read_only = on;  -- any role may; a session keeps it
            RETURN pg_backend_pid()::text;
        END $$""")
    svcconn.execute("SELECT sessdb.create_service(name => 'review_ro', type => 'RAW', "
                    "statement => 'SELECT review_ro(:arg)', replace => true)")
    await until(lambda: "review_ro" in engine_of(client).catalog.services, "the service")
    resp = await client.get("/review_ro", params={"arg": "RO-1"})
    assert resp.status == 200, await resp.text()
    pid = int(await resp.text())
    seen = svcconn.execute("SELECT connection_property('SessionID', %s)", [pid]).fetchone()
    assert seen == ("RO-1",), "another connection sees the session once its creator has answered (README)"


@pytest.mark.parametrize("writer", ["open", "closed"])
async def test_a_creator_with_a_role_left_set_gets_its_row(client, svcconn, writer) -> None:  # type: ignore[no-untyped-def]
    await without_the_writer(client, writer)
    svcconn.execute("DO $$ BEGIN CREATE ROLE review_nobody; EXCEPTION WHEN duplicate_object THEN NULL; END $$")
    svcconn.execute("GRANT USAGE ON SCHEMA sessdb TO review_nobody")
    resp = await client.get("/sess", params={"op": "set,role", "arg": "RR-1", "arg2": "review_nobody"})
    body = json.loads(await resp.text())
    assert resp.status == 200 and body["role"] == "review_nobody"
    assert svcconn.execute("SELECT connection_property('SessionID', %s)", [body["pid"]]).fetchone() == ("RR-1",)


async def test_a_creator_whose_connection_is_killed_while_writing_its_own_row_answers_503(  # type: ignore[no-untyped-def]
        client, svcconn, table_lock) -> None:
    engine = engine_of(client)
    await without_the_writer(client, "closed")
    creator = asyncio.ensure_future(create(client, "R-own"))
    await until(lambda: creator.done() or waiting_on_the_table(svcconn, "_sync_session"), "its own row at the table")
    (pid,) = waiting_on_the_table(svcconn, "_sync_session")
    svcconn.execute("SELECT pg_terminate_backend(%s)", [pid])
    status, text = await creator
    assert status == 503 and "connection was lost" in str(text)
    assert engine.sessions.lookup("R-own") is None
    assert rows(svcconn, "R-own") == {}


async def test_the_writer_is_read_write_and_read_committed_whatever_the_database_says(  # type: ignore[no-untyped-def]
        dsn, svcconn) -> None:
    backend = await Backend.open(dsn)
    written: list[str] = []

    async def write_one(session: Session) -> None:
        written.append(session.id)

    new_rows = NewSessionRows("review-engine", dsn, write_one)
    database = svcconn.execute("SELECT current_database()").fetchone()[0]  # type: ignore[index]
    quoted = psycopg.sql.Identifier(database).as_string(svcconn)
    svcconn.execute(f"ALTER DATABASE {quoted} SET default_transaction_read_only = on")
    svcconn.execute(f"ALTER DATABASE {quoted} SET default_transaction_isolation = serializable")
    try:
        await new_rows.open()
    finally:
        svcconn.execute(f"ALTER DATABASE {quoted} RESET default_transaction_read_only")
        svcconn.execute(f"ALTER DATABASE {quoted} RESET default_transaction_isolation")
    try:
        assert new_rows.writer_pid is not None
        session = Session(id="W-rw", backend=backend, created_at=wall_now(), timeout_minutes=30.0, creator_addr=None)
        await asyncio.wait_for(new_rows.write(session), HANG_GUARD)
        assert written == [] and new_rows.batches == 1
        assert rows(svcconn, "W-rw") == {"W-rw": backend.pid}
    finally:
        await new_rows.close()
        await backend.close()
        svcconn.execute("DELETE FROM sessdb.http_sessions WHERE engine_id = 'review-engine'")
