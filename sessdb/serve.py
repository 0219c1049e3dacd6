"""Running the web server in the foreground until SIGINT or SIGTERM.

On a signal the listener stops taking connections, in-flight requests get ``GRACE_SECONDS``
to finish, then the engine closes its sessions and connections.
"""

from __future__ import annotations

import asyncio
import errno
import gc
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

# a young-generation collection every 20,000 net allocations of container objects instead of 700:
# a request frees nearly all it makes by reference counting, so the collector's passes found
# almost nothing and cost the engine about 6 % of its CPU under load (gen 2 passes 20 ms each)
GC_THRESHOLDS = (20_000, 10, 10)


def tune_gc() -> None:
    """Set the cyclic garbage collector up for serving: collect what the start-up left, move the
    objects that live on (modules, the app, the engine) out of its passes (``gc.freeze``), and
    run its young-generation pass less often (``GC_THRESHOLDS``)."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


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
        tune_gc()
        print(f"sessdb listening on http://{settings.host}:{port}/", file=sys.stderr, flush=True)
        await stop.wait()
        log.info("stopping: no new connections; finishing in-flight requests")
        await site.stop()
        await app[ENGINE].drain(GRACE_SECONDS)
    finally:
        await runner.cleanup()
