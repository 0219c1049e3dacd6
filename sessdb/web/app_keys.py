"""The keys of the application's state (aiohttp ``AppKey``s), in one place."""

from __future__ import annotations

from aiohttp import web

from sessdb.config import Settings
from sessdb.engine import Engine

ENGINE = web.AppKey("engine", Engine)
SETTINGS = web.AppKey("settings", Settings)
DSN = web.AppKey("dsn", str)
