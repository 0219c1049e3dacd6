"""Thin handlers: parse the request, ask the engine, render the answer."""

from __future__ import annotations

from aiohttp import web

from sessdb import errors
from sessdb.plan import plan_call
from sessdb.query import SqlLexError
from sessdb.routing import Route, UrlTooDeep, resolve
from sessdb.web.app_keys import ENGINE
from sessdb.web.inputs import read_input
from sessdb.web.respond import build_response

KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE"})


def _route(request: web.Request, path: str) -> Route:
    engine = request.app[ENGINE]
    try:
        route = resolve(engine.catalog.services, path, engine.catalog.dbname)
    except UrlTooDeep as exc:
        raise errors.NotFound(str(exc)) from None
    if route is None:
        raise errors.NotFound(f"no service answers {path}")
    return route


def _check_method(method: str, route: Route) -> None:
    if method not in KNOWN_METHODS:
        raise errors.MethodNotImplemented(f"method {method} is not implemented")
    allowed = list(route.service.methods)
    if method not in allowed:
        raise errors.MethodNotAllowed(f"service {route.service.name!r} does not take {method}", allowed)


async def call_service(request: web.Request) -> web.StreamResponse:
    """Every URL outside ``/_sessdb``: route it to a service and run its statement."""
    engine = request.app[ENGINE]
    if request.method not in KNOWN_METHODS:
        raise errors.MethodNotImplemented(f"method {request.method} is not implemented")
    inp = await read_input(request)
    route = _route(request, inp.path)
    _check_method(inp.method, route)
    service = route.service
    if service.authorization:
        role = await engine.auth.role_for(request.headers.get("Authorization"), service.user_name)
    else:
        role = service.user_name
    try:
        call = plan_call(route, inp, role=role)
    except SqlLexError as exc:
        raise errors.SessdbError(f"service {service.name!r} has a broken statement: {exc}") from None
    result = await engine.run(service, inp, call)
    if result.redirect is not None:
        status = 302 if inp.method in ("GET", "HEAD") else 307
        response = web.Response(status=status, headers={"Location": result.redirect})
    else:
        assert result.outcome is not None
        response = build_response(service.type, result.outcome, result.plan)
    _session_cookie(response, result.set_cookie, result.clear_cookie)
    return response


def _session_cookie(response: web.StreamResponse, session_id: str | None, clear: bool) -> None:
    if session_id is not None:
        response.set_cookie("sessionid", session_id, path="/", httponly=True, samesite="Lax")
    elif clear:
        response.set_cookie("sessionid", "", path="/", max_age=0, httponly=True, samesite="Lax")
