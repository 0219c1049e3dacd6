#!/usr/bin/env python3
"""The hand-written baseline for web_select1.py: one aiohttp handler running ``SELECT 1 AS one``.

It does what a careful developer would write without sessdb: a psycopg_pool
``AsyncConnectionPool`` of ``--pool-size`` connections (opened before serving), one query per
request, the rows as a JSON array of objects. No access log, one process.

    python scripts/bench/baseline_app.py --dsn postgresql://... --port 8091 --pool-size 10
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
from collections.abc import AsyncIterator

from aiohttp import web
from psycopg_pool import AsyncConnectionPool

POOL = web.AppKey("pool", AsyncConnectionPool)
QUERY = "SELECT 1 AS one"


async def select1(request: web.Request) -> web.Response:
    """``[{"one": 1}]`` from the database."""
    async with request.app[POOL].connection() as conn:
        cur = await conn.execute(QUERY)
        columns = [c.name for c in cur.description or []]
        rows = await cur.fetchall()
    body = json.dumps([dict(zip(columns, row, strict=True)) for row in rows], separators=(",", ":"))
    return web.Response(body=body.encode(), content_type="application/json", charset="utf-8")


def make_app(dsn: str, pool_size: int) -> web.Application:
    """The baseline application with its pool's lifecycle."""
    app = web.Application()

    async def pool_ctx(app: web.Application) -> AsyncIterator[None]:
        pool = AsyncConnectionPool(dsn, min_size=pool_size, max_size=pool_size, open=False,
                                   kwargs={"autocommit": True, "application_name": "bench-baseline"})
        await pool.open(wait=True, timeout=30)
        app[POOL] = pool
        yield
        await pool.close()

    app.cleanup_ctx.append(pool_ctx)
    app.router.add_get("/select1", select1)
    return app


async def serve(dsn: str, host: str, port: int, pool_size: int) -> None:
    """Serve until SIGINT or SIGTERM."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    runner = web.AppRunner(make_app(dsn, pool_size), access_log=None, handle_signals=False)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port).start()
        print(f"baseline listening on http://{host}:{port}/select1", flush=True)
        await stop.wait()
    finally:
        await runner.cleanup()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dsn", required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8091)
    parser.add_argument("--pool-size", type=int, default=10)
    args = parser.parse_args()
    asyncio.run(serve(args.dsn, args.host, args.port, args.pool_size))


if __name__ == "__main__":
    main()
