"""Running one ``Call`` on one backend, in one transaction, in one network round trip.

The request is one libpq pipeline: the settings of the request context, the statement, a read
of PostgREST's ``response.*`` settings (with the engine's bookkeeping) and, for a sessionless
request, the reset of the connection. Statements sent together up to a Sync run in one implicit
transaction: it commits at the Sync when all succeeded and rolls back when one failed, so the
request needs no BEGIN or COMMIT of its own. Events the ``sessdb`` functions raise
while the statement runs (``sessdb-event`` notices) are collected in order.
"""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import psycopg

from sessdb.connection import Backend
from sessdb.wire import ExecStatus, Step, error_of, load_rows, load_rows_as_text, run_pipeline
from sessdb.plan import Call

log = logging.getLogger("sessdb.execute")

EVENT_MESSAGE = "sessdb-event"
EventHandler = Callable[[dict[str, Any]], None]


@dataclass
class Ticket:
    """A request's claim on its call: ``abandoned`` once its client has gone away."""

    abandoned: bool = False


@dataclass
class Outcome:
    """What a call produced: rows, or an error; plus the response changes it asked for."""

    columns: list[str] = field(default_factory=list)
    rows: list[tuple[Any, ...]] = field(default_factory=list)
    error: psycopg.Error | None = None
    pgrst_headers: str | None = None
    pgrst_status: str | None = None
    committed: bool = False
    clean: bool = False  # the connection was reset after the commit (see sessdb._end_request)


@functools.lru_cache(maxsize=64)
def _settings_sql(names: tuple[str, ...]) -> str:
    """``SELECT set_config('a', $1, true), ...`` for these names (the names are the engine's own)."""
    parts = [f"set_config('{name}', ${i}, true)" for i, name in enumerate(names, 1)]
    return "SELECT " + ", ".join(parts)


def _settings(call: Call, statement_timeout_ms: int | None,
              extra: list[tuple[str, str]]) -> tuple[str, list[str]]:
    pairs = list(call.settings) + extra
    if call.role is not None:
        pairs.append(("role", call.role))
    if statement_timeout_ms:
        pairs.append(("statement_timeout", str(statement_timeout_ms)))
    return _settings_sql(tuple(name for name, _ in pairs)), [value for _, value in pairs]


_READ_PGRST = "SELECT current_setting('response.headers', true), current_setting('response.status', true)"


async def run_call(backend: Backend, call: Call, ticket: Ticket | None = None, *, on_event: EventHandler | None = None,
                   statement_timeout_ms: int | None = None, extra_settings: list[tuple[str, str]] | None = None,
                   before_commit: tuple[str, list[Any]] | None = None, end_request: bool = False) -> Outcome:
    """Run ``call`` in its own transaction on ``backend``; never raises for SQL errors.

    ``extra_settings`` are more transaction-local settings; ``before_commit`` is a select list
    (text with ``$n`` placeholders, params) evaluated after the service statement, inside its
    transaction, as the engine's role. ``end_request`` resets a sessionless connection in the
    same round trip (``Outcome.clean``).
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
    conn = backend.conn
    settings_sql, settings_values = _settings(call, statement_timeout_ms, extra_settings or [])
    steps = [Step(settings_sql.encode(), settings_values), Step(call.sql.encode(), call.params)]
    if before_commit is None:
        steps.append(_READ_PGRST_STEP)
    else:
        if call.role is not None:
            steps.append(_RESET_ROLE)  # the engine's own bookkeeping runs as the engine
        steps.append(Step(f"{_READ_PGRST}, {before_commit[0]}".encode(), before_commit[1]))
    if end_request:
        steps.append(_END_REQUEST)
    backend.running = True
    try:
        results = await run_pipeline(conn, steps)
        _settle(conn, outcome, results, end_request)
    except psycopg.Error as exc:
        outcome.error = exc
    finally:
        backend.running = False
        backend.on_notice = None
    if not outcome.committed:
        await backend.settle_cancel()  # a late cancel must not hit the rollback
        await backend.rollback_if_needed()
    return outcome


def _settle(conn: psycopg.AsyncConnection[Any], outcome: Outcome, results: list[Any], end_request: bool) -> None:
    """Fill ``outcome`` from the pipeline's results (see ``run_call`` for their order)."""
    errors = [e for e in (error_of(conn, r) for r in results) if e is not None]
    if errors:
        real = [e for e in errors if not isinstance(e, psycopg.errors.PipelineAborted)]
        outcome.error = (real or errors)[0]
        return
    outcome.committed = True
    statement = results[1]
    if statement is not None and statement.status == ExecStatus.TUPLES_OK:
        try:
            outcome.columns, outcome.rows = load_rows(conn, statement)
        except (psycopg.DataError, ValueError, OverflowError):
            # committed, but a value Python cannot hold (a date 'infinity', a huge interval):
            # answer with PostgreSQL's own text for every value rather than a false failure
            outcome.columns, outcome.rows = load_rows_as_text(conn, statement)
    tail = results[_tail_index(results, end_request)]
    if tail is not None and tail.ntuples:
        outcome.pgrst_headers = _text(tail.get_value(0, 0))
        outcome.pgrst_status = _text(tail.get_value(0, 1))
    if end_request:
        ended = results[-1]
        outcome.clean = ended is not None and ended.get_value(0, 0) == b"t"


def _tail_index(results: list[Any], end_request: bool) -> int:
    """The pgrst/sync step: the last one, or just before the end-request step."""
    return len(results) - (2 if end_request else 1)


def _text(value: bytes | None) -> str | None:
    return None if value is None else value.decode("utf-8")


_RESET_ROLE = Step(b"RESET ROLE")
_END_REQUEST = Step(b"SELECT sessdb._end_request()")
_READ_PGRST_STEP = Step(_READ_PGRST.encode())


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
