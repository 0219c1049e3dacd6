"""Running the web server in the foreground until SIGINT or SIGTERM.

On a signal the listener stops taking connections, in-flight requests get ``GRACE_SECONDS``
to finish, then the engine closes its sessions and connections.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import signal
import sys

from aiohttp import web

from sessdb.config import Settings
from sessdb.errors import SessdbError
from sessdb.web.app import ENGINE, make_app
from sessdb.web.protocol import SessdbRunner

log = logging.getLogger("sessdb.web")

GRACE_SECONDS = 5.0


async def serve(settings: Settings, dsn: str) -> None:
    """Serve until a stop signal; raises ``SessdbError`` when the listener cannot start."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    app = make_app(settings, dsn)
    runner = SessdbRunner(app, handle_signals=False, shutdown_timeout=1.0, access_log=None)
    await runner.setup()
    try:
        site = web.TCPSite(runner, settings.host, settings.port, reuse_address=True)
        try:
            await site.start()
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise SessdbError(f"port {settings.port} on {settings.host} is in use") from None
            raise SessdbError(f"cannot listen on {settings.host}:{settings.port}: {exc.strerror}") from None
        port = site._server.sockets[0].getsockname()[1] if site._server else settings.port  # type: ignore[union-attr]
        print(f"sessdb listening on http://{settings.host}:{port}/", file=sys.stderr, flush=True)
        await stop.wait()
        log.info("stopping: no new connections; finishing in-flight requests")
        await site.stop()
        await app[ENGINE].drain(GRACE_SECONDS)
    finally:
        await runner.cleanup()
