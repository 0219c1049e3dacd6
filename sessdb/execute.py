"""Running one ``Call`` on one backend, in one transaction, in one network round trip.

The request is one libpq pipeline: the settings of the request context (and the request's role
and timeout), the statement, then for the engine's requests ``SET CONSTRAINTS ALL IMMEDIATE``
(deferred triggers fire as the request's role), the reset of role and timeout, and a read of
PostgREST's ``response.*`` settings with the engine's bookkeeping, which for a sessionless
request ends with the reset of the connection (``sessdb._end_pooled``). A session request
without a timeout makes the role reset part of that last step (see ``_steps``). Statements
sent together up to a Sync run in one implicit transaction: it commits at the Sync when all
succeeded and rolls back when one failed, so the request needs no BEGIN or COMMIT of its own.
Events the ``sessdb`` functions raise while the statement runs (``sessdb-event`` notices) are
collected in order.

Every statement, the service's included, runs as a named prepared statement of its connection
(``wire.Statements``): PostgreSQL parses and plans it once per connection, not per request.
"""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg import pq
from psycopg.pq import TransactionStatus

from sessdb.connection import ENGINE_ROLE, ENGINE_ROLE_EXPR, Backend
from sessdb.wire import FAILED_STATUSES, ExecStatus, Step, Wire
from sessdb.plan import Call

log = logging.getLogger("sessdb.execute")

EVENT_MESSAGE = "sessdb-event"
EventHandler = Callable[[dict[str, Any]], None]


@dataclass
class Ticket:
    """A request's claim on its call: ``abandoned`` once its client has gone away.

    A ticket is ``guarded`` when the HTTP connection tells it that the client left (see
    ``web.protocol``) instead of cancelling the handler: the call then runs in the handler's
    own task, with no task of its own, and ``shielded`` while it must not be interrupted.
    """

    abandoned: bool = False
    guarded: bool = False
    shielded: bool = False
    backend: Backend | None = None

    def client_left(self) -> None:
        """The client went away: a statement not yet sent is not sent, one running is cancelled."""
        self.abandoned = True
        if self.backend is not None and self.backend.running:
            self.backend.cancel_soon()


@dataclass
class Outcome:
    """What a call produced: rows, or an error; plus the response changes it asked for."""

    columns: list[str] = field(default_factory=list)
    rows: list[tuple[Any, ...]] = field(default_factory=list)
    error: psycopg.Error | None = None
    pgrst_headers: str | None = None
    pgrst_status: str | None = None
    committed: bool = False
    clean: bool = False  # the connection was reset by the request itself (see sessdb._end_pooled)
    last_value: str | None = None  # the last value of the engine's last step, committed (a session's bookkeeping)


@functools.lru_cache(maxsize=64)
def _settings_sql(names: tuple[str, ...]) -> bytes:
    """``SELECT num_nulls(set_config('a', $1, true), ...)`` for these names (the engine's own),
    both from ``pg_catalog`` by name: a session's statement may have SET a role for good, whose
    own schema is then on the search path.

    ``num_nulls`` evaluates every argument and answers one number: the values set (the request
    context among them) do not come back over the wire, about 7 us of PostgreSQL's CPU a request
    less than a row of them. (``ROW(...) IS NULL`` would not do: PostgreSQL splits it into tests
    that stop at the first value that is not NULL.)
    """
    parts = [f"pg_catalog.set_config('{name}', ${i}, true)" for i, name in enumerate(names, 1)]
    return ("SELECT pg_catalog.num_nulls(" + ", ".join(parts) + ")").encode()


def _settings(call: Call, statement_timeout_ms: int | None,
              extra: list[tuple[str, str]]) -> tuple[bytes, list[str]]:
    pairs = [*call.settings, *extra]
    if call.role is not None:
        pairs.append(("role", call.role))
    if statement_timeout_ms:
        pairs.append(("statement_timeout", str(statement_timeout_ms)))
    names, values = zip(*pairs, strict=True)
    return _settings_sql(names), list(values)


_READ_PGRST = ("SELECT pg_catalog.current_setting('response.headers', true),"
               " pg_catalog.current_setting('response.status', true)")


async def run_call(backend: Backend, call: Call, ticket: Ticket | None = None, *, on_event: EventHandler | None = None,
                   statement_timeout_ms: int | None = None, extra_settings: list[tuple[str, str]] | None = None,
                   before_commit: tuple[str, list[Any]] | None = None, any_role_names: bool = False,
                   end_request: bool = False) -> Outcome:
    """Run ``call`` in its own transaction on ``backend``; never raises for SQL errors.

    ``extra_settings`` are more transaction-local settings; ``before_commit`` is a select list
    (text with ``$n`` placeholders, possibly empty, and params) evaluated after the service statement, inside its
    transaction, as the engine's role. ``any_role_names`` says that the select list names only
    what every role may use (PostgreSQL's functions, schema ``sessdb_request``), each with its
    schema: its step may then be prepared with the request's role in force, and that role's
    search path, and reset the role itself (see ``_steps``).
    ``end_request`` resets a sessionless connection in the same round trip (``Outcome.clean``).
    A SQL error is returned in ``Outcome.error`` after the rollback. Connection failures
    (``psycopg.OperationalError``) are returned the same way; the caller checks
    ``backend.broken``. Cancellation propagates (the caller cancels the statement first).
    """
    outcome = Outcome()
    await backend.settle_cancel()
    if ticket is not None and ticket.abandoned:
        outcome.error = psycopg.errors.QueryCanceled("the client went away before the statement was sent")
        return outcome
    backend.on_notice = _notice_router(on_event) if on_event else None
    reset_as = backend.login if end_request else None
    steps = _steps(call, statement_timeout_ms, extra_settings or [], before_commit, reset_as,
                   fold_reset=any_role_names and reset_as is None and not statement_timeout_ms)
    backend.running = True
    try:
        for attempt in (1, 2):
            results = await backend.wire.run(steps)
            failed = _any_failed(results)
            if failed and attempt == 1 and _stale_statement(backend, call, results) \
                    and not (ticket and ticket.abandoned):
                continue  # nothing of the request ran: send it again with fresh statements
            _settle(backend.wire, outcome, results, end_request, failed)
            break
    except psycopg.Error as exc:
        outcome.error = exc
    finally:
        backend.running = False
        backend.on_notice = None
    await backend.settle_cancel()  # a late cancel must not hit the COMMIT or the rollback below
    if outcome.committed and backend.status == TransactionStatus.INTRANS:
        await _commit_left_open(backend, outcome)
    if not outcome.committed:
        await backend.rollback_if_needed()
    return outcome


async def _commit_left_open(backend: Backend, outcome: Outcome) -> None:
    """The statement opened a transaction block (``BEGIN``), which the Sync leaves open: it is
    committed, as the work of every request is, so that nothing of it reaches the next one."""
    try:
        await backend.conn.execute("COMMIT")
    except psycopg.Error as exc:
        outcome.error, outcome.committed, outcome.clean = exc, False, False


def _steps(call: Call, statement_timeout_ms: int | None, extra_settings: list[tuple[str, str]],
           before_commit: tuple[str, list[Any]] | None, reset_as: str | None, *,
           fold_reset: bool = False) -> list[Step]:
    """The request's pipeline: settings, statement, then either the pgrst read alone or
    ``SET CONSTRAINTS``, the reset of role and timeout (``ENGINE_ROLE``), and the pgrst read with
    ``before_commit``'s select list; for a sessionless request, the read ends with the reset of
    the connection (``sessdb._end_pooled``).

    ``reset_as`` is the engine's login role, given when the connection is to be reset.
    ``fold_reset`` leaves out the step that resets the role and the statement timeout before the
    last one: the last step resets them itself, after its pgrst read and before its select list
    runs. PostgreSQL then prepares that step with the request's role in force, so its names must
    be ones every role may use, with their schema (a role's own "$user" schema is on the search
    path, and an object there that fits the arguments better than pg_catalog's would be chosen).
    The engine sets no statement timeout then; one the statement or the database set still
    applies to that step, as it does to the statement.
    """
    settings_sql, settings_values = _settings(call, statement_timeout_ms, extra_settings)
    steps = [Step(settings_sql, settings_values), Step(call.sql.encode(), call.params)]
    if before_commit is None:
        steps.append(_READ_PGRST_STEP)
        return steps
    # deferred constraints are checked now, as at the commit (the request's settings, role and
    # timeout), so that the bookkeeping and the reset see what their triggers did
    steps.append(_FIRE_DEFERRED)
    if not fold_reset:
        steps.append(ENGINE_ROLE)  # the bookkeeping and the reset run as the engine's login
    select, params = before_commit
    reset_param = 0
    if reset_as is not None:
        params = [*params, reset_as]
        reset_param = len(params)
    steps.append(Step(_tail_sql(select, reset_param, fold_reset), params))
    return steps


@functools.lru_cache(maxsize=16)
def _tail_sql(select: str, reset_param: int, fold_reset: bool = False) -> bytes:
    """The last step's SQL: the pgrst read, the reset of role and timeout when ``fold_reset``,
    the engine's ``select`` list (if any), and the reset of the connection
    (``sessdb._end_pooled``) as the login in ``$reset_param`` unless that is 0.

    PostgreSQL evaluates a select list in order: the pgrst read comes before the reset, and
    the reset before anything of the engine's."""
    parts = [_READ_PGRST]
    if fold_reset:
        parts.append(ENGINE_ROLE_EXPR)
    if select:
        parts.append(select)
    sql = ", ".join(parts)
    if reset_param:
        # a request that created a session keeps the connection: the reset would refuse, so it
        # is not called (about 20 us of PostgreSQL's CPU a creation, on a connection seldom used)
        sql += (f", CASE WHEN current_setting('sessdb.holds_session', true) = '1' THEN false"
                f" ELSE sessdb._end_pooled(${reset_param}) END")
    return sql.encode()


_STATEMENT_STEP = 1


def _stale_statement(backend: Backend, call: Call, results: list[Any]) -> bool:
    """True when a prepared statement failed before the service statement ran, and was dropped.

    The engine's statements are gone after a ``DEALLOCATE ALL`` (26000, naming one of them),
    and the service statement's plan no longer fits after its tables changed (0A000, "cached
    plan must not change result type"). Only such an error of the Bind itself counts: it has
    no context (one raised while a statement runs names where it came from), it comes at or
    before the service statement's own step, before that executes, and the transaction
    rolled back with nothing done.
    """
    for index, res in enumerate(results[:_STATEMENT_STEP + 1]):
        if res is None or res.status != ExecStatus.FATAL_ERROR:
            continue
        if res.error_field(pq.DiagnosticField.CONTEXT):
            return False  # raised while a statement ran, not by the Bind
        if _names_own_statement(res):
            backend.wire.statements.forget()
            return True
        message = res.error_field(pq.DiagnosticField.MESSAGE_PRIMARY) or b""
        if index == _STATEMENT_STEP and res.error_field(pq.DiagnosticField.SQLSTATE) == b"0A000" \
                and b"cached plan" in message:
            backend.wire.statements.discard(call.sql.encode())
            return True
        return False
    if any(_names_own_statement(r) for r in results):
        backend.wire.statements.forget()  # after the statement: this request failed, the next one re-prepares
    return False


def _names_own_statement(res: Any) -> bool:
    """True for an error saying that one of the engine's prepared statements does not exist."""
    return (res is not None and res.status == ExecStatus.FATAL_ERROR
            and res.error_field(pq.DiagnosticField.SQLSTATE) == b"26000"
            and b'"_sessdb_' in (res.error_field(pq.DiagnosticField.MESSAGE_PRIMARY) or b""))


def _any_failed(results: list[Any]) -> bool:
    """True when a step failed, or was skipped after one that did."""
    return any(res is not None and res.status in FAILED_STATUSES for res in results)


def _settle(wire: Wire, outcome: Outcome, results: list[Any], end_request: bool, failed: bool) -> None:
    """Fill ``outcome`` from the pipeline's results (see ``_steps`` for their order)."""
    if failed:
        errors = [e for e in (wire.error_of(r) for r in results) if e is not None]
        real = [e for e in errors if not isinstance(e, psycopg.errors.PipelineAborted)]
        outcome.error = (real or errors)[0]
        return
    outcome.committed = True
    statement = results[1]
    if statement is not None and statement.status == ExecStatus.TUPLES_OK:
        try:
            outcome.columns, outcome.rows = wire.load_rows(statement)
        except (psycopg.DataError, ValueError, OverflowError):
            # committed, but a value Python cannot hold (a date 'infinity', a huge interval):
            # answer with PostgreSQL's own text for every value rather than a false failure
            outcome.columns, outcome.rows = wire.load_rows_as_text(statement)
    tail = results[-1]
    if tail is not None and tail.ntuples:
        outcome.pgrst_headers = _text(tail.get_value(0, 0))
        outcome.pgrst_status = _text(tail.get_value(0, 1))
        outcome.last_value = _text(tail.get_value(0, tail.nfields - 1))
    # the reset answers true, or false when it refused (see sessdb._end_pooled)
    outcome.clean = end_request and wire.answered_true(tail, column=-1)


def _text(value: bytes | None) -> str | None:
    return None if value is None else value.decode("utf-8")


_READ_PGRST_STEP = Step(_READ_PGRST.encode())
_FIRE_DEFERRED = Step(b"SET CONSTRAINTS ALL IMMEDIATE")


def _notice_router(on_event: EventHandler):  # type: ignore[no-untyped-def]
    def route(backend: Backend, diag: psycopg.errors.Diagnostic) -> None:
        if diag.message_primary != EVENT_MESSAGE or not diag.message_detail:
            return
        try:
            event = json.loads(diag.message_detail)
        except ValueError:
            return
        if isinstance(event, dict):
            on_event(event)

    return route
