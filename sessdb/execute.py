"""Running one ``Call`` on one backend, in one transaction, in one network round trip.

The transaction is pipelined: ``BEGIN``, the settings of the request context, the statement,
a read of PostgREST's ``response.*`` settings, and ``COMMIT``. When the statement fails the
pipeline aborts and the transaction is rolled back. Events the ``sessdb`` functions raise
while the statement runs (``sessdb-event`` notices) are collected in order.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg import sql

from sessdb.connection import TEXT_NULL, Backend
from sessdb.plan import Call

log = logging.getLogger("sessdb.execute")

EVENT_MESSAGE = "sessdb-event"
EventHandler = Callable[[dict[str, Any]], None]


@dataclass
class Outcome:
    """What a call produced: rows, or an error; plus the response changes it asked for."""

    columns: list[str] = field(default_factory=list)
    rows: list[tuple[Any, ...]] = field(default_factory=list)
    error: psycopg.Error | None = None
    pgrst_headers: str | None = None
    pgrst_status: str | None = None
    committed: bool = False


def _settings_query(call: Call, statement_timeout_ms: int | None,
                    extra: list[tuple[str, str]]) -> tuple[sql.Composed, list[str]]:
    names = [name for name, _ in call.settings] + [name for name, _ in extra]
    values = [value for _, value in call.settings] + [value for _, value in extra]
    if call.role is not None:
        names.append("role")
        values.append(call.role)
    if statement_timeout_ms:
        names.append("statement_timeout")
        values.append(str(statement_timeout_ms))
    parts = [sql.SQL("set_config({}, %s, true)").format(sql.Literal(n)) for n in names]
    return sql.SQL("SELECT ").join([sql.SQL(""), sql.SQL(", ").join(parts)]), values


async def run_call(backend: Backend, call: Call, *, on_event: EventHandler | None = None,
                   statement_timeout_ms: int | None = None, extra_settings: list[tuple[str, str]] | None = None,
                   before_commit: tuple[str, list[Any]] | None = None) -> Outcome:
    """Run ``call`` in its own transaction on ``backend``; never raises for SQL errors.

    ``extra_settings`` are more transaction-local settings; ``before_commit`` is a statement
    (text, params) run after the service statement, inside its transaction.
    A SQL error is returned in ``Outcome.error`` after the rollback. Connection failures
    (``psycopg.OperationalError``) are returned the same way; the caller checks
    ``backend.broken``. Cancellation propagates (the caller cancels the statement first).
    """
    outcome = Outcome()
    await backend.settle_cancel()
    backend.on_notice = _notice_router(on_event) if on_event else None
    conn = backend.conn
    settings_query, settings_values = _settings_query(call, statement_timeout_ms, extra_settings or [])
    cursor = psycopg.AsyncRawCursor(conn)
    try:
        async with conn.pipeline():
            await conn.execute("BEGIN")
            await conn.execute(settings_query, settings_values)
            await cursor.execute(call.sql, [TEXT_NULL if p is None else p for p in call.params])
            pgrst = await conn.execute(
                "SELECT current_setting('response.headers', true), current_setting('response.status', true)"
            )
            if before_commit is not None:
                if call.role is not None:
                    await conn.execute("RESET ROLE")  # the engine's own bookkeeping runs as the engine
                await conn.execute(before_commit[0], before_commit[1])
            await conn.execute("COMMIT")
        outcome.committed = True
        if cursor.description is not None:
            outcome.columns = [c.name for c in cursor.description]
            outcome.rows = await cursor.fetchall()
        outcome.pgrst_headers, outcome.pgrst_status = await pgrst.fetchone() or (None, None)
    except psycopg.Error as exc:
        outcome.error = exc
        await backend.rollback_if_needed()
    finally:
        backend.on_notice = None
    return outcome


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
