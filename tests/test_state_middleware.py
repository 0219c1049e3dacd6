"""The aiohttp middleware (``sessdb.aspnet_session``): cookies, cookieless redirects, read-only
handlers, one writer at a time, abandon, errors, lock breaking, and two processes on one database."""

from __future__ import annotations

import asyncio
import json
import re
import statistics
import sys
from collections.abc import AsyncIterator, Callable

import aiohttp
import psycopg
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from sessdb.aspnet_session import DISABLED, READ_ONLY, AspNetSessionMiddleware, create_session_id, session_state
from sessdb.statestore import SessionStateStore
from tests.fix_server import free_port
from tests.state_helpers import HANG_GUARD, row, travel

COOKIE = re.compile(r"ASP\.NET_SessionId=([a-z0-5]{24}); path=/; HttpOnly; SameSite=Lax")


class Gates:
    """Events that handlers wait on, so a test decides when a request may finish."""

    def __init__(self) -> None:
        self.entered: dict[str, asyncio.Event] = {}
        self.release: dict[str, asyncio.Event] = {}

    def pair(self, name: str) -> tuple[asyncio.Event, asyncio.Event]:
        return self.entered.setdefault(name, asyncio.Event()), self.release.setdefault(name, asyncio.Event())


def make_app(store: SessionStateStore, gates: Gates, **options: object) -> web.Application:
    async def count(request: web.Request) -> web.Response:
        session = request.session  # type: ignore[attr-defined]
        session["n"] = session.get("n", 0) + 1
        return web.json_response({"n": session["n"], "id": session.session_id, "new": session.is_new})

    async def hold(request: web.Request) -> web.Response:
        session = request.session  # type: ignore[attr-defined]
        entered, release = gates.pair(request.query["gate"])
        entered.set()
        await release.wait()
        session["held"] = request.query["gate"]
        return web.json_response({"held": request.query["gate"]})

    @session_state(READ_ONLY)
    async def read(request: web.Request) -> web.Response:
        session = request.session  # type: ignore[attr-defined]
        if "gate" in request.query:
            entered, release = gates.pair(request.query["gate"])
            entered.set()
            await release.wait()
        if "write" in request.query:
            session["x"] = 1
        return web.json_response({"n": session.get("n"), "held": session.get("held"), "new": session.is_new})

    @session_state(DISABLED)
    async def free(request: web.Request) -> web.Response:
        return web.json_response({"session": "session" in request.__dict__})

    async def abandon(request: web.Request) -> web.Response:
        request.session.abandon()  # type: ignore[attr-defined]
        return web.json_response({})

    async def boom(request: web.Request) -> web.Response:
        request.session["n"] = 1000  # type: ignore[attr-defined]
        raise RuntimeError("handler failed")

    async def login(request: web.Request) -> web.Response:
        request.session["user"] = "ann"  # type: ignore[attr-defined]
        raise web.HTTPFound("/count")

    async def post(request: web.Request) -> web.Response:
        request.session["posted"] = await request.text()  # type: ignore[attr-defined]
        return web.json_response({"posted": request.session["posted"]})  # type: ignore[attr-defined]

    async def peek(request: web.Request) -> web.Response:
        session = request.session  # type: ignore[attr-defined]
        return web.json_response({"n": session.get("n"), "new": session.is_new})

    middleware = AspNetSessionMiddleware(store, **options)  # type: ignore[arg-type]
    app = web.Application(middlewares=[middleware])
    for path, handler in (("/count", count), ("/hold", hold), ("/read", read), ("/free", free),
                          ("/abandon", abandon), ("/boom", boom), ("/login", login), ("/peek", peek)):
        app.router.add_get(path, handler)
    app.router.add_post("/post", post)
    return app


@pytest.fixture(scope="module")
async def store(dsn: str) -> AsyncIterator[SessionStateStore]:
    async with SessionStateStore(dsn, application="/middleware-tests") as s:
        yield s


@pytest.fixture
async def make_client(store: SessionStateStore) -> AsyncIterator[Callable]:
    opened: list[TestClient] = []

    async def factory(gates: Gates | None = None, **options: object) -> TestClient:
        client = TestClient(TestServer(make_app(store, gates or Gates(), **options), host="127.0.0.1"),
                            cookie_jar=aiohttp.DummyCookieJar())
        await client.start_server()
        opened.append(client)
        return client

    yield factory
    for client in opened:
        await client.close()


def cookie_of(resp: aiohttp.ClientResponse) -> str | None:
    values = resp.headers.getall("Set-Cookie", [])
    assert len(values) <= 1
    if not values:
        return None
    match = COOKIE.fullmatch(values[0])
    assert match, values[0]
    return match.group(1)


async def test_cookie_session_round_trip(make_client: Callable, store: SessionStateStore, svcconn: psycopg.Connection) -> None:
    client = await make_client()
    resp = await client.get("/count")
    sid = cookie_of(resp)
    assert resp.status == 200 and sid is not None
    assert await resp.json() == {"n": 1, "id": sid, "new": True}
    resp = await client.get("/count", headers={"Cookie": f"ASP.NET_SessionId={sid}"})
    assert await resp.json() == {"n": 2, "id": sid, "new": False} and cookie_of(resp) is None
    stored = row(svcconn, store.key(sid))
    assert stored is not None and not stored["locked"] and json.loads(bytes(stored["data"])) == {"n": 2}  # type: ignore[index]


async def test_untouched_new_session_is_not_stored(make_client: Callable) -> None:
    client = await make_client()
    for path in ("/read", "/free"):
        resp = await client.get(path)
        assert resp.status == 200 and cookie_of(resp) is None


async def test_unknown_cookie_id_starts_a_new_session_under_that_id(make_client: Callable, store: SessionStateStore) -> None:
    client = await make_client()
    sid = create_session_id()
    resp = await client.get("/count", headers={"Cookie": f"ASP.NET_SessionId={sid}"})
    assert await resp.json() == {"n": 1, "id": sid, "new": True}
    assert (await store.get_item(sid)).item.items == {"n": 1}  # type: ignore[union-attr]
    resp = await client.get("/count", headers={"Cookie": "ASP.NET_SessionId=not-an-id"})
    assert (await resp.json())["id"] != "not-an-id" and cookie_of(resp) is not None


async def test_one_writer_at_a_time_and_prompt_hand_over(make_client: Callable) -> None:
    gates = Gates()
    client = await make_client(gates)
    sid = cookie_of(await client.get("/count"))
    cookie = {"Cookie": f"ASP.NET_SessionId={sid}"}
    first = asyncio.ensure_future(client.get("/hold?gate=a", headers=cookie))
    await gates.pair("a")[0].wait()
    second = asyncio.ensure_future(client.get("/hold?gate=b", headers=cookie))
    reader = asyncio.ensure_future(client.get("/read", headers=cookie))  # read-only waits for the writer too
    done, _ = await asyncio.wait([second, reader], timeout=0.3)
    assert not done and not gates.pair("b")[0].is_set()
    gates.pair("a")[1].set()
    # Woken by the release, not by a timer: a missed wake-up would wait out the lock's
    # execution timeout (110 s), far past this guard.
    await asyncio.wait_for(gates.pair("b")[0].wait(), HANG_GUARD)
    gates.pair("b")[1].set()
    assert (await (await first).json()) == {"held": "a"} and (await (await second).json()) == {"held": "b"}
    assert (await (await reader).json())["n"] == 1


async def test_read_only_handlers_take_no_lock_and_may_not_write(make_client: Callable) -> None:
    gates = Gates()
    client = await make_client(gates)
    sid = cookie_of(await client.get("/count"))
    cookie = {"Cookie": f"ASP.NET_SessionId={sid}"}
    slow_reader = asyncio.ensure_future(client.get("/read?gate=r", headers=cookie))
    await gates.pair("r")[0].wait()
    assert (await (await client.get("/count", headers=cookie)).json())["n"] == 2  # a writer gets in at once
    gates.pair("r")[1].set()
    assert (await (await slow_reader).json())["n"] == 1
    assert (await client.get("/read?write=1", headers=cookie)).status == 500
    assert (await (await client.get("/read", headers=cookie)).json())["n"] == 2


async def test_abandon_removes_the_session(make_client: Callable, store: SessionStateStore) -> None:
    client = await make_client()
    sid = cookie_of(await client.get("/count"))
    cookie = {"Cookie": f"ASP.NET_SessionId={sid}"}
    assert (await client.get("/abandon", headers=cookie)).status == 200
    assert (await store.get_item(sid)).item is None  # type: ignore[arg-type]
    assert (await (await client.get("/count", headers=cookie)).json())["n"] == 1


async def test_handler_error_releases_without_writing(make_client: Callable, store: SessionStateStore) -> None:
    client = await make_client()
    sid = cookie_of(await client.get("/count"))
    cookie = {"Cookie": f"ASP.NET_SessionId={sid}"}
    assert (await client.get("/boom", headers=cookie)).status == 500
    result = await store.get_item(sid)  # type: ignore[arg-type]
    assert not result.locked and result.item.items == {"n": 1}  # type: ignore[union-attr]
    resp = await client.get("/login", headers=cookie, allow_redirects=False)  # a redirect is no error
    assert resp.status == 302
    assert (await store.get_item(sid)).item.items == {"n": 1, "user": "ann"}  # type: ignore[arg-type,union-attr]
    resp = await client.get("/login", allow_redirects=False)  # new session: the cookie rides on the redirect
    assert resp.status == 302 and cookie_of(resp) is not None


async def test_stale_lock_is_broken_after_the_execution_timeout(make_client: Callable, store: SessionStateStore,
                                                                svcconn: psycopg.Connection) -> None:
    gates = Gates()
    client = await make_client(gates)
    sid = cookie_of(await client.get("/count"))
    cookie = {"Cookie": f"ASP.NET_SessionId={sid}"}
    stuck = asyncio.ensure_future(client.get("/hold?gate=stuck", headers=cookie))
    await gates.pair("stuck")[0].wait()
    travel(svcconn, store.key(sid), 111)  # the holder has run past executionTimeout (110 s)
    resp = await client.get("/count", headers=cookie)
    assert (await resp.json())["n"] == 2
    gates.pair("stuck")[1].set()
    assert (await stuck).status == 200
    item = (await store.get_item(sid)).item  # type: ignore[arg-type]
    assert item is not None and "held" not in item.items  # the late holder's write was refused


async def test_queue_limit_per_session(make_client: Callable) -> None:
    gates = Gates()
    client = await make_client(gates, queue_limit=1)
    sid = cookie_of(await client.get("/count"))
    cookie = {"Cookie": f"ASP.NET_SessionId={sid}"}
    holder = asyncio.ensure_future(client.get("/hold?gate=q", headers=cookie))
    await gates.pair("q")[0].wait()
    # Two more arrive while it holds the lock: one may wait, the other is one too many.
    extra = [asyncio.ensure_future(client.get("/count", headers=cookie)) for _ in range(2)]
    refused = await next(asyncio.as_completed(extra))
    assert refused.status == 503 and refused.headers["Retry-After"] == "1"
    gates.pair("q")[1].set()
    assert (await holder).status == 200
    statuses = sorted([(await f).status for f in extra])
    assert statuses == [200, 503]


async def test_cookieless_redirect_creates_the_item_first(make_client: Callable, store: SessionStateStore,
                                                          svcconn: psycopg.Connection) -> None:
    client = await make_client(cookieless=True)
    resp = await client.get("/count?a=1", allow_redirects=False)
    assert resp.status == 302 and cookie_of(resp) is None
    location = resp.headers["Location"]
    match = re.fullmatch(r"/\(S\(([a-z0-5]{24})\)\)/count\?a=1", location)
    assert match, location
    sid = match.group(1)
    stored = row(svcconn, store.key(sid))
    assert stored is not None and stored["flags"] & 1 == 1  # uninitialized, before the client follows
    resp = await client.get(location)
    assert await resp.json() == {"n": 1, "id": sid, "new": True}
    assert (await (await client.get(f"/(S({sid}))/count")).json())["n"] == 2
    assert (await (await client.get(f"/(S({sid}))/read")).json())["n"] == 2
    resp = await client.post("/post", data="body", allow_redirects=False)
    assert resp.status == 307 and re.fullmatch(r"/\(S\([a-z0-5]{24}\)\)/post", resp.headers["Location"])
    resp = await client.post(resp.headers["Location"], data="body")
    assert await resp.json() == {"posted": "body"}
    assert (await client.get("/free", allow_redirects=False)).status == 200  # no session needed: no redirect
    expired = create_session_id()
    resp = await client.get(f"/(S({expired}))/count", allow_redirects=False)
    assert resp.status == 302 and expired not in resp.headers["Location"]  # regenerateExpiredSessionId


@pytest.mark.slow
async def test_two_processes_share_sessions_and_never_interleave(dsn: str, tmp_path) -> None:  # type: ignore[no-untyped-def]
    ports = [free_port(), free_port()]
    procs = [await asyncio.create_subprocess_exec(sys.executable, "-m", "tests.state_app", "--dsn", dsn,
                                                  "--port", str(p), stdout=asyncio.subprocess.PIPE)
             for p in ports]
    try:
        for proc in procs:
            assert (await asyncio.wait_for(proc.stdout.readline(), 30)).strip() == b"ready"  # type: ignore[union-attr]
        async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as http:
            async with http.get(f"http://127.0.0.1:{ports[0]}/work") as resp:
                sid = cookie_of(resp)
            cookie = {"Cookie": f"ASP.NET_SessionId={sid}"}

            async def work(i: int) -> dict:
                async with http.get(f"http://127.0.0.1:{ports[i % 2]}/work?hold=0.05", headers=cookie) as r:
                    assert r.status == 200
                    return await r.json()  # type: ignore[no-any-return]

            # A missed wake-up would wait out the execution timeout (110 s), far past this guard.
            results = await asyncio.wait_for(asyncio.gather(*(work(i) for i in range(16))), HANG_GUARD * 3)
    finally:
        for proc in procs:
            proc.kill()
            await proc.wait()
    results.sort(key=lambda r: r["start"])
    assert {r["pid"] for r in results} == {p.pid for p in procs}
    assert sorted(r["n"] for r in results) == list(range(2, 18))  # no lost update: strictly one at a time
    gaps = [b["start"] - a["end"] for a, b in zip(results, results[1:])]
    assert min(gaps) >= 0, gaps  # never interleaved
    print(f"\nhand-over from one process's release to the next start: median {statistics.median(gaps) * 1000:.1f} ms,"
          f" max {max(gaps) * 1000:.1f} ms")  # information only: speed is scripts/bench's business


async def test_an_unknown_id_that_nobody_writes_to_leaves_nothing_stored(make_client: Callable,
                                                                          store: SessionStateStore) -> None:
    client = await make_client()
    sid = create_session_id()
    resp = await client.get("/peek", headers={"Cookie": f"ASP.NET_SessionId={sid}"})
    assert await resp.json() == {"n": None, "new": True}
    assert (await store.get_item(sid)).item is None, "a new, untouched session is not stored (3.4)"
    resp = await client.get("/peek", headers={"Cookie": f"ASP.NET_SessionId={sid}"})
    assert await resp.json() == {"n": None, "new": True}
