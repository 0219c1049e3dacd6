"""One PostgreSQL backend as the engine uses it: open, reset, cancel, close.

Every engine connection is an autocommit psycopg ``AsyncConnection``; the engine opens and
ends each request's transaction itself. ``sessdb`` is put at the end of the connection's
``search_path`` in the startup packet, so that ``RESET ALL``/``DISCARD ALL`` keep it.
Notices that the ``sessdb`` SQL functions raise with the ``SESSDB_EVENT_PREFIX`` reach the
engine while the statement still runs (see ``sessdb.session``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import Callable

import psycopg
from psycopg.conninfo import make_conninfo
from psycopg.pq import ConnStatus, TransactionStatus
from psycopg.types.string import StrDumper

from sessdb import libpq
from sessdb.wire import Step, Wire

log = logging.getLogger("sessdb.connection")

APP_NAME = "sessdb"
SEARCH_PATH = '"$user", public, sessdb'

NoticeHandler = Callable[["Backend", psycopg.errors.Diagnostic], None]



# Everything DISCARD ALL forgets that a user can see, in one round trip, but without DISCARD
# PLANS: cached plans are no state, and keeping them spares every request a re-plan of the
# sessdb functions.
_RESET = (
    b"CLOSE ALL; SET SESSION AUTHORIZATION DEFAULT; RESET ALL; DEALLOCATE ALL; UNLISTEN *; "
    b"SELECT pg_advisory_unlock_all(); DISCARD TEMP; DISCARD SEQUENCES"
)


# the engine's own statements after a request's run as the login (after an authorized service's
# role, or a statement that SET ROLE: local, so a session keeps its role) and without the request's
# statement timeout (a request's own work is done by then). The expression is also the middle of
# the last step of a session request without REQUEST_TIMEOUT, in place of ENGINE_ROLE (see
# execute._steps), where PostgreSQL resolves it as the request's role: its names carry their schema.
ENGINE_ROLE_EXPR = ("pg_catalog.num_nulls(pg_catalog.set_config('role', 'none', true),"
                    " pg_catalog.set_config('statement_timeout', '0', true))")
ENGINE_ROLE = Step(b"SELECT " + ENGINE_ROLE_EXPR.encode())

# the session is over: the connection holds none, and the reset may run (see sessdb._end_pooled)
_END_AND_RESET = b"SELECT set_config('sessdb.holds_session', '', false), sessdb._end_pooled($1)"

_WARM_UP = Step(b"SELECT sessdb._warm_up()")
# a spare's warm-up runs that many times, in one round trip: measured on bursts of 250 creations on
# new spares, PostgreSQL's CPU per creation fell from about 2.5 to 1.1 ms with four rounds instead of one
# (each round costs it about 0.3 ms more, when the spare is opened, off the requests' path)
WARM_UP_ROUNDS = 3

# a cancel is sent again after this many seconds while the call still runs, then twice as long each time
_CANCEL_AGAIN_FIRST, _CANCEL_AGAIN_MAX = 0.005, 0.5


def _escape_option(value: str) -> str:
    """A value for the startup packet's ``options``, where whitespace separates arguments unless
    a backslash escapes it (and a backslash is written as two)."""
    return re.sub(r"([\\\s])", r"\\\1", value)


class Backend:
    """A psycopg connection plus what the engine knows of it (pid, who uses it)."""

    def __init__(self, conn: psycopg.AsyncConnection) -> None:
        self._conn = conn
        self.pid: int = conn.info.backend_pid
        self.login: str = conn.info.user  # the role it logged in as
        self.on_notice: NoticeHandler | None = None
        self.cancelling: asyncio.Task[None] | None = None
        self._sending_cancel = False  # a cancel request is on its way to PostgreSQL
        self.cancels_sent = 0  # cancel requests sent, or attempted (for tests)
        self.running = False  # a request's statement is on the wire (see execute.run_call)
        self.wire = Wire(conn)  # the request pipelines and prepared statements (see execute.run_call)
        conn.add_notice_handler(self._notice)
        # HTTP variables bind as text (contract 3), not as psycopg's default 'unknown'
        conn.adapters.register_dumper(str, StrDumper)

    @classmethod
    async def open(cls, dsn: str, *, app_name: str = APP_NAME, connect_timeout: int = 10,
                   settings: tuple[tuple[str, str], ...] = ()) -> Backend:
        """Open a connection; raises ``psycopg.OperationalError`` when PostgreSQL is unreachable.

        ``settings`` are more session defaults for it (name, value), which take precedence over
        those of its database and role. The handshake runs off the event loop
        (``sessdb.libpq.connect``), so opening connections does not hold up the requests being served.
        """
        options = " ".join(f"-c {name}={_escape_option(value)}"
                           for name, value in (("search_path", SEARCH_PATH.replace(" ", "")), *settings))
        conninfo = make_conninfo(dsn, application_name=app_name, connect_timeout=connect_timeout, options=options)
        # no prepared statements of psycopg's own: a reset's DEALLOCATE ALL would pull them
        # from under it (the engine's pipelines keep theirs in Backend.wire.statements)
        conn = await libpq.connect(conninfo, autocommit=True, prepare_threshold=None, timeout=connect_timeout)
        return cls(conn)

    @property
    def conn(self) -> psycopg.AsyncConnection:
        """The psycopg connection, to use directly (the pipelines' socket reader steps aside)."""
        self.wire.detach()
        return self._conn

    def _notice(self, diag: psycopg.errors.Diagnostic) -> None:
        if self.on_notice is not None:
            try:
                self.on_notice(self, diag)
            except Exception:  # a handler bug must not break the connection
                log.exception("notice handler failed on backend %s", self.pid)

    @property
    def broken(self) -> bool:
        """True when the connection cannot be used again."""
        conn = self._conn
        return conn.closed or conn.broken or conn.pgconn.status == ConnStatus.BAD or self.wire.interrupted

    @property
    def status(self) -> TransactionStatus:
        """libpq's transaction status of the connection."""
        return TransactionStatus(self._conn.pgconn.transaction_status)

    async def reset(self, first: bytes = b"") -> bool:
        """Forget everything a user left on the connection; False when it is unusable.

        Temp tables, prepared statements, cursors, settings, roles, LISTENs and advisory locks
        are dropped, so nothing of one user is ever seen by the next (contract 5.9). ``first``
        is more SQL (ending in ``;``) sent in the same round trip.
        """
        if self.broken:
            return False
        try:
            if self.status == TransactionStatus.ACTIVE:
                return False
            if self.status != TransactionStatus.IDLE:
                await self.conn.execute("ROLLBACK")
            await self.conn.execute(first + _RESET)
        except psycopg.Error:
            return False
        finally:
            self.wire.statements.forget()  # DEALLOCATE ALL
        return self.status == TransactionStatus.IDLE

    async def reset_keeping_statements(self, first: bytes) -> bool:
        """The reset of a sessionless request (``sessdb._end_pooled``) for a connection that
        served a session which has ended: the engine's prepared statements stay, so the next
        request on it is served without preparing them again. ``first`` is one more statement
        run before, in the same transaction. False when the reset refused (a session authorization
        changed, statements PREPAREd in SQL) or failed: ``reset`` does it all then.
        """
        if self.broken or self.status != TransactionStatus.IDLE:
            return False
        try:
            results = await self.wire.run([ENGINE_ROLE, Step(first), Step(_END_AND_RESET, [self.login])])
        except psycopg.Error:
            return False
        return self.status == TransactionStatus.IDLE and self.wire.answered_true(results[-1], column=-1)

    async def warm_up(self) -> bool:
        """Make a new connection ready to create a session at once (``sessdb._warm_up``, run
        ``WARM_UP_ROUNDS`` times: a backend keeps getting faster over its first few creations).

        When the warm-up did not run to its end (an older schema, a timeout), whatever it left
        is reset. False when the connection is unusable: it is closed then, and also when
        interrupted, since it is nobody's yet.
        """
        try:
            results = await self.wire.run([_WARM_UP] * WARM_UP_ROUNDS)
            if all(self.wire.answered_true(r) for r in results) and self.status == TransactionStatus.IDLE:
                return True
            log.debug("connection %s was not warmed up: %s", self.pid,
                      next((e for e in map(self.wire.error_of, results) if e is not None), "it refused"))
            if await self.reset():
                return True
        except psycopg.Error as exc:
            log.debug("warming up connection %s failed: %s", self.pid, exc)
        except BaseException:
            await self.close()
            raise
        await self.close()
        return False

    async def rollback_if_needed(self) -> bool:
        """Roll back an open or failed transaction; False when the connection is unusable."""
        if self.broken:
            return False
        status = self.status
        if status == TransactionStatus.IDLE:
            return True
        if status in (TransactionStatus.INTRANS, TransactionStatus.INERROR):
            try:
                await self.conn.execute("ROLLBACK")
                return True
            except psycopg.Error:
                return False
        return False

    async def cancel(self) -> None:
        """Ask PostgreSQL to cancel the statement running on this connection, if any."""
        if not self.broken:
            with contextlib.suppress(Exception):
                await self._conn.cancel_safe(timeout=5)

    def cancel_soon(self) -> None:
        """Start cancelling the call on the wire; ``settle_cancel`` waits for it before the next statement.

        PostgreSQL ignores a cancel that reaches a backend waiting for a command, which it is
        until it has begun to read the request's pipeline (and, on a busy machine, for a while
        after the pipeline was sent): the statement would then run to its end. So the cancel is
        sent again, at growing intervals, for as long as the call runs (``running``).

        PostgreSQL cancels whatever runs when the request arrives, so a cancel meant for a
        statement that has just finished must not reach the next one: the backend is kept
        idle (where a cancel is ignored) until the cancel has been delivered.
        """
        if self.cancelling is None or self.cancelling.done():
            self.cancelling = asyncio.get_running_loop().create_task(self._cancel_while_running(),
                                                                     name="sessdb-cancel")

    async def _cancel_while_running(self) -> None:
        delay = _CANCEL_AGAIN_FIRST
        while True:
            self._sending_cancel = True
            try:
                await self.cancel()
            finally:
                self._sending_cancel = False
            self.cancels_sent += 1
            if not self.running or self.broken:
                return
            await asyncio.sleep(delay)  # settle_cancel ends the wait (no cancel is on its way then)
            if not self.running or self.broken:
                return
            delay = min(delay * 2, _CANCEL_AGAIN_MAX)

    async def settle_cancel(self) -> None:
        """Wait until no cancel started by ``cancel_soon`` can still reach the backend."""
        task = self.cancelling
        if task is None:
            return
        if not task.done():
            if not self._sending_cancel:
                task.cancel()  # it waits to send the cancel again: none is on its way
            await asyncio.wait([task])  # the caller may be cancelled meanwhile; the task goes on
        if self.cancelling is task:  # not one started meanwhile
            self.cancelling = None

    async def close(self) -> None:
        """Close the connection; never raises."""
        with contextlib.suppress(Exception):
            await self.conn.close()
