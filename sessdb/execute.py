"""Running one ``Call`` on one backend, in one transaction, in one network round trip.

The transaction is pipelined: ``BEGIN``, the settings of the request context, the statement,
a read of PostgREST's ``response.*`` settings, and ``COMMIT``. When the statement fails the
pipeline aborts and the transaction is rolled back. Events the ``sessdb`` functions raise
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


async def run_call(backend: Backend, call: Call, *, on_event: EventHandler | None = None,
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
    backend.on_notice = _notice_router(on_event) if on_event else None
    conn = backend.conn
    settings_sql, settings_values = _settings(call, statement_timeout_ms, extra_settings or [])
    cursor = psycopg.AsyncRawCursor(conn)
    tail = psycopg.AsyncRawCursor(conn)
    backend.running = True
    try:
        async with conn.pipeline():
            await conn.execute("BEGIN")
            await tail.execute(settings_sql, settings_values)
            await cursor.execute(call.sql, [TEXT_NULL if p is None else p for p in call.params])
            if before_commit is None:
                await tail.execute(_READ_PGRST)
            else:
                if call.role is not None:
                    await conn.execute("RESET ROLE")  # the engine's own bookkeeping runs as the engine
                await tail.execute(f"{_READ_PGRST}, {before_commit[0]}", before_commit[1])
            await conn.execute("COMMIT")
            if end_request:
                ended = await conn.execute("SELECT sessdb._end_request()")
        outcome.committed = True
        if end_request:
            row = await ended.fetchone()
            outcome.clean = bool(row and row[0])
        if cursor.description is not None:
            outcome.columns = [c.name for c in cursor.description]
            outcome.rows = await cursor.fetchall()
        row = await tail.fetchone()
        if row is not None:
            outcome.pgrst_headers, outcome.pgrst_status = row[0], row[1]
    except psycopg.Error as exc:
        outcome.error = exc
        await backend.rollback_if_needed()
    finally:
        backend.running = False
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
