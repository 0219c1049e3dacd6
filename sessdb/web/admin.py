"""The admin surface (contract section 7): /_sessdb/live, /ready, /metrics and the session page.

It answers only callers on the loopback address that name a loopback host (no DNS
rebinding, no cross-site POST), unless ``ADMIN_TOKEN`` is set, in which case every request must
carry ``Authorization: Bearer <token>``. The page lists the
engine's live sessions and their queues and drops one with a POST (the same admin drop as
``sessdb.drop_connection``).
"""

from __future__ import annotations

import functools
import hmac
import html
import ipaddress
import time
from collections.abc import Awaitable, Callable

from aiohttp import web

from sessdb import errors
from sessdb.web.app_keys import ENGINE, SETTINGS

PREFIX = "/_sessdb"
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _is_loopback(address: str | None) -> bool:
    if not address:
        return False
    try:
        return ipaddress.ip_address(address.split("%", 1)[0]).is_loopback
    except ValueError:
        return False


def _names_loopback(host_header: str | None) -> bool:
    """Whether a Host (or Origin) names this machine's loopback, so that a page served from
    another name cannot reach the admin surface through DNS rebinding."""
    if not host_header:
        return False
    host = host_header.strip().lower()
    if "://" in host:
        host = host.split("://", 1)[1]
    if host.startswith("["):
        host = host[1:host.find("]")] if "]" in host else host
    else:
        host = host.rsplit(":", 1)[0] if host.count(":") == 1 else host
    return host == "localhost" or _is_loopback(host)


def check_admin_access(request: web.Request) -> None:
    """Raise ``Forbidden``/``Unauthorized`` unless the caller may use the admin surface.

    With ``ADMIN_TOKEN`` set, every caller must send it as a bearer token. Without it, only
    callers on the loopback address that name a loopback host get in, and a POST must not come
    from a page of another origin (a browser's cross-site request).
    """
    token = request.app[SETTINGS].admin_token
    if token is not None:
        scheme, _, given = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), token.encode()):
            raise errors.Unauthorized("the admin surface needs the admin bearer token", realm="sessdb-admin")
        return
    if not _is_loopback(request.remote) or not _names_loopback(request.headers.get("Host")):
        raise errors.Forbidden("the admin surface answers on the loopback address only")
    if request.method not in ("GET", "HEAD"):
        origin = request.headers.get("Origin")
        if (origin is not None and not _names_loopback(origin)) or request.headers.get("Sec-Fetch-Site") == "cross-site":
            raise errors.Forbidden("cross-site requests to the admin surface are refused")


def guarded(handler: Handler) -> Handler:
    """An admin handler that refuses strangers before it runs (only admin routes pay for it)."""

    @functools.wraps(handler)
    async def guard(request: web.Request) -> web.StreamResponse:
        check_admin_access(request)
        return await handler(request)

    return guard


async def metrics(request: web.Request) -> web.Response:
    """Prometheus text format: sessions, queued requests, pool connections, sweeps."""
    engine = request.app[ENGINE]
    sessions = list(engine.sessions)
    lines = [
        "# HELP sessdb_sessions Live HTTP sessions.",
        "# TYPE sessdb_sessions gauge",
        f"sessdb_sessions {len(sessions)}",
        "# HELP sessdb_sessions_busy Sessions running a request.",
        "# TYPE sessdb_sessions_busy gauge",
        f"sessdb_sessions_busy {sum(1 for s in sessions if s.busy)}",
        "# HELP sessdb_session_queue_waiting Requests waiting on a session.",
        "# TYPE sessdb_session_queue_waiting gauge",
        f"sessdb_session_queue_waiting {sum(len(s.queue) for s in sessions)}",
        "# HELP sessdb_pool_connections Connections owned by the sessionless pool.",
        "# TYPE sessdb_pool_connections gauge",
        f"sessdb_pool_connections {len(engine.pool.backends)}",
        "# HELP sessdb_session_row_batches_total Batches of new sessions' rows written to sessdb.http_sessions.",
        "# TYPE sessdb_session_row_batches_total counter",
        f"sessdb_session_row_batches_total {engine.new_rows.batches}",
        "# HELP sessdb_session_rows_queued New sessions waiting for a batch to write their row.",
        "# TYPE sessdb_session_rows_queued gauge",
        f"sessdb_session_rows_queued {engine.new_rows.queued}",
        "# HELP sessdb_services Services in the catalog.",
        "# TYPE sessdb_services gauge",
        f"sessdb_services {len(engine.catalog.services)}",
        "# HELP sessdb_sweeps_total Sweeps of the timeout queue.",
        "# TYPE sessdb_sweeps_total counter",
        f"sessdb_sweeps_total {engine.sweeper.sweeps}",
    ]
    return web.Response(text="\n".join(lines) + "\n", content_type="text/plain", charset="utf-8",
                        headers={"X-Content-Type-Options": "nosniff"})


async def sessions_page(request: web.Request) -> web.Response:
    """An HTML page of the live sessions, each with a drop button."""
    engine = request.app[ENGINE]
    now = time.monotonic()
    rows = []
    for s in sorted(engine.sessions, key=lambda s: s.created_at, reverse=True):
        idle = "" if s.busy or s.last_release is None else f"{now - s.last_release:.0f}s"
        state = "dropping" if s.marked else ("busy" if s.busy else "idle")
        rows.append(
            "<tr>" + "".join(f"<td>{html.escape(str(v))}</td>" for v in (
                s.backend.pid, s.id, s.created_at.isoformat(timespec="seconds"),
                s.last_time.isoformat(timespec="seconds") if s.last_time else "", idle,
                f"{s.timeout_minutes:g} min", state, len(s.queue)))
            + f'<td><form method="post" action="{PREFIX}/sessions/{s.backend.pid}/drop">'
            '<button type="submit">drop</button></form></td></tr>'
        )
    head = "".join(f"<th>{h}</th>" for h in
                   ("connection", "session id", "created", "last used", "idle", "timeout", "state", "waiting", ""))
    body = (
        "<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>sessdb sessions</title></head><body>"
        f"<h1>sessdb: {len(rows)} live session{'s' if len(rows) != 1 else ''}</h1>"
        f"<table border=\"1\"><tr>{head}</tr>{''.join(rows)}</table></body></html>"
    )
    return web.Response(text=body, content_type="text/html", charset="utf-8",
                        headers={"Content-Security-Policy": "default-src 'none'; form-action 'self'"})


def session_rows(engine) -> list[dict[str, object]]:  # type: ignore[no-untyped-def]
    """The engine's live sessions as rows (the columns of ``sessdb sessions``)."""
    rows = []
    for s in sorted(engine.sessions, key=lambda s: s.created_at, reverse=True):
        rows.append({
            "conn_id": s.backend.pid, "session_id": s.id, "created": s.created_at.isoformat(),
            "last_used": s.last_time.isoformat() if s.last_time else None, "timeout": s.timeout_minutes,
            "state": "dropping" if s.marked else ("busy" if s.busy else "idle"), "waiting": len(s.queue),
            "client_addr": s.creator_addr,
        })
    return rows


async def sessions_json(request: web.Request) -> web.Response:
    """GET /_sessdb/sessions: the live sessions with their queues, as JSON."""
    return web.json_response(session_rows(request.app[ENGINE]))


async def drop_session(request: web.Request) -> web.Response:
    """POST /_sessdb/sessions/{conn_id}/drop: the admin drop of contract 5.6."""
    engine = request.app[ENGINE]
    try:
        conn_id = int(request.match_info["conn_id"])
    except ValueError:
        raise errors.NotFound("no such connection") from None
    if engine.sessions.by_pid(conn_id) is None:
        raise errors.NotFound(f"connection {conn_id} holds no session of this engine")
    engine.drop_session(conn_id)
    if "text/html" in request.headers.get("Accept", ""):
        raise web.HTTPSeeOther(f"{PREFIX}/")
    return web.json_response({"dropped": conn_id})


def add_admin_routes(app: web.Application, live: Handler, ready: Handler) -> None:
    """Register the admin routes under /_sessdb, each behind the guard."""
    app.router.add_get(f"{PREFIX}/live", guarded(live))
    app.router.add_get(f"{PREFIX}/ready", guarded(ready))
    app.router.add_get(f"{PREFIX}/", guarded(sessions_page))
    app.router.add_get(f"{PREFIX}/metrics", guarded(metrics))
    app.router.add_get(f"{PREFIX}/sessions", guarded(sessions_json))
    app.router.add_post(f"{PREFIX}/sessions/{{conn_id}}/drop", guarded(drop_session))
