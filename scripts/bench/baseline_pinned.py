#!/usr/bin/env python3
"""The hand-written baseline for sessions.py: one psycopg connection pinned per client session id.

What a careful developer would write without sessdb to keep temp tables across requests:
``GET /new?sid=X`` opens a connection for X and runs ``SELECT bench_new(NULL)`` (which creates
the temp tables); ``GET /kv?sid=X&k=N`` runs ``SELECT bench_kv(N)`` on X's connection, one
request at a time per session (an ``asyncio.Lock``), each in its own transaction, as sessdb
does; ``GET /end?sid=X`` closes it. Answers are the first column as text/plain, as a sessdb
RAW service answers. No access log, one process.

    python scripts/bench/baseline_pinned.py --dsn postgresql://... --port 8092
"""

from __future__ import annotations

import argparse
import asyncio
import signal
from dataclasses import dataclass, field

import psycopg
from aiohttp import web


@dataclass
class Pinned:
    """One client session's connection and its turn."""

    conn: psycopg.AsyncConnection
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


SESSIONS = web.AppKey("sessions", dict)
DSN = web.AppKey("dsn", str)


def _text(value: object) -> web.Response:
    return web.Response(text="" if value is None else str(value), content_type="text/plain")


async def new(request: web.Request) -> web.Response:
    """Open and pin a connection for ``sid``; 409 when it exists."""
    sid = request.query["sid"]
    sessions = request.app[SESSIONS]
    if sid in sessions:
        raise web.HTTPConflict(text="session exists")
    conn = await psycopg.AsyncConnection.connect(request.app[DSN], application_name="bench-pinned")
    sessions[sid] = Pinned(conn)
    async with sessions[sid].lock, conn.transaction():
        cur = await conn.execute("SELECT bench_new(NULL)")
        row = await cur.fetchone()
    return _text(row[0] if row else None)


async def kv(request: web.Request) -> web.Response:
    """Upsert and read key ``k`` in the session's temp table."""
    pinned = request.app[SESSIONS].get(request.query.get("sid", ""))
    if pinned is None:
        raise web.HTTPNotFound(text="no such session")
    async with pinned.lock, pinned.conn.transaction():
        cur = await pinned.conn.execute("SELECT bench_kv(%s)", [int(request.query["k"])])
        row = await cur.fetchone()
    return _text(row[0] if row else None)


async def end(request: web.Request) -> web.Response:
    """Close the session's connection."""
    pinned = request.app[SESSIONS].pop(request.query.get("sid", ""), None)
    if pinned is None:
        raise web.HTTPNotFound(text="no such session")
    async with pinned.lock:
        await pinned.conn.close()
    return _text("ended")


def make_app(dsn: str) -> web.Application:
    """The baseline application; its connections are closed at cleanup."""
    app = web.Application()
    app[DSN] = dsn
    app[SESSIONS] = {}

    async def on_cleanup(app: web.Application) -> None:
        await asyncio.gather(*(p.conn.close() for p in app[SESSIONS].values()), return_exceptions=True)

    app.on_cleanup.append(on_cleanup)
    app.router.add_get("/new", new)
    app.router.add_get("/kv", kv)
    app.router.add_get("/end", end)
    return app


async def serve(dsn: str, host: str, port: int) -> None:
    """Serve until SIGINT or SIGTERM."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    runner = web.AppRunner(make_app(dsn), access_log=None, handle_signals=False)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    try:
        await stop.wait()
    finally:
        await runner.cleanup()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dsn", required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    asyncio.run(serve(args.dsn, args.host, args.port))


if __name__ == "__main__":
    main()
