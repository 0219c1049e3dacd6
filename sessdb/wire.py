"""A libpq pipeline driven directly: several statements, one flush, one wait for the results.

psycopg's own pipeline mode costs a loop registration and several generator steps per
statement; a request's handful of statements is sent here with libpq's pipeline calls on
psycopg's ``pgconn`` and read back with one socket reader for the whole batch. Every
parameter goes as text (OID 25). Results come back raw (``PGresult``); ``load_rows`` turns a
result set into Python values with psycopg's own loaders.

The steps run in one implicit transaction, which the pipeline's one Sync ends. Each step runs
as a named prepared statement of the connection (its ``Statements``): parsed and planned by
PostgreSQL once per connection instead of once per request. The names are the engine's own
(``_sessdb_<n>``); a statement's Parse goes in the same pipeline as its first use, so preparing
costs no round trip.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
from collections.abc import Sequence
from typing import Any, NamedTuple

import psycopg
from psycopg import pq
from psycopg.adapt import Transformer

TEXT_OID = 25
ExecStatus = pq.ExecStatus
# a step that failed, or was skipped after one that did (see Wire.error_of)
FAILED_STATUSES = frozenset({int(ExecStatus.FATAL_ERROR), int(ExecStatus.PIPELINE_ABORTED)})


class Step(NamedTuple):
    """One statement of a pipeline, run as a named prepared statement of the connection (see
    ``Statements``); ``params`` None sends it without parameters."""

    sql: bytes
    params: Sequence[str | None] | None = None


class Statements:
    """The named prepared statements the engine made on one connection: SQL text to name.

    At most ``limit`` are kept; the least recently used is closed (in the next pipeline)
    when more are needed. ``forget`` is for when PostgreSQL dropped them (``DEALLOCATE
    ALL``): names are never reused, so a statement left behind cannot be taken for another.
    """

    def __init__(self, limit: int = 100) -> None:
        self.limit = limit
        self._names: collections.OrderedDict[bytes, bytes] = collections.OrderedDict()
        self._to_close: list[bytes] = []
        self._counter = 0

    def name_of(self, sql: bytes) -> bytes | None:
        """The name ``sql`` is prepared under, or None."""
        name = self._names.get(sql)
        if name is not None:
            self._names.move_to_end(sql)
        return name

    def new_name(self) -> bytes:
        """A name no statement of this connection has had."""
        self._counter += 1
        return b"_sessdb_%d" % self._counter

    def add(self, sql: bytes, name: bytes) -> None:
        """Record that ``sql`` is now prepared as ``name``; schedule the oldest for closing."""
        self._names[sql] = name
        while len(self._names) > self.limit:
            _, old = self._names.popitem(last=False)
            self._to_close.append(old)

    def discard(self, sql: bytes) -> None:
        """Stop using the statement for ``sql`` (its plan no longer fits); it is closed later."""
        name = self._names.pop(sql, None)
        if name is not None:
            self._to_close.append(name)

    def take_closing(self) -> list[bytes]:
        """The names to close in the next pipeline."""
        names, self._to_close = self._to_close, []
        return names

    def forget(self) -> None:
        """PostgreSQL no longer has any of them."""
        self._names.clear()
        self._to_close.clear()


class Wire:
    """One connection's pipelines, plus what they keep between requests.

    The socket's reader stays registered from one pipeline to the next (two ``epoll_ctl``
    calls fewer per request). Whoever uses the psycopg connection itself must ``detach``
    first (``Backend.conn`` does), since psycopg registers and removes its own reader. Data
    that arrives between pipelines (a notice, the end of the connection) is read at once so
    that it does not wake the event loop again. Rows are loaded with one psycopg
    ``Transformer`` per connection and client encoding.
    """

    def __init__(self, conn: psycopg.AsyncConnection[Any]) -> None:
        self.conn = conn
        self.statements = Statements()
        self._fd: int | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._waiting = False  # a pipeline is out
        self._waiter: asyncio.Future[None] | None = None  # its reader waits for the socket
        self._transformer: tuple[str, Transformer] | None = None
        self._encoding: tuple[bytes | None, str] | None = None
        self.interrupted = False  # a pipeline ended before all its results were read

    def detach(self) -> None:
        """Give the socket back to psycopg: remove the reader, if registered."""
        if self._fd is not None and self._loop is not None:
            with contextlib.suppress(Exception):
                self._loop.remove_reader(self._fd)
        self._fd = None

    def _attach(self, pgconn: pq.abc.PGconn) -> asyncio.AbstractEventLoop:
        loop = asyncio.get_running_loop()
        if self._fd is None or self._loop is not loop:
            self.detach()
            fd = pgconn.socket
            self._loop = loop
            loop.add_reader(fd, self._on_readable)
            self._fd = fd
        return loop

    def _on_readable(self) -> None:
        if self._waiting:
            # a pipeline is out: wake its reader, if it waits (the socket stays readable until
            # read, so a readiness seen while it does not wait comes again)
            waiter = self._waiter
            if waiter is not None and not waiter.done():
                waiter.set_result(None)
            return
        pgconn = self.conn.pgconn
        with contextlib.suppress(psycopg.Error):
            pgconn.consume_input()  # unasked data: read it, so that the socket is quiet again
        if pgconn.status != pq.ConnStatus.OK:
            self.detach()

    async def run(self, steps: Sequence[Step]) -> list[pq.abc.PGresult | None]:
        """Send ``steps`` in one pipeline and return each step's last result, in order.

        A step after a failed one comes back with status ``PIPELINE_ABORTED``. Raises
        ``psycopg.OperationalError`` when the connection fails.
        """
        pgconn = self.conn.pgconn
        loop = self._attach(pgconn)
        self._waiting = True
        try:
            pgconn.enter_pipeline_mode()
            try:
                extra = _send_all(pgconn, steps, self.statements)
                pgconn.pipeline_sync()
                if pgconn.flush() == 1:
                    await _flush(pgconn, loop, self._fd)
                results = await self._collect(pgconn, loop, len(steps) + len(extra))
            except BaseException:
                self.interrupted = True  # results may be pending: the connection cannot be used again
                raise
            pgconn.exit_pipeline_mode()
        except BaseException:
            self.detach()  # a failed or interrupted pipeline: let psycopg see the socket as it is
            raise
        finally:
            self._waiting = False
            self._waiter = None
        if not extra:
            return results
        return _own_results(results, extra, self.statements)

    async def _collect(self, pgconn: pq.abc.PGconn, loop: asyncio.AbstractEventLoop,
                       size: int) -> list[pq.abc.PGresult | None]:
        """The last result of each of the ``size`` commands before the Sync.

        An error at the Sync itself (a commit that fails: a deferred constraint, a
        serialization failure) stands as the result of the last command, so that positions
        stay those of the commands.
        """
        results: list[pq.abc.PGresult | None] = []
        current: pq.abc.PGresult | None = None
        while True:
            pgconn.consume_input()
            while not pgconn.is_busy():
                res = pgconn.get_result()
                if res is None:
                    results.append(current)  # the end of one statement's results
                    current = None
                elif res.status != ExecStatus.PIPELINE_SYNC:
                    current = res
                else:
                    return _trimmed(results, size, current)
            self._waiter = loop.create_future()
            await self._waiter

    @property
    def encoding(self) -> str:
        """The Python name of the connection's client encoding (a session may change it)."""
        raw = self.conn.pgconn.parameter_status(b"client_encoding")
        if self._encoding is None or self._encoding[0] != raw:
            self._encoding = (raw, self.conn.info.encoding)
        return self._encoding[1]

    def load_rows(self, res: pq.abc.PGresult) -> tuple[list[str], list[tuple[Any, ...]]]:
        """Column names and rows of a result set, as psycopg would load them."""
        encoding = self.encoding
        columns = [(res.fname(i) or b"").decode(encoding) for i in range(res.nfields)]
        if self._transformer is None or self._transformer[0] != encoding:
            self._transformer = (encoding, Transformer(self.conn))
        tx = self._transformer[1]
        tx.set_pgresult(res)
        return columns, tx.load_rows(0, res.ntuples, tuple)

    def load_rows_as_text(self, res: pq.abc.PGresult) -> tuple[list[str], list[tuple[Any, ...]]]:
        """Column names and rows of a result set with every value as PostgreSQL's text (or None)."""
        encoding = self.encoding
        columns = [(res.fname(i) or b"").decode(encoding) for i in range(res.nfields)]
        rows = []
        for r in range(res.ntuples):
            values = (res.get_value(r, c) for c in range(res.nfields))
            rows.append(tuple(None if v is None else bytes(v).decode(encoding, "replace") for v in values))
        return columns, rows

    def error_of(self, res: pq.abc.PGresult | None) -> psycopg.Error | None:
        """The error a result carries, or None for a successful one."""
        if res is None or res.status not in FAILED_STATUSES:
            return None
        if res.status == ExecStatus.FATAL_ERROR:
            return psycopg.errors.error_from_result(res, encoding=self.encoding)
        return psycopg.errors.PipelineAborted("pipeline aborted")

    def answered_true(self, res: pq.abc.PGresult | None, column: int = 0) -> bool:
        """True for a successful result of one row whose value in ``column`` (-1: the last) is ``true``."""
        if res is None or self.error_of(res) is not None or res.ntuples != 1 or not res.nfields:
            return False
        return res.get_value(0, column % res.nfields) == b"t"


def _send_all(pgconn: pq.abc.PGconn, steps: Sequence[Step],
              statements: Statements) -> dict[int, tuple[bytes, bytes] | None]:
    """Send every step, but not the Sync.

    Returns the commands sent besides the steps, by position ((sql, name) of a Parse, None
    of a Close).
    """
    extra: dict[int, tuple[bytes, bytes] | None] = {}
    for name in statements.take_closing():
        extra[len(extra)] = None
        pgconn.send_close_prepared(name)
    sent = len(extra)
    for step in steps:
        values = None if step.params is None else [None if v is None else v.encode("utf-8") for v in step.params]
        name = statements.name_of(step.sql)
        if name is None:
            name = statements.new_name()
            extra[sent] = (step.sql, name)
            sent += 1
            pgconn.send_prepare(name, step.sql, param_types=None if values is None else [TEXT_OID] * len(values))
        pgconn.send_query_prepared(name, values)
        sent += 1
    return extra


def _own_results(results: list[pq.abc.PGresult | None], extra: dict[int, tuple[bytes, bytes] | None],
                 statements: Statements) -> list[pq.abc.PGresult | None]:
    """The steps' results without those of the Parse and Close commands; records what got prepared.

    A failed Parse (a syntax error) stands as the result of its step, which it aborted.
    """
    own = []
    failed_parse = None
    for index, res in enumerate(results):
        if index not in extra:
            own.append(failed_parse or res)
            failed_parse = None
            continue
        parsed = extra[index]
        if parsed is None or res is None:
            continue
        if res.status == ExecStatus.COMMAND_OK:
            statements.add(*parsed)
        elif res.status == ExecStatus.FATAL_ERROR:
            failed_parse = res
    return own


async def _flush(pgconn: pq.abc.PGconn, loop: asyncio.AbstractEventLoop, fd: int) -> None:
    while pgconn.flush() == 1:
        writable = loop.create_future()
        loop.add_writer(fd, lambda: writable.done() or writable.set_result(None))
        try:
            await writable
        finally:
            loop.remove_writer(fd)


def _trimmed(results: list[pq.abc.PGresult | None], size: int,
             pending: pq.abc.PGresult | None) -> list[pq.abc.PGresult | None]:
    """``results`` trimmed or padded to ``size``; an error beyond them replaces the last."""
    surplus = [r for r in [*results[size:], pending] if r is not None and r.status == ExecStatus.FATAL_ERROR]
    results = results[:size] + [None] * (size - len(results))
    if surplus and size:
        results[-1] = surplus[0]
    return results
