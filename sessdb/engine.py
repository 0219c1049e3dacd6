"""The Engine: the one object the web layer talks to.

It owns the connection pool, the service catalog, the authenticator, the sessions and the
background parts (admin listener, sweeper, state server), starts them in order and stops them
in reverse order. ``run`` takes a planned call and runs it in the request's session or on a
pooled connection; the SQL always runs in a task the engine owns, so a client that goes away
only cancels the statement, and the task settles the session and the connection itself.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import secrets
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import psycopg

from sessdb.auth import Authenticator
from sessdb.config import Settings
from sessdb.connection import ENGINE_ROLE, Backend
from sessdb.errors import DatabaseError, ServiceUnavailable
from sessdb.execute import Outcome, Ticket, run_call
from sessdb.mirror import NewSessionRows
from sessdb.plan import Call, placeholder_call
from sessdb.pool import ConnectionPool
from sessdb.routing import Service
from sessdb.services import Catalog
from sessdb.session import MIRROR_SLACK, Grant, RequestSessions, Session
from sessdb.sessions import SessionManager, wall_now
from sessdb.sweeper import Sweeper
from sessdb.web.inputs import COOKIELESS, HttpInput
from sessdb.web.respond import ResponsePlan
from sessdb.wire import Step

log = logging.getLogger("sessdb.engine")

# A session request writes the mirror row when it was last written MIRROR_SLACK seconds ago or
# more ($3, PostgreSQL's epoch; '': write it), or its statement changed the session (a pending id
# or delete, a new timeout). It answers when it wrote it (epoch), else NULL.
# PostgreSQL resolves these names while the request's role is in force, with that role's own
# "$user" schema on the search path, and evaluates them after the step has reset the role (see
# execute._steps): every function, operator and type is named with its schema, so that no object
# of the role's that fits the arguments better than pg_catalog's can stand in for one and run as
# the engine's login. The function is in sessdb_request, which every role may use. OPERATOR(...)
# binds as any operator does (tighter than OR, looser than ::), hence the parentheses; $3 is not
# '' in the last test, since OR stops at the first true one.
_SYNC_SQL = (
    "CASE WHEN $3 OPERATOR(pg_catalog.=) ''::pg_catalog.text"
    " OR coalesce(pg_catalog.current_setting('sessdb.pending_id', true), '')"
    " OPERATOR(pg_catalog.<>) ''::pg_catalog.text"
    " OR coalesce(pg_catalog.current_setting('sessdb.mirror_stale', true), '')"
    " OPERATOR(pg_catalog.<>) ''::pg_catalog.text"
    " OR pg_catalog.date_part('epoch', pg_catalog.clock_timestamp())"
    f" OPERATOR(pg_catalog.>=) ($3::pg_catalog.float8 OPERATOR(pg_catalog.+) {MIRROR_SLACK}::pg_catalog.float8)"
    " THEN sessdb_request.sync_from_request($1, $2) END"
)
_WARM_UP_CALL = placeholder_call("SELECT 1")  # what a new spare runs (Engine._warm_up)
# PostgreSQL plans a prepared statement with parameters anew at each of its first five runs on a
# connection (custom plans), and from the sixth on uses one generic plan when that costs no more,
# as it does for the engine's statements (and the functions they call, such as sessdb._end_pooled).
# Measured on one new connection, the CPU of a sessionless request's pipeline: 544 us at its first
# run, 150 to 185 us at the second to sixth, 90 us from the seventh. So a spare runs the
# placeholder request six times before it serves, about 1.3 ms of PostgreSQL's CPU off the
# requests' path, instead of making the first five creations on it pay for the planning.
WARM_UP_REQUESTS = 6
_FORGET_SESSION = b"SELECT sessdb._sync_session(NULL, '', NULL, NULL, NULL, NULL, NULL, NULL)"
# A new session's row on its own connection (Engine._mirror), in a transaction block of its own:
# read-write and read committed whatever defaults the session's statement left it (SET
# default_transaction_read_only, a serializable default)
_OWN_ROW_BEGIN = Step(b"BEGIN ISOLATION LEVEL READ COMMITTED READ WRITE")
_OWN_ROW_SQL = (b"SELECT sessdb._sync_session($1, $2, $3::timestamptz, nullif($4, '')::timestamptz, $5::float8,"
                b" 'idle', 0, $6)")
_COMMIT = Step(b"COMMIT")


@dataclass
class Result:
    """A finished call: its outcome, the response changes asked for, and session cookies."""

    outcome: Outcome | None
    plan: ResponsePlan = field(default_factory=ResponsePlan)
    set_cookie: str | None = None  # a sessionid cookie to set
    clear_cookie: bool = False
    redirect: str | None = None  # session => 'required-url'


class Engine:
    """Everything a running sessdb needs besides the HTTP listener."""

    def __init__(self, settings: Settings, dsn: str) -> None:
        self.settings = settings
        self.dsn = dsn
        self.engine_id = uuid.uuid4().hex
        self.slot_class = int.from_bytes(secrets.token_bytes(4), "big") & 0x7FFFFFFF
        self.pool = ConnectionPool(dsn, settings.pool_size, settings.session_reserve, warm_up=self._warm_up)
        self.catalog = Catalog(dsn, on_admin=self._on_admin)
        self.auth = Authenticator(dsn)
        self.new_rows = NewSessionRows(self.engine_id, dsn, self._mirror)
        self.sessions = SessionManager(queue_limit=settings.session_queue_limit,
                                       default_timeout=self.default_timeout,
                                       bind_ip=settings.session_bind_ip, on_closed=self._dispose,
                                       max_sessions=settings.max_sessions)
        self.sweeper = Sweeper(self)
        self.state_server = None  # sessdb.stateserver.server.StateServer when STATE_PORT is set
        self._tasks: set[asyncio.Task] = set()  # type: ignore[type-arg]
        self._inline: set[asyncio.Future[None]] = set()  # calls running in their handler's task
        self._stopping = False

    # -- lifecycle -----------------------------------------------------------------------------

    async def start(self) -> None:
        """Open the pool, load the catalog, start the background parts; raises ``DatabaseError``."""
        await self.pool.open()
        try:
            await self.catalog.start()
        except psycopg.Error as exc:
            await self.pool.close()
            raise DatabaseError(f"cannot load the service catalog: {exc}") from None
        await self.new_rows.open()
        self.sweeper.start()
        if self.settings.state_port is not None:
            from sessdb.stateserver.server import StateServer

            self.state_server = StateServer(self.settings, self.dsn)
            await self.state_server.start()

    async def drain(self, grace: float) -> None:
        """Graceful stop, first part: refuse new calls, give running ones ``grace`` seconds, then
        cancel their statements (their requests answer 503) and wait for them to end."""
        self._stopping = True
        running = [*self._tasks, *self._inline]
        if running:
            log.info("waiting up to %.0fs for %d running calls", grace, len(running))
            _, pending = await asyncio.wait(running, timeout=grace)
            if pending:
                log.info("cancelling %d calls still running", len(pending))
                for backend in {*self.pool.backends, *(s.backend for s in self.sessions)}:
                    if backend.running:
                        backend.cancel_soon()
                await asyncio.wait(pending, timeout=5)

    async def stop(self) -> None:
        """Stop the parts, close every session and connection."""
        log.info("stopping the engine: %d sessions, %d calls running", len(self.sessions),
                 len(self._tasks) + len(self._inline))
        self._stopping = True
        if self.state_server is not None:
            await self.state_server.stop()
        await self.sweeper.stop()
        await self.catalog.stop()
        for session in self.sessions:
            self.sessions.drop(session, "shutdown")
            if not session.busy:
                self.sessions.close(session)
        await asyncio.gather(*self._tasks, *self._inline, return_exceptions=True)
        for session in self.sessions:
            await session.backend.close()
        await self.new_rows.close()
        await self.pool.close()
        log.info("engine stopped")

    async def ready(self) -> bool:
        """True when the database answers a query within 5 seconds."""
        if self._stopping:
            return False
        try:
            backend = await self.pool.acquire(timeout=5)
        except Exception:
            return False
        try:
            await asyncio.wait_for(backend.conn.execute("SELECT 1"), 5)
            return True
        except (psycopg.Error, asyncio.TimeoutError):
            return False
        finally:
            self.pool.release(backend)

    async def _warm_up(self, backend: Backend) -> bool:
        """Ready a new spare for the session its first request may create: the session
        functions compiled (``Backend.warm_up``), then ``WARM_UP_REQUESTS`` sessionless requests
        of ``SELECT 1``, which prepare the engine's statements on it as a first request would and
        run them until PostgreSQL plans them once for all (see ``WARM_UP_REQUESTS``).
        False when the connection is unusable (it is closed then)."""
        if not await backend.warm_up():
            return False
        settings = self._settings_for(RequestSessions(inherited=None, peer=None))
        bookkeeping = _bookkeeping(self.engine_id, None, None)
        try:
            for _ in range(WARM_UP_REQUESTS):
                outcome = await run_call(backend, _WARM_UP_CALL, statement_timeout_ms=self.statement_timeout_ms,
                                         extra_settings=settings, before_commit=bookkeeping, end_request=True)
                if not outcome.clean:
                    break
            if outcome.clean:
                return True
            log.debug("connection %s was not readied: %s", backend.pid, outcome.error)
            if not backend.broken and await backend.reset():
                return True
        except BaseException:
            await backend.close()
            raise
        await backend.close()
        return False

    def default_timeout(self) -> float:
        """Minutes for new sessions: the database option http_session_timeout, else SESSION_TIMEOUT."""
        value = self.catalog.options.get("http_session_timeout")
        try:
            return float(value) if value is not None else self.settings.session_timeout
        except ValueError:
            return self.settings.session_timeout

    @property
    def statement_timeout_ms(self) -> int | None:
        """REQUEST_TIMEOUT in milliseconds, None for no limit."""
        seconds = self.settings.request_timeout
        return max(1, int(seconds * 1000)) if seconds else None

    # -- running calls -------------------------------------------------------------------------

    async def run(self, service: Service, inp: HttpInput, call: Call, ticket: Ticket | None = None) -> Result:
        """Run ``call`` for a request: in its session when it presents a live one, else pooled.

        ``ticket`` is the request's, when its HTTP connection reports a departing client to it.
        """
        if self._stopping:
            raise ServiceUnavailable("the engine is shutting down")
        presented = inp.session_id()
        session = self.sessions.lookup(presented)
        new_cookie = None
        if session is None and service.session != "optional":
            session = await self._create_session(inp.peer)
            if service.session == "required-url":
                return Result(None, redirect=_cookieless_url(session.id, inp))
            presented = new_cookie = session.id
        if session is not None:
            assert presented is not None
            grant = await self.sessions.enter(session, presented, inp.peer)
            if grant is Grant.RUN:
                result = await self._owned(lambda t: self._run_in_session(session, call, inp, t), session.backend,
                                           ticket)
                result.set_cookie = result.set_cookie or new_cookie
                return result
        backend = await self.pool.acquire()
        return await self._owned(lambda t: self._run_pooled(backend, call, inp, t), backend, ticket)

    async def _owned(self, work: Callable[[Ticket], Awaitable[Result]], backend: Backend,
                     ticket: Ticket | None) -> Result:
        """Run ``work`` to the end even when the client leaves; the call is never interrupted.

        With a guarded ticket, the HTTP connection reports a departing client to the ticket
        instead of cancelling the handler, and ``work`` runs right here. Otherwise, and once the
        engine is stopping (aiohttp's shutdown cancels handlers), it runs in a task the engine
        owns, which is never cancelled. Either way a statement not yet sent is
        not sent, one on the wire is cancelled in PostgreSQL, and the session and the
        connection are settled to the end; then the request ends as cancelled.
        """
        if ticket is not None and ticket.guarded and not self._stopping:
            ticket.backend, ticket.shielded = backend, True
            running: asyncio.Future[None] = asyncio.get_running_loop().create_future()  # for drain
            self._inline.add(running)
            try:
                result = await work(ticket)
            finally:
                ticket.backend, ticket.shielded = None, False
                self._inline.discard(running)
                running.set_result(None)
            if ticket.abandoned:
                raise asyncio.CancelledError("the client went away")
            return result
        ticket = Ticket()
        task = asyncio.ensure_future(work(ticket))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        try:
            return await asyncio.shield(task)
        except asyncio.CancelledError:
            ticket.abandoned = True
            if not task.done():  # else the backend may be serving the next request already
                ticket.backend = backend
                ticket.client_left()
            raise

    def _settings_for(self, run: RequestSessions) -> list[tuple[str, str]]:
        """The session settings of a request, before its statement: those of its session, or,
        for a request that starts outside any, those that let it create one."""
        slots, default_timeout = f"{self.slot_class}:{self.settings.max_sessions}", _minutes(self.default_timeout())
        session = run.inherited
        if session is None:
            return list(_sessionless_settings(default_timeout, slots))
        last = session.last_time.isoformat() if session.last_time else ""
        values = (session.id, session.created_at.isoformat(), last, _minutes(session.timeout_minutes),
                  default_timeout, "", "", slots)
        # the empty ones are left out, as for a sessionless request (see _sessionless_settings)
        return [(name, value) for name, value in zip(_SESSION_SETTINGS, values, strict=True) if value]

    async def _execute(self, backend: Backend, call: Call, run: RequestSessions, plan: ResponsePlan,
                       ticket: Ticket, *, mirror_written: str | None) -> Outcome:
        """Run ``call`` with the request's settings and bookkeeping. ``mirror_written`` is None
        for a request that starts outside any session (the connection is reset with the
        commit), else ``Session.mirror_written``."""
        def on_event(event: dict) -> None:  # type: ignore[type-arg]
            kind = event.get("kind")
            if kind == "header" and isinstance(event.get("name"), str):
                plan.apply_header_event(event["name"], event.get("value"))
            elif kind == "session":
                self.sessions.apply_event(run, backend, event)

        return await run_call(backend, call, ticket, on_event=on_event, statement_timeout_ms=self.statement_timeout_ms,
                              extra_settings=self._settings_for(run),
                              before_commit=_bookkeeping(self.engine_id, run.peer, mirror_written),
                              any_role_names=True, end_request=mirror_written is None)

    async def _run_pooled(self, backend: Backend, call: Call, inp: HttpInput, ticket: Ticket) -> Result:
        run = RequestSessions(inherited=None, peer=inp.peer)
        result = Result(None)
        try:
            result.outcome = await self._execute(backend, call, run, result.plan, ticket, mirror_written=None)
            self._check_stopping(result.outcome)
        finally:
            created = run.created
            if created is None or backend.broken:
                clean = result.outcome is not None and result.outcome.clean
                self.pool.release(backend, clean=clean)
            else:
                self.pool.detach(backend)
        if created is not None:
            await self._settle_created(created, result)
        elif run.replaced_ids and self.settings.session_cookie == "auto":
            result.clear_cookie = True
        self._check_lost(backend)
        return result

    async def _settle_created(self, session: Session, result: Result) -> None:
        """After a creator request: write the session's mirror row, then release the session."""
        backend = session.backend
        if not backend.broken:
            session.last_time = wall_now()  # SessionLastTime: the creator releases the session now
            await backend.settle_cancel()
            await self.new_rows.write(session)  # committed or not, the creator's transaction wrote no row
        if backend.broken:  # lost before, or while writing the row
            self.sessions.drop(session, "killed")
            self.sessions.close(session)
            raise ServiceUnavailable("the database connection was lost", retry_after=1)
        if self.settings.session_cookie == "auto":
            result.set_cookie = session.id
        self._leave(session)
        if session.marked is not None:
            raise ServiceUnavailable(f"session {session.id!r} was dropped", retry_after=1)

    async def _run_in_session(self, session: Session, call: Call, inp: HttpInput, ticket: Ticket) -> Result:
        run = RequestSessions(inherited=session, peer=inp.peer)
        result = Result(None)
        try:
            result.outcome = await self._execute(session.backend, call, run, result.plan, ticket,
                                                 mirror_written=session.mirror_written(inp.peer))
            self._check_stopping(result.outcome)
        except BaseException:
            self._end_session_run(session, run, committed=False)
            raise
        committed = result.outcome.committed
        if committed and result.outcome.last_value is not None:
            session.mirrored(inp.peer, result.outcome.last_value)
        try:
            if not committed and isinstance(run.pending, str) and not session.backend.broken:
                await session.backend.settle_cancel()
                await _quietly(session.backend.conn.execute("SELECT sessdb._release_id(%s)", [run.pending]))
        finally:
            now_in = self._end_session_run(session, run, committed)
        if session.marked is not None:
            raise ServiceUnavailable(f"session {session.id!r} was dropped", retry_after=1)
        if self.settings.session_cookie == "auto":
            if now_in is None:
                result.clear_cookie = True
            elif now_in.id != inp.session_id():
                result.set_cookie = now_in.id
        return result

    def _end_session_run(self, session: Session, run: RequestSessions, committed: bool) -> Session | None:
        if session.backend.broken and session.marked is None:
            self.sessions.drop(session, "killed")
        now_in = self.sessions.finish(run, committed)
        if now_in is None:
            self._recycle(session)
        else:
            self._leave(session)
        return now_in

    def _leave(self, session: Session) -> None:
        if session.marked is not None:
            self.sessions.close(session)
        else:
            self.sessions.leave(session)

    def _check_stopping(self, outcome: Outcome) -> None:
        if self._stopping and outcome.error is not None and outcome.error.sqlstate == "57014":
            raise ServiceUnavailable("the engine is shutting down; the statement was cancelled", retry_after=1)

    def _check_lost(self, backend: Backend) -> None:
        if backend.broken:
            raise ServiceUnavailable("the database connection was lost", retry_after=1)

    # -- creating and ending sessions ----------------------------------------------------------

    async def _create_session(self, peer: str | None) -> Session:
        """A new idle session for a ``session => 'required'`` service (contract 5.8)."""
        backend = await self.pool.acquire()
        created_at, timeout = wall_now(), self.default_timeout()
        try:
            # one statement: claim the id and a slot, and write the session's mirror row
            cur = await backend.conn.execute(
                "SELECT id, sessdb._create_session(id, %s), "
                "sessdb._sync_session(id, %s, %s, NULL, %s, 'idle', 0, %s) FROM sessdb.new_session_id() AS id",
                [f"{self.slot_class}:{self.settings.max_sessions}", self.engine_id, created_at, timeout, peer or ""],
            )
            row = await cur.fetchone()
            assert row is not None
            session_id = row[0]
        except psycopg.Error as exc:
            self.pool.release(backend)
            raise ServiceUnavailable(f"cannot create a session: {exc.diag.message_primary or exc}", retry_after=1) from None
        except BaseException:
            self.pool.release(backend)  # the client left: the reset frees any id and slot taken
            raise
        session = Session(id=session_id, backend=backend, created_at=created_at, timeout_minutes=timeout,
                          creator_addr=peer, slot=row[1], busy=False, last_release=time.monotonic())
        self.pool.detach(backend)
        self.sessions.register(session)
        return session

    async def _mirror(self, session: Session) -> None:
        """A new session's row, written on its own connection because its batch could not be
        (``sessdb.mirror``); a failure leaves it to the session's next request."""
        backend = session.backend
        params = [session.id, self.engine_id, session.created_at.isoformat(),
                  session.last_time.isoformat() if session.last_time else "", repr(session.timeout_minutes),
                  session.creator_addr or ""]
        try:
            results = await backend.wire.run([_OWN_ROW_BEGIN, ENGINE_ROLE, Step(_OWN_ROW_SQL, params), _COMMIT])
        except psycopg.Error as exc:
            log.debug("writing the row of session %s on its own connection failed: %s", session.id, exc)
            return
        failed = next((e for e in map(backend.wire.error_of, results) if e is not None), None)
        if failed is not None:
            log.debug("writing the row of session %s on its own connection failed: %s", session.id, failed)
            await backend.rollback_if_needed()

    def _dispose(self, session: Session) -> None:
        """A session timed out or was dropped: its connection is closed (SQL Anywhere, scenario 19)."""
        self._spawn(session.backend.close())

    def _recycle(self, session: Session) -> None:
        """A request deleted its session: the connection forgets it and, reset, joins the pool."""
        backend = session.backend
        if backend.broken or self._stopping:
            self._spawn(backend.close())
        else:
            self.pool.adopt(backend, forget=_FORGET_SESSION)

    def _spawn(self, work: Awaitable[object]) -> None:
        task = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _on_admin(self, payload: str) -> None:
        """A message on ``sessdb_admin`` (``sessdb.drop_connection``)."""
        try:
            message = json.loads(payload)
        except ValueError:
            return
        if message.get("op") == "drop" and isinstance(message.get("conn_id"), int):
            self.drop_session(message["conn_id"])

    def drop_session(self, conn_id: int) -> None:
        """The admin drop of contract 5.6 for the session on backend ``conn_id``, if any."""
        session = self.sessions.by_pid(conn_id)
        if session is None:
            return
        log.info("dropping session %s (connection %s) at an admin's request", session.id, session.backend.pid)
        busy = session.busy
        self.sessions.drop(session, "admin")
        if busy:
            session.backend.cancel_soon()


# what a request's session settings name, in this order (see sql/sessions.sql)
_SESSION_SETTINGS = (
    "sessdb.session_id", "sessdb.session_created", "sessdb.session_last", "sessdb.session_timeout",
    "sessdb.default_timeout", "sessdb.session_creator", "sessdb.pending_id", "sessdb.slots",
)


@functools.lru_cache(maxsize=16)
def _sessionless_settings(default_timeout: str, slots: str) -> tuple[tuple[str, str], ...]:
    """The session settings of a request that starts outside any session (the same for all).

    The empty ones are left out: they are empty (or unset, which the SQL functions read the
    same way) at the start of every transaction of a pooled connection, since the engine sets
    them transaction-local only and the reset runs ``RESET ALL``; a session's connection is not
    reset, but neither the engine nor its SQL functions set them for longer than a transaction
    there either (a statement that sets ``sessdb.*`` settings itself is on its own). Each one
    costs PostgreSQL a few microseconds per request. ``sessdb.session_creator`` is ``1`` here and
    left out for a session's requests (the SQL functions only ask whether it is ``1``).
    """
    values = ("", "", "", "", default_timeout, "1", "", slots)
    return tuple((name, value) for name, value in zip(_SESSION_SETTINGS, values, strict=True) if value)


def _bookkeeping(engine_id: str, peer: str | None, mirror_written: str | None) -> tuple[str, list[str]]:
    """The select list (and its parameters) a request evaluates before its commit."""
    if mirror_written is None:
        # none: a sessionless request writes no row; the one of a session it creates is written
        # after it (sessdb.mirror), not in its transaction
        return "", []
    return _SYNC_SQL, [engine_id, peer or "", mirror_written]


def _minutes(value: float) -> str:
    return f"{value:g}"


def _cookieless_url(session_id: str, inp: HttpInput) -> str:
    """The request's own URL (as sent) with ``/(S(id))`` in front of its path."""
    raw = COOKIELESS.sub("", inp.uri, count=1)
    return f"/(S({session_id}))" + (raw if raw.startswith("/") else "/" + raw)


async def _quietly(work: Awaitable[object]) -> None:
    try:
        await work
    except (psycopg.Error, OSError) as exc:
        log.debug("ignored: %s", exc)
