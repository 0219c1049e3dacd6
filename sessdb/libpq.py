"""The libpq that psycopg loaded, for a call psycopg does not make the way the engine needs.

``connect``: a connection's handshake with ``PQconnectPoll`` called through ctypes in a
worker thread. psycopg polls on the event loop and holds the GIL while libpq works, and a
SCRAM handshake makes libpq derive the password's key (thousands of HMAC rounds, about 2 ms
of CPU here): every connection opened would stall all requests that long.

It is called on the libpq psycopg itself loaded (found among the process's mappings), so that
the connection structure is the one it knows. Without it, ``connect`` falls back to psycopg.
"""

from __future__ import annotations

import asyncio
import ctypes
import select
import time
from collections.abc import Callable

import psycopg
from psycopg import pq
from psycopg.conninfo import conninfo_attempts_async, conninfo_to_dict, make_conninfo

_POLL_FAILED, _POLL_READING, _POLL_WRITING, _POLL_OK = 0, 1, 2, 3


def _library() -> ctypes.CDLL | None:
    """libpq, called without the GIL."""
    try:
        with open("/proc/self/maps", encoding="utf-8") as maps:
            paths = {line.split()[-1] for line in maps if "/libpq" in line}
        if len(paths) != 1:
            return None
        path = paths.pop()
        return ctypes.CDLL(path)
    except OSError:
        return None


def _function(library: ctypes.CDLL | None, name: str) -> Callable[[int], int] | None:
    function = getattr(library, name, None) if library is not None else None
    if function is not None:
        function.argtypes = [ctypes.c_void_p]
        function.restype = ctypes.c_int
    return function


_PQ_CONNECT_POLL = _function(_library(), "PQconnectPoll")


async def connect(conninfo: str, *, autocommit: bool, prepare_threshold: int | None,
                  timeout: float) -> psycopg.AsyncConnection:
    """An ``AsyncConnection`` whose handshake ran in a worker thread, off the event loop.

    Host names are resolved first without blocking, as psycopg does, and each address is
    tried in turn. Raises ``psycopg.OperationalError`` when every attempt fails or takes
    longer than ``timeout``.
    """
    if _PQ_CONNECT_POLL is None:
        return await psycopg.AsyncConnection.connect(conninfo, autocommit=autocommit,
                                                     prepare_threshold=prepare_threshold)
    errors: list[psycopg.OperationalError] = []
    for attempt in await conninfo_attempts_async(conninfo_to_dict(conninfo)):
        try:
            pgconn = await _open(make_conninfo("", **attempt), timeout)
            break
        except psycopg.OperationalError as exc:
            errors.append(exc)
    else:
        if not errors:
            raise psycopg.OperationalError("no host to connect to")
        raise errors[-1] if len(errors) == 1 else psycopg.OperationalError("\n".join(map(str, errors)))
    pgconn.nonblocking = 1
    conn = psycopg.AsyncConnection(pgconn)
    await conn.set_autocommit(autocommit)
    conn.prepare_threshold = prepare_threshold
    return conn


async def _open(conninfo: str, timeout: float) -> pq.abc.PGconn:
    """One attempt: ``PQconnectStart`` here (no name to resolve), the handshake in a thread."""
    pgconn = pq.PGconn.connect_start(conninfo.encode())
    work = asyncio.get_running_loop().run_in_executor(None, _handshake, pgconn, time.monotonic() + timeout)
    try:
        await asyncio.shield(work)
    except asyncio.CancelledError:
        # the thread may still be in libpq: the connection is freed once it is done with it
        work.add_done_callback(lambda _: pgconn.finish())
        raise
    except BaseException:
        pgconn.finish()
        raise
    return pgconn


def _handshake(pgconn: pq.abc.PGconn, deadline: float) -> None:
    """Drive ``PQconnectPoll`` to the end, waiting on the socket in between (a worker thread)."""
    assert _PQ_CONNECT_POLL is not None
    while True:
        if pgconn.status == pq.ConnStatus.BAD:
            raise psycopg.OperationalError(f"connection is bad: {_error(pgconn)}")
        status = _PQ_CONNECT_POLL(pgconn.pgconn_ptr)
        if status == _POLL_OK:
            return
        if status not in (_POLL_READING, _POLL_WRITING):
            raise psycopg.OperationalError(f"connection failed: {_error(pgconn)}")
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise psycopg.OperationalError("connection timeout expired")
        poller = select.poll()  # not select.select: descriptors past 1023 are common with many sessions
        poller.register(pgconn.socket, select.POLLIN if status == _POLL_READING else select.POLLOUT)
        if not poller.poll(remaining * 1000):
            raise psycopg.OperationalError("connection timeout expired")


def _error(pgconn: pq.abc.PGconn) -> str:
    return pgconn.error_message.decode(errors="replace").strip()
