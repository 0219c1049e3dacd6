"""HTTP sessions through real HTTP: SQL Anywhere's scenarios 1-34 and contract 5.1-5.10.

The service ``sess`` (tests/fixtures/20_sessions.sql) runs ``sess_demo(op, arg, arg2, secs, gate)``,
which applies comma-separated operations and answers JSON describing its connection's session.
A test that needs a statement still running while something else happens makes it wait at a
``gate`` (tests/fix_gate.py) that it opens when it is done, never a race with a short sleep.
"""

from __future__ import annotations

import asyncio
import json
from datetime import datetime

import aiohttp
import pytest

from sessdb import admin
from tests.fix_app import engine_of
from tests.fix_gate import until as _until


async def call(client, op: str = "state", arg: str | None = None, arg2: str | None = None, *,  # type: ignore[no-untyped-def]
               sid: str | None = None, path: str = "/sess", cookies: dict | None = None, status: int = 200,
               **params: str) -> dict:
    query = {"op": op, **params}
    if arg is not None:
        query["arg"] = arg
    if arg2 is not None:
        query["arg2"] = arg2
    if sid is not None:
        query["sessionid"] = sid
    headers = {"Cookie": "; ".join(f"{k}={v}" for k, v in cookies.items())} if cookies else None
    resp = await client.get(path, params=query, headers=headers)
    text = await resp.text()
    assert resp.status == status, text
    return json.loads(text) if status == 200 else {"status": resp.status, "text": text}


def ts(text: str) -> datetime:
    return datetime.strptime(text, "%Y-%m-%d %H:%M:%S.%f")


# -- creating, reusing, serializing (scenarios 1-6) --------------------------------------------


async def test_create_and_reuse_keeps_the_connection_and_temp_table(client) -> None:  # type: ignore[no-untyped-def]
    first = await call(client, "set,table", "S1-create")
    assert first["sid"] == "S1-create" and first["t"] == 0
    second = await call(client, "inc", sid="S1-create")
    assert second["pid"] == first["pid"]
    assert second["sid"] == "S1-create" and second["t"] == 1


async def _behind_a_running_creator(client, gate, sid: str, op: str) -> tuple[dict, dict]:  # type: ignore[no-untyped-def]
    """A creates session ``sid`` and waits at the gate; B (``op`` in ``sid``) arrives while A
    still runs; then the gate opens. The answers of A and B."""
    a = asyncio.ensure_future(call(client, "set,table,gate", sid, gate=gate.name))
    session = await _until_registered(client, sid)
    await gate.until_waiting(a)
    b = asyncio.ensure_future(call(client, op, sid=sid))
    await _until(lambda: b.done() or len(session.queue) == 1)  # B arrived while A still runs
    await gate.open()
    return await a, await b


async def test_requests_in_a_session_are_serialized(client, gate) -> None:  # type: ignore[no-untyped-def]
    first, b = await _behind_a_running_creator(client, gate, "S2-serial", "inc")
    assert b["t"] == 1, "B ran after A and saw its temp table"
    assert ts(b["now"]) >= ts(first["now"])


async def test_registration_is_immediate(client, gate) -> None:  # type: ignore[no-untyped-def]
    _, b = await _behind_a_running_creator(client, gate, "S3-immediate", "state")
    assert b["sid"] == "S3-immediate", "B queued on the session instead of running sessionless"


async def test_sessionless_requests_are_isolated(make_client) -> None:  # type: ignore[no-untyped-def]
    client = await make_client(pool_size=1)
    first = await call(client, "table,var")
    assert first["t"] == 0 and first["v"] == 1
    second = await call(client, "state")
    assert second["pid"] == first["pid"], "the single pooled connection was reused"
    assert second["t"] is None and second["v"] == 0


async def test_unknown_id_runs_sessionless(client) -> None:  # type: ignore[no-untyped-def]
    answer = await call(client, "state", sid="S5-nobody")
    assert answer["sid"] == "" and answer["created"] == ""


async def test_queue_limit_answers_503_and_the_queued_complete(make_client, gate) -> None:  # type: ignore[no-untyped-def]
    client = await make_client(session_queue_limit=3)
    await call(client, "set,table", "S6-queue")
    busy = asyncio.ensure_future(call(client, "gate", sid="S6-queue", gate=gate.name))
    session = await _until_busy(client, "S6-queue")
    await gate.until_waiting(busy)
    waiters = [asyncio.ensure_future(call(client, "inc", sid="S6-queue")) for _ in range(3)]
    await _until(lambda: len(session.queue) == 3)
    extra = asyncio.ensure_future(client.get("/sess", params={"op": "inc", "sessionid": "S6-queue"}))
    await _until(lambda: extra.done() or len(session.queue) > 3)
    assert extra.done(), "a fourth waiter was refused, not queued"
    resp = extra.result()
    assert resp.status == 503
    assert resp.headers.get("Retry-After")
    await gate.open()
    await busy
    results = sorted([(await w)["t"] for w in waiters])
    assert results == [1, 2, 3]


# -- ids and errors (scenarios 7-12, 34) ------------------------------------------------------


async def test_taking_another_sessions_id_raises_sd939(client) -> None:  # type: ignore[no-untyped-def]
    await call(client, "set", "S7-taken")
    resp = await client.get("/sess", params={"op": "set", "arg": "S7-taken"})
    assert resp.status == 500
    assert "SD939" in await resp.text()


async def test_an_id_held_by_a_running_request_raises_sd939(client, gate) -> None:  # type: ignore[no-untyped-def]
    a = asyncio.ensure_future(call(client, "set,gate", "S7b-running", gate=gate.name))
    await _until_registered(client, "S7b-running")
    await gate.until_waiting(a)
    resp = await client.get("/sess", params={"op": "set", "arg": "S7b-running"})
    assert not a.done(), "the id's creator was still running"
    await gate.open()
    await a
    assert resp.status == 500 and "SD939" in await resp.text()


async def test_setting_the_same_id_is_a_no_op(client) -> None:  # type: ignore[no-untyped-def]
    first = await call(client, "set,table", "S8-same")
    again = await call(client, "set,inc", "S8-same", sid="S8-same")
    assert again["sid"] == "S8-same" and again["pid"] == first["pid"] and again["t"] == 1


@pytest.mark.parametrize("how", ["null", "empty"])
async def test_delete_by_null_or_empty(client, how: str) -> None:  # type: ignore[no-untyped-def]
    sid = f"S9-{how}"
    await call(client, "set", sid)
    await call(client, "set", None if how == "null" else "", sid=sid)
    after = await call(client, "state", sid=sid)
    assert after["sid"] == ""


async def test_delete_without_a_session_does_nothing(client) -> None:  # type: ignore[no-untyped-def]
    answer = await call(client, "set")
    assert answer["sid"] == ""


async def test_rename_keeps_state(client) -> None:  # type: ignore[no-untyped-def]
    await call(client, "set,table", "S12-old")
    await call(client, "set", "S12-new", sid="S12-old")
    renamed = await call(client, "inc", sid="S12-new")
    assert renamed["sid"] == "S12-new" and renamed["t"] == 1
    assert (await call(client, "state", sid="S12-old"))["sid"] == ""


async def test_id_length_limit(client) -> None:  # type: ignore[no-untyped-def]
    ok = "k" * 128
    assert (await call(client, "set", ok))["sid"] == ok
    resp = await client.get("/sess", params={"op": "set", "arg": "k" * 129})
    assert resp.status == 500 and "SD939" in await resp.text()


# -- pending sessions (scenarios 13-18) -------------------------------------------------------


async def test_pending_rename_queues_requests_for_the_new_id(client, gate) -> None:  # type: ignore[no-untyped-def]
    await call(client, "set,table", "S13-x")
    b = asyncio.ensure_future(call(client, "set,inc,gate", "S13-z", sid="S13-x", gate=gate.name))
    session = await _until_registered(client, "S13-z")
    await gate.until_waiting(b)
    c_task = asyncio.ensure_future(call(client, "inc", sid="S13-z"))
    await _until(lambda: c_task.done() or len(session.queue) == 1)  # C arrived while B still runs
    await gate.open()
    assert (await b)["t"] == 1
    c = await c_task
    assert c["sid"] == "S13-z" and c["t"] == 2


async def test_creator_changes_act_at_once(client, gate) -> None:  # type: ignore[no-untyped-def]
    a = asyncio.ensure_future(call(client, "set,table,set2,gate", "S14-x", "S14-z", gate=gate.name))
    session = await _until_registered(client, "S14-z")
    await gate.until_waiting(a)
    c_old_task = asyncio.ensure_future(call(client, "state", sid="S14-x"))
    await _until(lambda: c_old_task.done() or _queued(client) > 0)
    assert c_old_task.done(), "X is gone at once: C did not queue behind A"
    c_old = c_old_task.result()
    assert c_old["sid"] == "" and not a.done(), "X is gone at once: C ran sessionless while A still ran"
    c_new_task = asyncio.ensure_future(call(client, "state", sid="S14-z"))
    await _until(lambda: c_new_task.done() or len(session.queue) == 1)
    assert not c_new_task.done(), "a request for Z waited for A"
    await gate.open()
    c_new = await c_new_task
    assert c_new["sid"] == "S14-z"
    await a


async def test_pending_replaced_then_only_the_last_exists(client) -> None:  # type: ignore[no-untyped-def]
    await call(client, "set,table", "S15-x")
    await call(client, "set,set2", "S15-z1", "S15-z2", sid="S15-x")
    assert (await call(client, "state", sid="S15-z2"))["t"] == 0
    assert (await call(client, "state", sid="S15-z1"))["sid"] == ""
    assert (await call(client, "state", sid="S15-x"))["sid"] == ""


async def test_pending_reverted_keeps_the_original(client) -> None:  # type: ignore[no-untyped-def]
    await call(client, "set,table", "S16-x")
    await call(client, "set,set2", "S16-z", "S16-x", sid="S16-x")
    assert (await call(client, "inc", sid="S16-x"))["t"] == 1
    assert (await call(client, "state", sid="S16-z"))["sid"] == ""


async def test_waiters_of_a_deleted_session_run_sessionless(client, gate) -> None:  # type: ignore[no-untyped-def]
    owner = await call(client, "set,table", "S17-x")
    b = asyncio.ensure_future(call(client, "set,gate", sid="S17-x", gate=gate.name))
    session = await _until_busy(client, "S17-x")
    await gate.until_waiting(b)
    waiters = [asyncio.ensure_future(call(client, "state", sid="S17-x")) for _ in range(2)]
    await _until(lambda: len(session.queue) == 2)
    await gate.open()
    await b
    for waiter in waiters:
        answer = await waiter
        assert answer["sid"] == "" and answer["pid"] != owner["pid"]


async def test_rollback_discards_a_pending_change(client) -> None:  # type: ignore[no-untyped-def]
    await call(client, "set,table", "S18r-x")
    await call(client, "set,fail", "S18r-z", sid="S18r-x", status=500)
    assert (await call(client, "state", sid="S18r-x"))["t"] == 0
    assert (await call(client, "state", sid="S18r-z"))["sid"] == ""
    # the id was given up: another request may take it
    assert (await call(client, "set", "S18r-z"))["sid"] == "S18r-z"


async def test_cancelled_inheriting_request_discards_its_pending_session(client, svcconn) -> None:  # type: ignore[no-untyped-def]
    await call(client, "set,table", "S18-x")
    session = client.session
    task = asyncio.ensure_future(session.get(client.make_url("/sess"),
                                             params={"op": "set,inc,sleep", "arg": "S18-z", "secs": "30", "sessionid": "S18-x"}))
    await _until_registered(client, "S18-z")
    task.cancel()  # the client goes away mid-statement
    with pytest.raises(asyncio.CancelledError):
        await task
    survived = await call(client, "state", sid="S18-x")
    assert survived["sid"] == "S18-x" and survived["t"] == 0, "X survives with its state, the increment rolled back"
    assert (await call(client, "state", sid="S18-z"))["sid"] == ""


async def test_cancelled_creator_keeps_its_session(client) -> None:  # type: ignore[no-untyped-def]
    task = asyncio.ensure_future(client.session.get(client.make_url("/sess"),
                                                    params={"op": "set,sleep", "arg": "S18c-x", "secs": "30"}))
    await _until_registered(client, "S18c-x")
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert (await call(client, "state", sid="S18c-x"))["sid"] == "S18c-x"


# -- timeouts (scenarios 19-23, contract 5.7) ---------------------------------------------------


async def test_idle_session_expires_and_its_connection_closes(make_client, svcconn) -> None:  # type: ignore[no-untyped-def]
    client = await make_client(session_timeout=0.01, sweep_interval=0.1)  # 0.6 s
    first = await call(client, "set", "S19-x")
    await _until(lambda: engine_of(client).sessions.lookup("S19-x") is None)
    assert (await call(client, "state", sid="S19-x"))["sid"] == ""
    await _until(lambda: not _alive(svcconn, first["pid"]))  # the connection is closed
    listed = []
    conn_id = svcconn.execute("SELECT next_connection(NULL)").fetchone()[0]
    while conn_id is not None:
        listed.append(conn_id)
        conn_id = svcconn.execute("SELECT next_connection(%s)", [conn_id]).fetchone()[0]
    assert first["pid"] not in listed


async def test_busy_session_does_not_expire(make_client, gate) -> None:  # type: ignore[no-untyped-def]
    """A session whose request runs past the session's timeout is not expired under it.

    The session times out after 0.3 s idle; its request waits at the gate until a sweep has
    provably run past that: a session made later, idle, has been expired by it (one sweep
    checks every session against the same clock). No step depends on a request arriving
    within the 0.3 s: the creator leaves its session a minute, which the busy request shortens
    to 0.3 s only once it runs, and the follow-up is queued behind it, so that the session
    passes from one request to the next without idling.
    """
    client = await make_client(session_timeout=0.005, sweep_interval=0.05)  # 0.3 s
    sessions = engine_of(client).sessions
    created = await call(client, "set2,table,timeout", "1", "S20-x")  # released: its idle clock runs from here
    assert created["timeout"] == "1"
    busy = asyncio.ensure_future(call(client, "timeout,gate", "0.005", sid="S20-x", gate=gate.name))
    session = await _until_busy(client, "S20-x")
    await gate.until_waiting(busy)
    await _until(lambda: session.timeout_minutes == 0.005)  # the busy session's own timeout is 0.3 s now
    await call(client, "set", "S20-later")  # idle from now on, with the default 0.3 s
    await _until(lambda: sessions.lookup("S20-later") is None)  # a sweep ran past S20-x's timeout
    assert sessions.lookup("S20-x") is session and not session.closed, "the busy session was not expired"
    follow = asyncio.ensure_future(call(client, "inc", sid="S20-x"))
    await _until(lambda: follow.done() or len(session.queue) == 1)
    await gate.open()
    done = await busy
    assert done["sid"] == "S20-x" and done["t"] == 0, "the busy request ran in its session to the end"
    after = await follow
    assert after["sid"] == "S20-x" and after["t"] == 1
    assert ts(after["last"]) >= ts(done["now"])


async def test_session_timeout_option_overrides_per_session(make_client) -> None:  # type: ignore[no-untyped-def]
    client = await make_client(session_timeout=30, sweep_interval=0.1)
    await call(client, "set", "S21-short")
    await call(client, "set", "S21-long")
    short = await call(client, "timeout", "0.01", sid="S21-short")
    assert short["timeout"] == "0.01"
    await _until(lambda: engine_of(client).sessions.lookup("S21-short") is None)
    assert (await call(client, "state", sid="S21-long"))["timeout"] == "30"


@pytest.mark.parametrize("bad", ["0", "525601", "-1", "abc"])
async def test_session_timeout_range(client, bad: str) -> None:  # type: ignore[no-untyped-def]
    await call(client, "set", f"S23-{bad}")
    resp = await client.get("/sess", params={"op": "timeout", "arg": bad, "sessionid": f"S23-{bad}"})
    assert resp.status == 500 and "SD939" in await resp.text()


@pytest.mark.parametrize("good", ["1", "525600"])
async def test_session_timeout_bounds_accepted(client, good: str) -> None:  # type: ignore[no-untyped-def]
    await call(client, "set", f"S23ok-{good}")
    assert (await call(client, "timeout", good, sid=f"S23ok-{good}"))["timeout"] == good


# -- admin drop and killed backends (scenarios 24-25, contract 5.6) ----------------------------


async def test_drop_idle_session(client, svcconn) -> None:  # type: ignore[no-untyped-def]
    first = await call(client, "set", "S24-x")
    svcconn.execute("SELECT sessdb.drop_connection(%s)", [first["pid"]])
    await _until(lambda: engine_of(client).sessions.lookup("S24-x") is None)
    assert (await call(client, "state", sid="S24-x"))["sid"] == ""
    await _until(lambda: not _alive(svcconn, first["pid"]))


async def test_drop_busy_session_cancels_it_and_its_waiters(client, svcconn) -> None:  # type: ignore[no-untyped-def]
    first = await call(client, "set,table", "S25-x")
    running = asyncio.ensure_future(client.get("/sess", params={"op": "sleep", "arg": "30", "sessionid": "S25-x"}))
    session = await _until_busy(client, "S25-x")
    waiter = asyncio.ensure_future(client.get("/sess", params={"op": "inc", "sessionid": "S25-x"}))
    await _until(lambda: len(session.queue) == 1)
    svcconn.execute("SELECT sessdb.drop_connection(%s)", [first["pid"]])
    assert (await running).status == 503, "the 30 s statement was cancelled"
    assert (await waiter).status == 503
    await _until(lambda: not _alive(svcconn, first["pid"]))  # and the connection closed
    assert (await call(client, "state", sid="S25-x"))["sid"] == ""


async def test_killed_session_backend_is_the_same_fault(client, svcconn) -> None:  # type: ignore[no-untyped-def]
    first = await call(client, "set", "S25k-x")
    svcconn.execute("SELECT pg_terminate_backend(%s)", [first["pid"]])
    await _until(lambda: engine_of(client).sessions.lookup("S25k-x") is None)
    assert (await call(client, "state", sid="S25k-x"))["sid"] == ""
    assert (await call(client, "set", "S25k-x"))["sid"] == "S25k-x", "the engine serves on"


async def test_killed_busy_session_answers_503(client, svcconn) -> None:  # type: ignore[no-untyped-def]
    first = await call(client, "set", "S25kb-x")
    running = asyncio.ensure_future(client.get("/sess", params={"op": "sleep", "arg": "30", "sessionid": "S25kb-x"}))
    await _until_busy(client, "S25kb-x")
    svcconn.execute("SELECT pg_terminate_backend(%s)", [first["pid"]])
    assert (await running).status == 503
    assert (await call(client, "state", sid="S25kb-x"))["sid"] == ""


async def test_drop_connection_statement_and_cli(client, dsn: str) -> None:  # type: ignore[no-untyped-def]
    from tests.fix_server import run_cli

    first = await call(client, "set", "S24c-x")
    listed = run_cli("sessions", "--json", "--dsn", dsn)
    assert any(row["session_id"] == "S24c-x" for row in json.loads(listed.stdout))
    proc = await asyncio.to_thread(run_cli, "sql", "--dsn", dsn, f"DROP CONNECTION {first['pid']}")
    assert proc.returncode == 0, proc.stderr
    await _until(lambda: engine_of(client).sessions.lookup("S24c-x") is None)
    second = await call(client, "set", "S24c-y")
    proc = await asyncio.to_thread(run_cli, "drop", str(second["pid"]), "--dsn", dsn)
    assert proc.returncode == 0, proc.stderr
    await _until(lambda: engine_of(client).sessions.lookup("S24c-y") is None)
    bad = run_cli("drop", "1", "--dsn", dsn)
    assert bad.returncode == 1 and "does not exist" in bad.stderr


# -- presenting ids (scenarios 26-30, contract 5.1) ---------------------------------------------


async def test_another_client_address_gets_403(client) -> None:  # type: ignore[no-untyped-def]
    await call(client, "set", "S26-x")
    connector = aiohttp.TCPConnector(local_addr=("127.0.0.2", 0))
    async with aiohttp.ClientSession(connector=connector) as other:
        async with other.get(client.make_url("/sess"), params={"sessionid": "S26-x"}) as resp:
            assert resp.status == 403


async def test_bind_ip_off_lets_another_address_in(make_client) -> None:  # type: ignore[no-untyped-def]
    client = await make_client(session_bind_ip=False)
    await call(client, "set", "S26off-x")
    connector = aiohttp.TCPConnector(local_addr=("127.0.0.2", 0))
    async with aiohttp.ClientSession(connector=connector) as other:
        async with other.get(client.make_url("/sess"), params={"sessionid": "S26off-x"}) as resp:
            assert json.loads(await resp.text())["sid"] == "S26off-x"


async def test_url_beats_cookie(client) -> None:  # type: ignore[no-untyped-def]
    await call(client, "set", "S27-x")
    await call(client, "set", "S27-y")
    answer = await call(client, "state", sid="S27-x", cookies={"sessionid": "S27-y"})
    assert answer["sid"] == "S27-x"


async def test_cookie_only(client) -> None:  # type: ignore[no-untyped-def]
    await call(client, "set", "S28-x")
    assert (await call(client, "state", cookies={"SessionId": "S28-x"}))["sid"] == "S28-x"


async def test_post_form_id(client) -> None:  # type: ignore[no-untyped-def]
    await call(client, "set", "S29-x")
    resp = await client.post("/sess", data={"sessionid": "S29-x", "op": "state"})
    assert json.loads(await resp.text())["sid"] == "S29-x"


@pytest.mark.parametrize("name", ["SESSIONID", "SessionId", "sessionID"])
async def test_variable_name_case(client, name: str) -> None:  # type: ignore[no-untyped-def]
    await call(client, "set", f"S30-{name}")
    resp = await client.get("/sess", params={name: f"S30-{name}"})
    assert json.loads(await resp.text())["sid"] == f"S30-{name}"


async def test_cookieless_url_segment(client) -> None:  # type: ignore[no-untyped-def]
    await call(client, "set,table", "S30u-x")
    answer = await call(client, "inc", path="/(S(S30u-x))/sess")
    assert answer["sid"] == "S30u-x" and answer["t"] == 1


# -- properties, listing, restart (scenarios 31-33) --------------------------------------------


async def test_properties_lifecycle(client) -> None:  # type: ignore[no-untyped-def]
    creator = await call(client, "set", "S31-x")
    assert creator["created"] != "" and creator["last"] == ""
    follow = await call(client, "state", sid="S31-x")
    assert follow["created"] == creator["created"] or abs((ts(follow["created"]) - ts(creator["created"])).total_seconds()) < 0.1
    gap = (ts(follow["last"]) - ts(creator["now"])).total_seconds()
    assert 0 <= gap < 1, "SessionLastTime is about the creator's end"


async def test_other_connections_see_each_release_a_new_timeout_and_a_new_address(make_client, svcconn) -> None:  # type: ignore[no-untyped-def]
    # Requests back to back, well within the second in which the engine leaves the session's
    # mirror row alone unless something but the release time changed.
    client = await make_client(session_bind_ip=False)
    pid = (await call(client, "set", "S31o-x"))["pid"]

    def prop(name: str) -> str:
        return svcconn.execute("SELECT connection_property(%s, %s)", [name, pid]).fetchone()[0]  # type: ignore[index,no-any-return]

    for _ in range(3):
        done = await call(client, "state", sid="S31o-x")
        assert ts(prop("SessionLastTime")) >= ts(done["now"]), "the last release, not an earlier one"
        listed = {row["session_id"]: row for row in admin.list_sessions(engine_of(client).dsn)}
        last_used = svcconn.execute("SELECT sessdb._format_time(%s)", [listed["S31o-x"]["last_used"]]).fetchone()[0]
        assert ts(last_used) >= ts(done["now"])
    await call(client, "timeout", "7", sid="S31o-x")
    assert prop("http_session_timeout") == "7"
    connector = aiohttp.TCPConnector(local_addr=("127.0.0.2", 0))
    async with aiohttp.ClientSession(connector=connector) as other:
        async with other.get(client.make_url("/sess"), params={"sessionid": "S31o-x"}) as resp:
            body = await resp.text()
            assert json.loads(body).get("sid") == "S31o-x", (resp.status, body)
    address = svcconn.execute("SELECT client_addr FROM sessdb.http_sessions WHERE conn_id = %s", [pid]).fetchone()
    assert address == ("127.0.0.2",)


async def test_other_connections_see_a_busy_sessions_last_release(client, svcconn) -> None:  # type: ignore[no-untyped-def]
    pid = (await call(client, "set", "S31b-x"))["pid"]
    await call(client, "state", sid="S31b-x")  # the session's row was written just now
    slow = await call(client, "sleep", "1.2", sid="S31b-x")  # it ends with the row over a second old
    busy = asyncio.ensure_future(call(client, "sleep", "2", sid="S31b-x"))
    await _until_busy(client, "S31b-x")
    seen = svcconn.execute("SELECT connection_property('SessionLastTime', %s)", [pid]).fetchone()[0]
    assert ts(seen) >= ts(slow["now"]), "the slow request's release, not the one before"
    await busy


async def test_other_connections_see_the_engines_timeout_after_a_rolled_back_change(client, svcconn) -> None:  # type: ignore[no-untyped-def]
    pid = (await call(client, "set", "S31t-x"))["pid"]
    await call(client, "state", sid="S31t-x")
    await call(client, "timeout,fail", "9", sid="S31t-x", status=500)  # the row's change rolls back
    own = await call(client, "state", sid="S31t-x")  # at once, well within a second
    seen = svcconn.execute("SELECT connection_property('http_session_timeout', %s)", [pid]).fetchone()[0]
    assert seen == own["timeout"]


async def test_seed_session_tracking_script_lists_exactly_the_sessions(client, svcconn, gate) -> None:  # type: ignore[no-untyped-def]
    ids = ["S32-a", "S32-b", "S32-c"]
    for sid in ids:
        await call(client, "set", sid)
    in_flight = asyncio.ensure_future(call(client, "gate", gate=gate.name))  # a sessionless request runs
    await gate.until_waiting(in_flight)
    notices: list[str] = []
    svcconn.add_notice_handler(lambda d: notices.append(d.message_primary))
    svcconn.execute(SEED_SCRIPT)
    await gate.open()
    await in_flight
    listed = [n.split("SessionID = ")[1] for n in notices if "SessionID = " in n]
    assert sorted(listed) == ids
    assert len([n for n in notices if n.startswith("conn_id = ")]) > len(ids)


SEED_SCRIPT = """
DO $$
DECLARE
    conn_id integer;
    the_sessionID text;
BEGIN
    SELECT next_connection(NULL, NULL) INTO conn_id;
    LOOP
        IF conn_id IS NULL THEN EXIT; END IF;
        SELECT connection_property('SessionID', conn_id) INTO the_sessionID;
        IF the_sessionID != '' THEN
            RAISE NOTICE 'conn_id = %, SessionID = %', conn_id, the_sessionID;
        ELSE
            RAISE NOTICE 'conn_id = %', conn_id;
        END IF;
        SELECT next_connection(conn_id, NULL) INTO conn_id;
    END LOOP;
END $$;
"""


async def test_sessions_are_lost_on_restart(make_client, dsn: str) -> None:  # type: ignore[no-untyped-def]
    first = await make_client()
    await call(first, "set", "S33-x")
    await first.close()
    second = await make_client()
    assert (await call(second, "state", sid="S33-x"))["sid"] == ""


# -- required sessions, cookies, limits (contract 5.8, 2) --------------------------------------


async def test_required_session_is_made_before_the_statement(client) -> None:  # type: ignore[no-untyped-def]
    resp = await client.get("/sess_req", params={"op": "table"})
    answer = json.loads(await resp.text())
    cookie = resp.cookies["sessionid"]
    assert answer["sid"] == cookie.value and len(cookie.value) >= 22
    assert cookie["httponly"] and cookie["path"] == "/" and cookie["samesite"] == "Lax"
    again = await call(client, "inc", path="/sess_req", cookies={"sessionid": cookie.value})
    assert again["sid"] == cookie.value and again["t"] == 1


@pytest.mark.parametrize(("method", "status"), [("GET", 302), ("POST", 307)])
async def test_required_url_redirects_into_the_session(client, method: str, status: int) -> None:  # type: ignore[no-untyped-def]
    resp = await client.request(method, "/sess_url?op=table", allow_redirects=False)
    assert resp.status == status
    location = resp.headers["Location"]
    assert location.startswith("/(S(") and location.endswith("/sess_url?op=table")
    sid = location[4:location.index("))")]
    follow = await client.request(method, location)
    answer = json.loads(await follow.text())
    assert answer["sid"] == sid and answer["t"] == 0


async def test_session_cookie_auto(make_client) -> None:  # type: ignore[no-untyped-def]
    client = await make_client(session_cookie="auto")
    resp = await client.get("/sess", params={"op": "set", "arg": "S-auto"})
    cookie = resp.cookies["sessionid"]
    assert cookie.value == "S-auto"
    assert cookie["path"] == "/" and cookie["httponly"] and cookie["samesite"] == "Lax"
    resp = await client.get("/sess", params={"op": "set", "sessionid": "S-auto"})
    assert resp.cookies["sessionid"].value == "" and resp.cookies["sessionid"]["max-age"] == "0"


async def test_max_sessions_is_a_clear_sql_error(make_client) -> None:  # type: ignore[no-untyped-def]
    client = await make_client(max_sessions=2)
    await call(client, "set", "S-max1")
    await call(client, "set", "S-max2")
    resp = await client.get("/sess", params={"op": "set", "arg": "S-max3"})
    assert resp.status == 500
    text = await resp.text()
    assert "SD941" in text and "too many HTTP sessions" in text
    await call(client, "set", None, sid="S-max1")
    assert (await call(client, "set", "S-max3"))["sid"] == "S-max3"


async def test_new_session_id_has_enough_randomness(svcconn) -> None:  # type: ignore[no-untyped-def]
    ids = {svcconn.execute("SELECT sessdb.new_session_id()").fetchone()[0] for _ in range(50)}
    assert len(ids) == 50
    for sid in ids:
        assert len(sid) >= 22 and all(c.isalnum() or c in "-_" for c in sid)


async def test_waiting_request_whose_client_leaves_leaves_the_queue(client, gate) -> None:  # type: ignore[no-untyped-def]
    await call(client, "set,table", "S-leave")
    busy = asyncio.ensure_future(call(client, "gate", sid="S-leave", gate=gate.name))
    session = await _until_busy(client, "S-leave")
    await gate.until_waiting(busy)
    gone = asyncio.ensure_future(client.session.get(client.make_url("/sess"), params={"op": "inc", "sessionid": "S-leave"}))
    await _until(lambda: len(session.queue) == 1)
    gone.cancel()
    await _until(lambda: len(session.queue) == 0)
    assert not busy.done(), "the session was still busy when the waiter left"
    await gate.open()
    await busy
    assert (await call(client, "state", sid="S-leave"))["t"] == 0, "the abandoned request never ran"


async def test_connection_variables(client) -> None:  # type: ignore[no-untyped-def]
    await call(client, "set,var", "S-var")
    assert (await call(client, "state", sid="S-var"))["v"] == 1


# -- helpers ----------------------------------------------------------------------------------


async def _until_registered(client, sid: str):  # type: ignore[no-untyped-def]
    await _until(lambda: engine_of(client).sessions.lookup(sid) is not None)
    return engine_of(client).sessions.lookup(sid)


async def _until_busy(client, sid: str):  # type: ignore[no-untyped-def]
    await _until(lambda: (s := engine_of(client).sessions.lookup(sid)) is not None and s.busy)
    return engine_of(client).sessions.lookup(sid)


def _queued(client) -> int:  # type: ignore[no-untyped-def]
    """How many requests wait in the queues of the engine's sessions."""
    return sum(len(s.queue) for s in engine_of(client).sessions)


def _alive(conn, pid: int) -> bool:  # type: ignore[no-untyped-def]
    return conn.execute("SELECT count(*) FROM pg_stat_activity WHERE pid = %s", [pid]).fetchone()[0] == 1


def _listed(conn, pid: int) -> bool:  # type: ignore[no-untyped-def]
    return conn.execute("SELECT connection_property('SessionID', %s)", [pid]).fetchone()[0] not in ("", None)


async def test_forged_session_events_cannot_take_another_sessions_id(client, svcconn) -> None:  # type: ignore[no-untyped-def]
    victim = await call(client, "set,table", "S-victim")
    svcconn.execute("""
        CREATE OR REPLACE FUNCTION public.forge(target text) RETURNS text LANGUAGE plpgsql AS $$
        BEGIN
            RAISE NOTICE USING MESSAGE = 'sessdb-event',
                DETAIL = json_build_object('kind', 'session', 'op', 'set', 'id', target)::text;
            RETURN 'forged';
        END $$""")
    svcconn.execute("SELECT sessdb.create_service(name => 'forge', type => 'RAW', "
                    "statement => 'SELECT forge(:target)', replace => true)")
    await _until(lambda: "forge" in engine_of(client).catalog.services)
    resp = await client.get("/forge", params={"target": "S-victim"})
    assert await resp.text() == "forged"
    after = await call(client, "inc", sid="S-victim")
    assert after["pid"] == victim["pid"] and after["t"] == 1, "the victim keeps its session"


async def test_a_failing_creator_keeps_the_session_it_made(client) -> None:  # type: ignore[no-untyped-def]
    await call(client, "set,table,fail", "S-failcreator", status=500)
    kept = await call(client, "state", sid="S-failcreator")
    assert kept["sid"] == "S-failcreator", "a creator's change acts at once, even when its statement fails"
    assert kept["t"] is None, "its temp table went with the rolled-back transaction"


async def test_default_timeout_option_affects_new_sessions_only(client, dsn: str) -> None:  # type: ignore[no-untyped-def]
    from tests.fix_server import run_cli

    await call(client, "set", "S22-old")
    engine = engine_of(client)
    try:
        proc = await asyncio.to_thread(run_cli, "sql", "--dsn", dsn, "SET OPTION PUBLIC.http_session_timeout = 1")
        assert proc.returncode == 0, proc.stderr
        await _until(lambda: engine.default_timeout() == 1.0)
        await call(client, "set", "S22-new")
        assert (await call(client, "state", sid="S22-old"))["timeout"] == "30"
        assert (await call(client, "state", sid="S22-new"))["timeout"] == "1"
        for bad in ("0", "525601"):
            proc = await asyncio.to_thread(run_cli, "sql", "--dsn", dsn, f"SET OPTION PUBLIC.http_session_timeout = {bad}")
            assert proc.returncode == 1 and "SD201" in proc.stderr
        for good in ("525600", "1"):
            proc = await asyncio.to_thread(run_cli, "sql", "--dsn", dsn, f"SET OPTION PUBLIC.http_session_timeout = {good}")
            assert proc.returncode == 0, proc.stderr
    finally:
        await asyncio.to_thread(run_cli, "sql", "--dsn", dsn, "SET OPTION PUBLIC.http_session_timeout = NULL")
    await _until(lambda: engine.default_timeout() == 30.0)
