"""Connections opened ahead for new sessions (``SESSION_RESERVE``), and what ended sessions give back.

A request that creates a session keeps its pooled connection; a spare opened before takes its
place at once. The connection of a session its own request deleted comes back, reset, into a
gap of the pool or the reserve. Which connection serves a request is what a user sees of it:
the backend pid in the answer of the ``sess`` service (tests/fixtures/20_sessions.sql).
"""

from __future__ import annotations

import pytest

from tests.fix_app import engine_of
from tests.test_sessions import _until, call
from tests.web_helpers import ServiceMaker, services  # noqa: F401 (a fixture)


def _pids(client) -> set[int]:  # type: ignore[no-untyped-def]
    return {b.pid for b in engine_of(client).pool.backends}


async def test_new_sessions_take_connections_opened_before(make_client) -> None:  # type: ignore[no-untyped-def]
    client = await make_client(pool_size=1, session_reserve=3)
    await _until(lambda: len(_pids(client)) == 4)  # the reserve is opened after the pool, in the background
    ahead = _pids(client)
    created = [await call(client, "set,table", f"R1-{n}") for n in range(3)]
    assert {c["pid"] for c in created} <= ahead, "each creator ran on a pooled connection opened before"
    assert len({c["pid"] for c in created}) == 3
    sessionless = await call(client, "state")
    assert sessionless["pid"] in ahead, "a spare, not a newly opened connection, took each creator's place"
    assert sessionless["sid"] == "" and sessionless["t"] is None
    for n, before in enumerate(created):
        again = await call(client, "inc", sid=f"R1-{n}")
        assert again["pid"] == before["pid"] and again["t"] == 1


async def test_the_reserve_is_opened_again_once_half_of_it_is_used(make_client) -> None:  # type: ignore[no-untyped-def]
    client = await make_client(pool_size=1, session_reserve=4)
    await _until(lambda: len(_pids(client)) == 5)
    ahead = _pids(client)
    for n in range(3):
        await call(client, "set", f"R2-{n}")
    # 3 of 4 spares went into sessions: the reserve is refilled to 4, with connections opened now
    await _until(lambda: len(_pids(client)) == 5 and len(_pids(client) - ahead) == 3)


async def test_an_ended_sessions_connection_is_reset_and_serves_again(make_client) -> None:  # type: ignore[no-untyped-def]
    client = await make_client(pool_size=1, session_reserve=2)
    await _until(lambda: len(_pids(client)) == 3)
    first = await call(client, "set,table,var", "R3")
    await call(client, "set", "", sid="R3")  # the session's own request deletes it
    await _until(lambda: first["pid"] in _pids(client))  # reset, it went back into the reserve
    await call(client, "set", "R3-b")  # the spare that replaced R3's connection; R3's replaces it
    reused = await call(client, "state")
    assert reused["pid"] == first["pid"]
    assert reused["sid"] == "" and reused["t"] is None and reused["v"] == 0, "nothing of R3 is left"


async def test_without_a_reserve_a_new_connection_replaces_a_creators(make_client) -> None:  # type: ignore[no-untyped-def]
    client = await make_client(pool_size=1, session_reserve=0)
    before = _pids(client)
    created = await call(client, "set", "R4")
    assert {created["pid"]} == before
    sessionless = await call(client, "state")
    assert sessionless["pid"] not in before


async def test_a_lost_pool_connection_is_replaced_by_a_spare_at_once(make_client, svcconn) -> None:  # type: ignore[no-untyped-def]
    client = await make_client(pool_size=1, session_reserve=2)
    await _until(lambda: len(_pids(client)) == 3)
    ahead = _pids(client)
    pooled = (await call(client, "state"))["pid"]
    svcconn.execute("SELECT pg_terminate_backend(%s)", [pooled])
    first = await client.get("/sess", params={"op": "state"})  # it may be the one to find the connection dead
    assert first.status in (200, 503), await first.text()
    answer = await call(client, "state")
    assert answer["pid"] in ahead - {pooled}, "a spare took the lost connection's place"


def _log_size(svcconn) -> int | None:  # type: ignore[no-untyped-def]
    """The size of the embedded cluster's log (``postgres.log`` in its data dir), None without one."""
    row = svcconn.execute("SELECT (pg_stat_file('postgres.log', true)).size").fetchone()
    return None if row is None else row[0]


async def test_creating_and_ending_sessions_logs_no_error(make_client, svcconn) -> None:  # type: ignore[no-untyped-def]
    """A creator's connection is not reset (it holds the session now); refusing is no error."""
    start = _log_size(svcconn)
    if start is None:
        pytest.skip("the server's log is not readable here (an external SESSDB_TEST_DSN)")
    client = await make_client(pool_size=1, session_reserve=2)
    await _until(lambda: len(_pids(client)) == 3)
    for n in range(3):
        await call(client, "set,table", f"R6-{n}")
        await call(client, "set", "", sid=f"R6-{n}")
    assert (await call(client, "state"))["sid"] == ""
    size = _log_size(svcconn)
    logged = svcconn.execute("SELECT pg_read_file('postgres.log', %s, %s)", [start, size - start]).fetchone()[0]
    assert "ERROR" not in logged, logged


@pytest.mark.parametrize("left", ["prepare", "role"])
async def test_an_ended_sessions_prepared_statements_and_role_are_gone(make_client, svcconn, left) -> None:  # type: ignore[no-untyped-def]
    """What an ended session left is reset: by the light reset, or in full for what that refuses
    (see sessdb._end_pooled)."""
    svcconn.execute("DO $$ BEGIN CREATE ROLE sess_reset_role; EXCEPTION WHEN duplicate_object THEN NULL; END $$")
    svcconn.execute("GRANT USAGE ON SCHEMA sessdb TO sess_reset_role")
    # a reserve of 2, as above: the creator uses 1 of 2 spares, which opens no new one, so R7's
    # connection finds a gap in the reserve (with a reserve of 1 a spare opened in the background
    # could fill it first, and R7's connection was closed: the test failed under CPU load)
    client = await make_client(pool_size=1, session_reserve=2)
    await _until(lambda: len(_pids(client)) == 3)
    login = next(iter(engine_of(client).pool.backends)).login
    first = await call(client, f"set,{left}", "R7", "sess_reset_role")
    assert (first["prepared"], first["role"]) == ((1, login) if left == "prepare" else (0, "sess_reset_role"))
    again = await call(client, "state", sid="R7")  # what a session's statement left stays with the session
    assert (again["sid"], again["prepared"], again["role"]) == ("R7", first["prepared"], first["role"])
    await call(client, "set", "", sid="R7")
    await _until(lambda: first["pid"] in _pids(client))
    await call(client, "set", "R7-b")  # takes the spare; R7's old connection serves next
    reused = await call(client, "state")
    assert reused["pid"] == first["pid"]
    assert (reused["prepared"], reused["role"]) == (0, login)


async def test_spares_are_warmed_up_and_keep_nothing_of_it(make_client, svcconn,  # type: ignore[no-untyped-def]
                                                            services: ServiceMaker) -> None:
    """A spare has created a session once and taken it back (sessdb._warm_up), then served a
    sessionless request of its own, before its first use: the engine's statements are prepared
    on it already, and nothing else is left."""
    client = await make_client(pool_size=1, session_reserve=2)
    # true when the engine's last statement of a request (which runs after this one) is prepared
    probe = await services.create(client, "RAW", "SELECT count(*) FROM pg_prepared_statements "
                                                 "WHERE statement LIKE '%' || 'sessdb._end' || '_pooled(%'")
    spares = set()

    def warmed() -> bool:
        spares.clear()
        spares.update(b.pid for b in engine_of(client).pool._spares)
        rows = svcconn.execute("SELECT pid FROM pg_stat_activity WHERE pid = ANY(%s) AND state = 'idle' "
                               "AND query LIKE %s", [list(spares), "%sessdb._end_pooled(%"]).fetchall()
        return len(spares) == 2 and len(rows) == 2

    await _until(warmed)
    left = svcconn.execute(
        "SELECT (SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = ANY(%s)),"
        " (SELECT count(*) FROM sessdb.http_sessions WHERE conn_id = ANY(%s))", [list(spares)] * 2).fetchone()
    assert left == (0, 0), "no id, slot or session row is left of the warm-up"
    first = await call(client, "set,table", "R8-0")  # on the pool's own connection
    assert await (await client.get(f"/{probe}")).text() == "1", "a spare's first request finds the engine ready"
    second = await call(client, "set,table", "R8-1")
    assert second["pid"] in spares, "the second creator ran on a spare, which took the first one's place"
    assert (first["sid"], second["sid"]) == ("R8-0", "R8-1")
    assert (second["t"], second["v"], second["prepared"], second["role"], second["timeout"]) == \
        (0, 0, 0, first["role"], first["timeout"]), "the spare's session starts as fresh as any"


async def test_a_spare_killed_while_being_readied_is_replaced(make_client, dsn, svcconn) -> None:  # type: ignore[no-untyped-def]
    # The mirror table locked, a new spare's warm-up waits (up to its 1 s lock timeout): it is
    # killed there, as PostgreSQL restarting or an admin would.
    import psycopg

    with psycopg.connect(dsn) as blocker:
        blocker.execute("LOCK TABLE sessdb.http_sessions IN ACCESS EXCLUSIVE MODE")
        client = await make_client(pool_size=1, session_reserve=1)
        waiting = "SELECT pid FROM pg_stat_activity WHERE application_name = 'sessdb' AND wait_event_type = 'Lock'"
        await _until(lambda: svcconn.execute(waiting).fetchone() is not None or engine_of(client).pool._spares)
        for (pid,) in svcconn.execute(waiting).fetchall():
            svcconn.execute("SELECT pg_terminate_backend(%s)", [pid])
    await _until(lambda: len(engine_of(client).pool._spares) == 1)  # another one was opened
    assert (await call(client, "set", "R10"))["sid"] == "R10"


async def test_the_warm_up_does_nothing_inside_a_request(make_client, services: ServiceMaker) -> None:  # type: ignore[no-untyped-def]
    """Called from a service statement (in a session or not), sessdb._warm_up refuses: it would
    give up the session's id and slot."""
    client = await make_client(pool_size=1, session_reserve=1)
    name = await services.create(client, "RAW", "SELECT sessdb._warm_up()")
    await call(client, "set", "R9")
    for sid in ("R9", None):
        resp = await client.get(f"/{name}", params={"sessionid": sid} if sid else {})
        assert (resp.status, await resp.text()) == (200, "false")
    taken = await call(client, "set", "R9", status=500)
    assert "SD939" in taken["text"], "R9's id is still held by its session"
    assert (await call(client, "state", sid="R9"))["sid"] == "R9"
