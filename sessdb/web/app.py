"""The aiohttp application: app keys, routes, and the lifecycle of the Engine."""

from __future__ import annotations

from collections.abc import AsyncIterator

from aiohttp import web

from sessdb.config import Settings
from sessdb.engine import Engine
from sessdb.web.app_keys import DSN, ENGINE, SETTINGS
from sessdb.web.admin import add_admin_routes
from sessdb.web.errors import error_middleware
from sessdb.web.handlers import call_service

__all__ = ["DSN", "ENGINE", "SETTINGS", "make_app"]


async def live(request: web.Request) -> web.Response:
    """200 while the process runs."""
    return web.json_response({"status": "live"})


async def ready(request: web.Request) -> web.Response:
    """200 once the database answers, 503 otherwise."""
    if await request.app[ENGINE].ready():
        return web.json_response({"status": "ready"})
    return web.json_response({"status": "unavailable"}, status=503)


async def _engine_ctx(app: web.Application) -> AsyncIterator[None]:
    engine = Engine(app[SETTINGS], app[DSN])
    await engine.start()
    app[ENGINE] = engine
    try:
        yield
    finally:
        await engine.stop()


def make_app(settings: Settings, dsn: str) -> web.Application:
    """The whole web application for ``settings`` on the database at ``dsn``."""
    app = web.Application(middlewares=[error_middleware], client_max_size=settings.max_request_size)
    app[SETTINGS] = settings
    app[DSN] = dsn
    app.cleanup_ctx.append(_engine_ctx)
    add_admin_routes(app, live, ready)
    app.router.add_route("*", "/{tail:.*}", call_service)
    return app
