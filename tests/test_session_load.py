"""Load: 200 concurrent HTTP sessions of temp-table counter updates, with clients vanishing.

Each session is created by a request that picks its own id and creates two temp tables: the
counter ``ctr`` and ``applied``, a log of ``(request number, counter value)`` written in the
same transaction as each increment. Later requests increment the counter, alone or in small
concurrent bursts that queue in the session. Some requests are sent on a raw socket that is
aborted before the answer:

* ``doomed``: the statement sleeps 5 s *before* its update and the client leaves after at most
  0.15 s. The engine must cancel the statement, so the increment never commits;
* ``racy``: the statement sleeps 0 to 30 ms and the client leaves after 0 to 40 ms, so the
  cancel may come before or after the commit. Either is right; ``applied`` tells which.

The counter is then exact: ``n`` equals the number of rows in ``applied``, which are exactly
the requests answered 200 plus the racy aborts that committed; no doomed request ever
commits; every 200 answer carried its own request number and the counter value that
``applied`` recorded for it. Afterwards the engine's connections in ``pg_stat_activity`` are
the pool plus the live sessions, and only the pool once every session is deleted.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import signal
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from urllib.parse import urlencode

import aiohttp
import psycopg
import pytest
from aiohttp.test_utils import TestClient

from sessdb.web.app import make_app
from sessdb.config import Settings
from tests.fix_app import SessdbTestServer, engine_of
from tests.fix_db import tcp_host
from tests.fix_gate import until
from tests.web_helpers import ServiceMaker, services, unique  # noqa: F401  (fixture)

SESSIONS = 200
STEPS = 10  # steps per session after the creating request
POOL_SIZE = 8
DOOMED_NAP = 5.0  # seconds a doomed statement sleeps before its update
SETTLE_SECONDS = 10.0  # deadline for backends to exit after the engine let them go

pytestmark = [pytest.mark.slow, pytest.mark.timeout(90)]

FUNCTION = """
CREATE FUNCTION public.{fn}(op text, sid text, req text, nap text) RETURNS text
LANGUAGE plpgsql AS $f$
DECLARE
    value int;
BEGIN
    IF op = 'new' THEN
        PERFORM sa_set_http_option('SessionID', sid);
        CREATE TEMP TABLE ctr (n int NOT NULL);
        INSERT INTO pg_temp.ctr VALUES (0);
        CREATE TEMP TABLE applied (req int NOT NULL, n int NOT NULL);
        RETURN 'new:' || pg_backend_pid();
    ELSIF op = 'inc' THEN
        PERFORM pg_sleep(nap::float8);
        UPDATE pg_temp.ctr SET n = ctr.n + 1 RETURNING ctr.n INTO value;
        INSERT INTO pg_temp.applied VALUES (req::int, value);
        RETURN req || ':' || value || ':' || pg_backend_pid();
    ELSIF op = 'read' THEN
        RETURN json_build_object(
            'n', (SELECT c.n FROM pg_temp.ctr c),
            'applied', (SELECT coalesce(json_agg(json_build_array(a.req, a.n) ORDER BY a.n), '[]')
                        FROM pg_temp.applied a),
            'pid', pg_backend_pid(),
            'sid', connection_property('SessionID'))::text;
    ELSIF op = 'end' THEN
        PERFORM sa_set_http_option('SessionID', '');
        RETURN 'ended';
    END IF;
    RAISE EXCEPTION 'unknown op %', op;
END $f$;
"""


@dataclass
class SessionLog:
    """What the client of one session sent and was told."""

    sid: str
    pid: int = 0
    answered: dict[int, int] = field(default_factory=dict)  # request number → counter value in its 200
    doomed: set[int] = field(default_factory=set)
    racy: set[int] = field(default_factory=set)
    problems: list[str] = field(default_factory=list)
    next_req: int = 1

    def take(self) -> int:
        number, self.next_req = self.next_req, self.next_req + 1
        return number


class Load:
    """Drives the sessions of one test against one engine."""

    def __init__(self, client: TestClient, http: aiohttp.ClientSession, service: str) -> None:
        self.client = client
        self.http = http
        self.service = service
        self.rng = random.Random(20240611)

    def target(self, **query: object) -> str:
        return f"/{self.service}?{urlencode(query)}"

    async def get(self, **query: object) -> tuple[int, str]:
        async with self.http.get(self.client.make_url(self.target(**query))) as resp:
            return resp.status, await resp.text()

    async def send_and_abort(self, delay: float, **query: object) -> None:
        """Send a request on a fresh connection and drop the connection after ``delay`` seconds."""
        reader, writer = await asyncio.open_connection(self.client.server.host, self.client.server.port)
        writer.write(f"GET {self.target(**query)} HTTP/1.1\r\nHost: load\r\n\r\n".encode())
        await writer.drain()
        try:
            # the client's own behaviour under test: it gives up after ``delay``
            async with asyncio.timeout(delay):
                await reader.read(1)
        except TimeoutError:
            pass
        writer.transport.abort()

    async def increment(self, log: SessionLog) -> None:
        req = log.take()
        status, body = await self.get(op="inc", sessionid=log.sid, req=req, nap=0)
        parts = body.split(":")
        if status != 200 or len(parts) != 3 or parts[0] != str(req) or parts[2] != str(log.pid):
            log.problems.append(f"req {req}: {status} {body[:200]!r}")
            return
        log.answered[req] = int(parts[1])

    async def abort(self, log: SessionLog) -> None:
        req = log.take()
        if self.rng.random() < 0.5:
            log.doomed.add(req)
            await self.send_and_abort(self.rng.uniform(0.0, 0.15), op="inc", sessionid=log.sid, req=req,
                                      nap=DOOMED_NAP)
        else:
            log.racy.add(req)
            await self.send_and_abort(self.rng.uniform(0.0, 0.04), op="inc", sessionid=log.sid, req=req,
                                      nap=round(self.rng.uniform(0.0, 0.03), 4))

    async def one(self, log: SessionLog) -> None:
        await (self.abort(log) if self.rng.random() < 0.2 else self.increment(log))

    async def session(self, sid: str) -> SessionLog:
        """Create session ``sid``, then run STEPS steps: single requests or bursts of 2 to 4."""
        log = SessionLog(sid)
        status, body = await self.get(op="new", sid=sid)
        if status != 200 or not body.startswith("new:"):
            log.problems.append(f"create: {status} {body[:200]!r}")
            return log
        log.pid = int(body.split(":")[1])
        for _ in range(STEPS):
            if self.rng.random() < 0.15:
                await asyncio.gather(*(self.one(log) for _ in range(self.rng.randint(2, 4))))
            else:
                await self.one(log)
        return log

    async def final(self, log: SessionLog) -> dict | None:  # type: ignore[type-arg]
        """The session's counter and log, read through the service; None (and a problem) on failure."""
        status, body = await self.get(op="read", sessionid=log.sid)
        if status != 200:
            log.problems.append(f"final read: {status} {body[:300]!r}")
            return None
        return json.loads(body)  # type: ignore[no-any-return]


def check_session(log: SessionLog, state: dict | None) -> list[str]:  # type: ignore[type-arg]
    """Everything wrong with one session's final state, as sentences."""
    wrong = list(log.problems)
    if state is None:
        return [f"{log.sid}: {w}" for w in wrong]
    applied = {req: n for req, n in state["applied"]}
    sent = set(range(1, log.next_req))
    if state["pid"] != log.pid or state["sid"] != log.sid:
        wrong.append(f"final read ran on pid {state['pid']} in session {state['sid']!r}, not {log.pid} {log.sid!r}")
    if len(applied) != len(state["applied"]):
        wrong.append(f"a request was applied twice: {state['applied']}")
    if sorted(applied.values()) != list(range(1, len(applied) + 1)):
        wrong.append(f"counter values in the log are not 1..{len(applied)}: {state['applied']}")
    if state["n"] != len(applied):
        wrong.append(f"counter {state['n']} but {len(applied)} increments committed")
    if set(applied) - sent:
        wrong.append(f"requests never sent were applied: {sorted(set(applied) - sent)}")
    for req, n in log.answered.items():
        if applied.get(req) != n:
            wrong.append(f"req {req} was answered with n={n} but the log has {applied.get(req)}")
    if set(applied) & log.doomed:
        wrong.append(f"aborted requests committed although their statement was still sleeping: "
                     f"{sorted(set(applied) & log.doomed)}")
    unanswered = set(applied) - set(log.answered) - log.racy
    if unanswered:
        wrong.append(f"requests committed without a 200 answer: {sorted(unanswered)}")
    lost = sent - set(log.answered) - log.doomed - log.racy
    if lost:
        wrong.append(f"requests got no 200 answer although their client waited: {sorted(lost)}")
    expected = len(log.answered) + len(set(applied) & log.racy)
    if state["n"] != expected:
        wrong.append(f"counter {state['n']} != {len(log.answered)} answered + "
                     f"{len(set(applied) & log.racy)} racy aborts that committed")
    return [f"{log.sid}: {w}" for w in wrong]


async def engine_backends(conn: psycopg.AsyncConnection) -> set[int]:
    """Pids of this database's backends whose application_name is 'sessdb'."""
    cur = await conn.execute("SELECT pid FROM pg_stat_activity "
                             "WHERE application_name = 'sessdb' AND datname = current_database()")
    return {pid for (pid,) in await cur.fetchall()}


async def settle_backends(conn: psycopg.AsyncConnection, client: TestClient) -> tuple[set[int], set[int]]:
    """Wait until pg_stat_activity shows exactly the engine's connections; (seen, expected).

    A backend leaves pg_stat_activity when its process exits, some time after the engine
    closed the connection; PostgreSQL offers nothing to await for that, hence the polling
    with a deadline.
    """
    engine = engine_of(client)
    deadline = time.monotonic() + SETTLE_SECONDS
    while True:
        expected = {b.pid for b in engine.pool.backends} | {s.backend.pid for s in engine.sessions}
        seen = await engine_backends(conn)
        if (seen == expected and len(seen) == POOL_SIZE + len(engine.sessions)) or time.monotonic() > deadline:
            return seen, expected
        await asyncio.sleep(0.05)


async def test_200_sessions_with_client_disconnects(make_client, services: ServiceMaker, dsn: str) -> None:  # type: ignore[no-untyped-def]  # noqa: F811
    client = await make_client(max_sessions=250, pool_size=POOL_SIZE, session_queue_limit=16)
    fn = unique("load")
    services.conn.execute(FUNCTION.format(fn=fn))
    name = await services.create(client, "RAW", f"SELECT public.{fn}(:op, :sid, :req, :nap)")
    started = time.monotonic()
    try:
        async with (aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as http,
                    await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn):
            load = Load(client, http, name)
            sids = [f"load-{i:03d}-{unique('')}" for i in range(SESSIONS)]
            async with asyncio.timeout(45):
                logs = await asyncio.gather(*(load.session(sid) for sid in sids))
                states = await asyncio.gather(*(load.final(log) for log in logs))

            wrong = [w for log, state in zip(logs, states) for w in check_session(log, state)]
            assert not wrong, f"{len(wrong)} problems, first ones:\n" + "\n".join(wrong[:30])
            engine = engine_of(client)
            assert len(engine.sessions) == SESSIONS
            seen, expected = await settle_backends(conn, client)
            assert seen == expected and len(seen) == POOL_SIZE + SESSIONS, (
                f"{len(seen)} sessdb backends, expected pool {POOL_SIZE} + {SESSIONS} sessions; "
                f"unknown {sorted(seen - expected)[:10]}, missing {sorted(expected - seen)[:10]}")

            ended = await asyncio.gather(*(load.get(op="end", sessionid=sid) for sid in sids))
            assert [r for r in ended if r != (200, "ended")] == []
            assert len(engine.sessions) == 0
            seen, expected = await settle_backends(conn, client)
            assert seen == expected and len(seen) == POOL_SIZE, (
                f"{len(seen)} sessdb backends after every session ended, expected the pool's {POOL_SIZE}")
    finally:
        services.conn.execute(f"DROP FUNCTION IF EXISTS public.{fn}(text, text, text, text)")
    doomed = sum(len(log.doomed) for log in logs)
    racy = sum(len(log.racy) for log in logs)
    racy_committed = sum(len({r for r, _ in s["applied"]} & log.racy) for log, s in zip(logs, states))
    print(f"\n{SESSIONS} sessions, {sum(len(log.answered) for log in logs)} answered, {doomed} doomed aborts, "
          f"{racy} racy aborts ({racy_committed} committed) in {time.monotonic() - started:.1f}s")


STRAY_FUNCTION = """
CREATE TABLE public.{fn}_marks (key bigint);
CREATE FUNCTION public.{fn}(op text, sid text, key text, nap text) RETURNS text
LANGUAGE plpgsql AS $f$
BEGIN
    IF op = 'new' THEN
        PERFORM sa_set_http_option('SessionID', sid);
        RETURN 'new:' || pg_backend_pid();
    ELSIF op = 'wait' THEN
        PERFORM pg_advisory_xact_lock(key::bigint);
        RETURN 'waited';
    ELSIF op = 'sleep' THEN
        PERFORM pg_sleep(nap::float8);
        RETURN 'slept';
    ELSIF op = 'mark' THEN
        PERFORM pg_sleep(nap::float8);
        INSERT INTO public.{fn}_marks VALUES (key::bigint);
        RETURN 'marked';
    END IF;
    RAISE EXCEPTION 'unknown op %', op;
END $f$;
"""


class CancelDelayProxy:
    """A TCP proxy to PostgreSQL that holds back cancel requests for ``delay`` seconds.

    It stands for a database a few milliseconds away: every other connection is piped through
    at once. The DSN through it disables SSL and GSS, so that a cancel request is the first
    packet of its connection.
    """

    CANCEL_CODE = 80877102

    def __init__(self, dsn: str, delay: float) -> None:
        info = psycopg.conninfo.conninfo_to_dict(dsn)
        self.upstream = (tcp_host(info), int(info.get("port", 5432)))
        self.dsn = dsn
        self.delay = delay
        self.cancels = 0
        self.server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    async def __aenter__(self) -> str:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        port = self.server.sockets[0].getsockname()[1]
        return psycopg.conninfo.make_conninfo(self.dsn, host="127.0.0.1", port=port, sslmode="disable",
                                              gssencmode="disable")

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()
        for writer in list(self._writers):
            writer.close()
        await self.server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        try:
            head = await reader.readexactly(8)
            if int.from_bytes(head[:4], "big") == 16 and int.from_bytes(head[4:], "big") == self.CANCEL_CODE:
                self.cancels += 1
                await asyncio.sleep(self.delay)  # the simulated network distance, not a wait for state
            up_reader, up_writer = await asyncio.open_connection(*self.upstream)
            self._writers.add(up_writer)
            up_writer.write(head)
            await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer))
        except (OSError, asyncio.IncompleteReadError, asyncio.CancelledError):
            pass  # the end of this connection (3.11's start_server logs a cancelled handler as an error)
        finally:
            writer.close()
            self._writers.discard(writer)

    @staticmethod
    async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except OSError:
            pass
        finally:
            writer.close()


@dataclass
class StrayRig:
    """A server behind a proxy that delays cancel requests, and the ``stray`` service on it."""

    client: TestClient
    name: str
    sid: str
    key: int
    fn: str
    proxy: CancelDelayProxy


@contextlib.asynccontextmanager
async def _stray_rig(dsn: str, services: ServiceMaker, svcconn: psycopg.Connection) -> AsyncIterator[StrayRig]:
    fn = unique("stray")
    svcconn.execute(STRAY_FUNCTION.format(fn=fn))
    name = await services.create(None, "RAW", f"SELECT public.{fn}(:op, :sid, :key, :nap)")
    proxy = CancelDelayProxy(dsn, delay=0.3)
    try:
        async with proxy as proxied:
            app = make_app(Settings(dsn=proxied, port=0, sweep_interval=0.1, pool_size=4, session_reserve=0), proxied)
            async with TestClient(SessdbTestServer(app, host="127.0.0.1")) as client:
                await services.sync(client, name)
                yield StrayRig(client, name, unique("stray-"), random.randint(1, 2**40), fn, proxy)
    finally:
        svcconn.execute("SELECT pg_advisory_unlock_all()")
        svcconn.execute(f"DROP FUNCTION IF EXISTS public.{fn}(text, text, text, text)")
        svcconn.execute(f"DROP TABLE IF EXISTS public.{fn}_marks")


async def test_cancel_of_a_vanished_request_does_not_hit_the_next_one(
        dsn: str, services: ServiceMaker, svcconn: psycopg.Connection) -> None:  # noqa: F811
    async with _stray_rig(dsn, services, svcconn) as rig:
        await _second_request_survives(rig.client, rig.name, rig.sid, rig.key, svcconn, rig.proxy)


async def test_a_request_whose_client_left_during_an_earlier_cancel_is_cancelled_too(
        dsn: str, services: ServiceMaker, svcconn: psycopg.Connection) -> None:  # noqa: F811
    """A's client leaves, its cancel is slow; B runs next in the session and its client leaves too.

    B's statement sleeps 1 s before it writes a mark; the write must not commit, since B's
    client left while B ran (a cancel still on its way for A must not stand in for B's).
    """
    async with _stray_rig(dsn, services, svcconn) as rig:
        await _both_cancelled(rig.client, rig.name, rig.sid, rig.key, svcconn, rig.proxy)
        marks = svcconn.execute(f"SELECT count(*) FROM public.{rig.fn}_marks").fetchone()
        assert marks == (0,), "B's write committed although its client had left"


async def test_a_cancel_that_reaches_the_backend_before_it_reads_the_request_is_sent_again(  # type: ignore[no-untyped-def]
        client, services: ServiceMaker, svcconn: psycopg.Connection) -> None:  # noqa: F811
    """A request's client leaves while its session's backend is stopped (SIGSTOP) with the
    request's pipeline unread in its socket. The engine's cancel reaches the backend while it
    still waits for a command, where PostgreSQL ignores a cancel; it then reads the pipeline. Only
    a cancel sent again stops the statement (a 5 s sleep, then a write), so that nothing commits."""
    if os.environ.get("SESSDB_TEST_DSN"):
        pytest.skip("stops a backend of the embedded cluster, which runs on this machine")
    fn = unique("early")
    svcconn.execute(STRAY_FUNCTION.format(fn=fn))
    try:
        name = await services.create(client, "RAW", f"SELECT public.{fn}(:op, :sid, :key, :nap)")
        sid = unique("early-")
        resp = await client.get(f"/{name}", params={"op": "new", "sid": sid})
        assert resp.status == 200, await resp.text()
        pid = int((await resp.text()).split(":")[1])
        session = engine_of(client).sessions.lookup(sid)
        assert session is not None
        backend = session.backend
        assert backend.pid == pid, "the backend to stop is the session's"
        try:
            os.kill(pid, signal.SIGSTOP)
        except PermissionError:
            pytest.skip("may not stop PostgreSQL's backends (run the tests as root or as their user)")
        try:
            writer = await _send(client, name, op="mark", sessionid=sid, key=1, nap=DOOMED_NAP)
            await until(lambda: backend.running, "the request's pipeline sent")
            writer.transport.abort()
            await until(lambda: backend.cancels_sent >= 1, "a cancel delivered to the stopped backend")
        finally:
            os.kill(pid, signal.SIGCONT)
        await until(lambda: not session.busy, "the request over")
        marks = svcconn.execute(f"SELECT count(*) FROM public.{fn}_marks").fetchone()
        assert marks == (0,), "the write committed although the client had left before it ran"
        resp = await client.get(f"/{name}", params={"op": "sleep", "sessionid": sid, "nap": 0})
        assert (resp.status, await resp.text()) == (200, "slept"), "the session serves on"
    finally:
        svcconn.execute(f"DROP FUNCTION IF EXISTS public.{fn}(text, text, text, text)")
        svcconn.execute(f"DROP TABLE IF EXISTS public.{fn}_marks")


async def _send(client: TestClient, name: str, **query: object) -> asyncio.StreamWriter:
    """Send a GET on a fresh connection; the caller aborts it."""
    _, writer = await asyncio.open_connection(client.server.host, client.server.port)
    writer.write(f"GET /{name}?{urlencode(query)} HTTP/1.1\r\nHost: t\r\n\r\n".encode())
    await writer.drain()
    return writer


async def _both_cancelled(client: TestClient, name: str, sid: str, key: int,
                          svcconn: psycopg.Connection, proxy: CancelDelayProxy) -> None:
    async with aiohttp.ClientSession() as http:
        async with http.get(client.make_url(f"/{name}?{urlencode(dict(op='new', sid=sid))}")) as resp:
            assert resp.status == 200
            pid = int((await resp.text()).split(":")[1])
        session = engine_of(client).sessions.lookup(sid)
        assert session is not None
        svcconn.execute("SELECT pg_advisory_lock(%s)", [key])
        first = await _send(client, name, op="wait", sessionid=sid, key=key)
        await wait_for_state(svcconn, pid, "active", "Lock")
        second = await _send(client, name, op="mark", sessionid=sid, key=key, nap=1)
        async with asyncio.timeout(5):
            while not session.queue:  # B waits behind A (the queue has no event to await)
                await asyncio.sleep(0.01)
        first.transport.abort()
        async with asyncio.timeout(5):
            while proxy.cancels == 0:  # A's cancel is on its way (held by the proxy)
                await asyncio.sleep(0.01)
        svcconn.execute("SELECT pg_advisory_unlock(%s)", [key])  # A finishes; B's turn comes
        async with asyncio.timeout(5):
            while session.queue:
                await asyncio.sleep(0.01)
        second.transport.abort()  # B's client leaves while B runs or waits for A's cancel
        async with asyncio.timeout(10):
            while session.busy:  # B is over, one way or the other
                await asyncio.sleep(0.01)


async def _second_request_survives(client: TestClient, name: str, sid: str, key: int,
                                   svcconn: psycopg.Connection, proxy: CancelDelayProxy) -> None:
    """A waits on a lock in session ``sid`` with B queued behind; A's client leaves; A then finishes."""
    def url(**query: object) -> str:
        return str(client.make_url(f"/{name}?{urlencode(query)}"))

    async with aiohttp.ClientSession() as http:
        async with http.get(url(op="new", sid=sid)) as resp:
            assert resp.status == 200
            pid = int((await resp.text()).split(":")[1])
        svcconn.execute("SELECT pg_advisory_lock(%s)", [key])
        reader, writer = await asyncio.open_connection(client.server.host, client.server.port)
        writer.write(f"GET /{name}?{urlencode(dict(op='wait', sessionid=sid, key=key))} HTTP/1.1\r\n"
                     "Host: t\r\n\r\n".encode())
        await wait_for_state(svcconn, pid, "active", "Lock")  # A runs in the session, blocked
        second = asyncio.ensure_future(http.get(url(op="sleep", sessionid=sid, nap=1)))
        session = engine_of(client).sessions.lookup(sid)
        assert session is not None
        async with asyncio.timeout(5):
            while not session.queue:  # B waits behind A (the queue has no event to await)
                await asyncio.sleep(0.01)
        writer.transport.abort()
        async with asyncio.timeout(5):
            while proxy.cancels == 0:  # the engine noticed and sent its cancel (held by the proxy)
                await asyncio.sleep(0.01)
        svcconn.execute("SELECT pg_advisory_unlock(%s)", [key])  # A finishes before the cancel lands
        async with await second as resp:
            body = await resp.text()
        assert (resp.status, body) == (200, "slept"), body[:300]


def _backend_state(conn: psycopg.Connection, pid: int) -> tuple[str | None, str | None]:
    row = conn.execute("SELECT state, wait_event_type FROM pg_stat_activity WHERE pid = %s", [pid]).fetchone()
    return (row[0], row[1]) if row else (None, None)


async def wait_for_state(conn: psycopg.Connection, pid: int, state: str, wait_type: str | None = None,
                         timeout: float = 5.0) -> None:
    """Poll pg_stat_activity (nothing to await in PostgreSQL) until backend ``pid`` is in ``state``."""
    async with asyncio.timeout(timeout):
        while True:
            seen, waiting = _backend_state(conn, pid)
            if seen == state and (wait_type is None or waiting == wait_type):
                return
            await asyncio.sleep(0.01)
