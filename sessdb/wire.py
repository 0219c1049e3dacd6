"""A libpq pipeline driven directly: several statements, one flush, one wait for the results.

psycopg's own pipeline mode costs a loop registration and several generator steps per
statement; a request's handful of statements is sent here with libpq's pipeline calls on
psycopg's ``pgconn`` and read back with one socket reader for the whole batch. Every
parameter goes as text (OID 25). Results come back raw (``PGresult``); ``load_rows`` turns a
result set into Python values with psycopg's own loaders.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import pq
from psycopg.adapt import Transformer

TEXT_OID = 25
ExecStatus = pq.ExecStatus


@dataclass(frozen=True)
class Step:
    """One statement of a pipeline; ``params`` None sends it without parameters."""

    sql: bytes
    params: Sequence[str | None] | None = None


async def run_pipeline(conn: psycopg.AsyncConnection[Any], steps: Sequence[Step]) -> list[pq.abc.PGresult | None]:
    """Send ``steps`` in one pipeline and return each step's last result, in order.

    A step after a failed one comes back with status ``PIPELINE_ABORTED``. Raises
    ``psycopg.OperationalError`` when the connection fails.
    """
    pgconn = conn.pgconn
    loop = asyncio.get_running_loop()
    fd = pgconn.socket
    readable = asyncio.Event()
    loop.add_reader(fd, readable.set)
    try:
        pgconn.enter_pipeline_mode()
        try:
            for step in steps:
                _send(pgconn, step)
            pgconn.pipeline_sync()
            await _flush(pgconn, loop, fd)
            return await _collect(pgconn, readable)
        finally:
            if pgconn.status == pq.ConnStatus.OK:
                pgconn.exit_pipeline_mode()
    finally:
        loop.remove_reader(fd)


def _send(pgconn: pq.abc.PGconn, step: Step) -> None:
    if step.params is None:
        pgconn.send_query_params(step.sql, None)
        return
    values = [None if v is None else v.encode("utf-8") for v in step.params]
    pgconn.send_query_params(step.sql, values, param_types=[TEXT_OID] * len(values))


async def _flush(pgconn: pq.abc.PGconn, loop: asyncio.AbstractEventLoop, fd: int) -> None:
    while pgconn.flush() == 1:
        writable = loop.create_future()
        loop.add_writer(fd, lambda: writable.done() or writable.set_result(None))
        try:
            await writable
        finally:
            loop.remove_writer(fd)


async def _collect(pgconn: pq.abc.PGconn, readable: asyncio.Event) -> list[pq.abc.PGresult | None]:
    results: list[pq.abc.PGresult | None] = []
    current: pq.abc.PGresult | None = None
    while True:
        pgconn.consume_input()
        while not pgconn.is_busy():
            res = pgconn.get_result()
            if res is None:
                results.append(current)  # the end of one statement's results
                current = None
                continue
            if res.status == ExecStatus.PIPELINE_SYNC:
                return results
            current = res
        readable.clear()
        await readable.wait()


def load_rows(conn: psycopg.AsyncConnection[Any], res: pq.abc.PGresult) -> tuple[list[str], list[tuple[Any, ...]]]:
    """Column names and rows of a result set, as psycopg would load them."""
    encoding = conn.info.encoding
    columns = [(res.fname(i) or b"").decode(encoding) for i in range(res.nfields)]
    tx = Transformer(conn)
    tx.set_pgresult(res)
    return columns, tx.load_rows(0, res.ntuples, tuple)


def load_rows_as_text(conn: psycopg.AsyncConnection[Any], res: pq.abc.PGresult) -> tuple[list[str], list[tuple[Any, ...]]]:
    """Column names and rows of a result set with every value as PostgreSQL's text (or None)."""
    encoding = conn.info.encoding
    columns = [(res.fname(i) or b"").decode(encoding) for i in range(res.nfields)]
    rows = []
    for r in range(res.ntuples):
        values = (res.get_value(r, c) for c in range(res.nfields))
        rows.append(tuple(None if v is None else bytes(v).decode(encoding, "replace") for v in values))
    return columns, rows


def error_of(conn: psycopg.AsyncConnection[Any], res: pq.abc.PGresult | None) -> psycopg.Error | None:
    """The error a result carries, or None for a successful one."""
    if res is None:
        return None
    if res.status == ExecStatus.FATAL_ERROR:
        return psycopg.errors.error_from_result(res, encoding=conn.info.encoding)
    if res.status == ExecStatus.PIPELINE_ABORTED:
        return psycopg.errors.PipelineAborted("pipeline aborted")
    return None
