"""A small aiohttp application with the ASP.NET session middleware, run as its own process by
the two-process test: ``python -m tests.state_app --dsn DSN --port PORT``. Prints ``ready`` on
stdout once it listens."""

from __future__ import annotations

import argparse
import asyncio
import os
import time

from aiohttp import web

from sessdb import aspnet_session


async def work(request: web.Request) -> web.Response:
    """Hold the session for ``hold`` seconds of simulated work, then count the request."""
    started = time.time()
    session = request.session  # type: ignore[attr-defined]
    count = session.get("n", 0)
    await asyncio.sleep(float(request.query.get("hold", "0")))
    session["n"] = count + 1
    return web.json_response({"pid": os.getpid(), "start": started, "end": time.time(), "n": count + 1})


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--dsn", required=True)
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    app = web.Application()
    aspnet_session.setup(app, args.dsn, application="/two-process-test")
    app.router.add_get("/work", work)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", args.port).start()
    print("ready", flush=True)
    try:
        await asyncio.Event().wait()  # until the test kills the process
    finally:
        await runner.cleanup()


if __name__ == "__main__":
    asyncio.run(main())
