"""Thin handlers: parse the request, ask the engine, render the answer.

SOAP services take their variables from the envelope's operation element (ahead of the query
string's); DISH services answer GET and HEAD with their WSDL and hand a POSTed envelope to the
member SOAP service its operation names. Both answer every failure with a SOAP fault.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Awaitable, Callable, Mapping
from urllib.parse import quote

from aiohttp import hdrs, web

from sessdb import errors, soap, wsdl
from sessdb.engine import Engine, Result
from sessdb.execute import Ticket
from sessdb.plan import plan_call
from sessdb.query import SqlLexError
from sessdb.routing import Route, Service, UrlTooDeep, resolve
from sessdb.web.admin import PREFIX as ADMIN_PREFIX
from sessdb.web.app_keys import ENGINE
from sessdb.web.errors import error_middleware, response_for
from sessdb.web.inputs import HttpInput, Variable, read_input
from sessdb.web.protocol import SessdbRequestHandler
from sessdb.web.respond import build_response, build_soap_response

KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE"})
_URL_SAFE = "/!~*'()-_."


def _route(engine: Engine, path: str) -> Route:
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
    return await serve_service(request.app[ENGINE], request)


async def serve_service(engine: Engine, request: web.Request) -> web.StreamResponse:
    """``call_service`` for ``engine``'s services; also called without aiohttp's router (see
    ``dispatcher``), so ``request.app`` is not used."""
    if request.method not in KNOWN_METHODS:
        raise errors.MethodNotImplemented(f"method {request.method} is not implemented")
    inp = await read_input(request)
    route = _route(engine, inp.path)
    if route.service.type in ("SOAP", "DISH"):
        return await _call_soap(engine, request, inp, route)  # its errors, 405 included, are SOAP faults
    _check_method(inp.method, route)
    result = await _run(engine, request, inp, route)
    if result.redirect is not None:
        return _redirect(inp, result)
    assert result.outcome is not None
    response = build_response(route.service.type, result.outcome, result.plan)
    _session_cookie(response, result.set_cookie, result.clear_cookie)
    return response


def dispatcher(app: web.Application) -> Callable[[web.BaseRequest], Awaitable[web.StreamResponse]]:
    """The server's handler: a service request goes straight to the engine, the rest to ``app``.

    Services are routed by sessdb itself (its catalog), so aiohttp's router and middleware
    chain are left out for them (about 30 us of CPU per request), with the same error
    handling; ``/_sessdb`` and requests that expect a ``100 Continue`` go through ``app``.
    An application given more middlewares, or response-prepare signals, gets every request.
    """
    app_handle = app._handle
    if list(app.middlewares) != [error_middleware] or app.on_response_prepare:
        return app_handle
    engine = app[ENGINE]
    run_service = functools.partial(serve_service, engine)

    async def dispatch(request: web.BaseRequest) -> web.StreamResponse:
        assert isinstance(request, web.Request)
        if request.path.startswith(ADMIN_PREFIX) or hdrs.EXPECT in request.headers:
            return await app_handle(request)
        return await error_middleware(request, run_service)

    return dispatch


async def _run(engine: Engine, request: web.Request, inp: HttpInput, route: Route) -> Result:
    """Authorize, plan and run the call of a routed request."""
    service = route.service
    if service.authorization:
        role = await engine.auth.role_for(request.headers.get("Authorization"), service.user_name)
    else:
        role = service.user_name
    try:
        call = plan_call(route, inp, role=role)
    except SqlLexError as exc:
        raise errors.SessdbError(f"service {service.name!r} has a broken statement: {exc}") from None
    protocol = request.protocol
    if not isinstance(protocol, SessdbRequestHandler):
        return await engine.run(service, inp, call)
    ticket = Ticket()
    protocol.guard(ticket)
    try:
        return await engine.run(service, inp, call, ticket)
    finally:
        protocol.unguard(ticket)


def _redirect(inp: HttpInput, result: Result) -> web.Response:
    """The cookieless redirect of ``session => 'required-url'``: 302 for GET/HEAD, else 307."""
    assert result.redirect is not None
    status = 302 if inp.method in ("GET", "HEAD") else 307
    return web.Response(status=status, headers={"Location": result.redirect})


# -- SOAP and DISH -------------------------------------------------------------------------------


async def _call_soap(engine: Engine, request: web.Request, inp: HttpInput, route: Route) -> web.StreamResponse:
    """A SOAP request (to a SOAP service, or to a DISH service that hands it on), or a DISH's WSDL.

    Every failure is a SOAP fault: malformed envelopes and unknown operations ``soap:Client``
    with status 500 (SOAP 1.1 section 6.2), sessdb errors with their usual status and headers.
    """
    service = route.service
    try:
        _check_method(inp.method, route)
        if service.type == "DISH" and service.authorization:
            # a DISH with AUTHORIZATION ON guards its WSDL and the requests it hands on
            await engine.auth.role_for(request.headers.get("Authorization"), service.user_name)
        if service.type == "DISH" and inp.method in ("GET", "HEAD"):
            return _wsdl_response(engine, request, inp, service)
        envelope = soap.parse_request(inp.body)
        route, fmt = _soap_target(engine, route, envelope)
        variables = tuple(Variable(name, value) for name, value in envelope.params)
        inp = dataclasses.replace(inp, variables=variables + inp.variables)
        result = await _run(engine, request, inp, route)
    except soap.SoapFault as fault:
        return _fault_response(fault, 500)
    except errors.SessdbError as exc:
        plain = response_for(exc)
        code = "Client" if plain.status < 500 else "Server"
        return _fault_response(soap.SoapFault(code, str(exc)), plain.status, plain.headers)
    if result.redirect is not None:
        return _redirect(inp, result)
    assert result.outcome is not None
    response = build_soap_response(envelope, fmt, result.outcome, result.plan)
    _session_cookie(response, result.set_cookie, result.clear_cookie)
    return response


def _soap_target(engine: Engine, route: Route, envelope: soap.SoapRequest) -> tuple[Route, str | None]:
    """The SOAP service that answers ``envelope`` and its response format.

    Posted to a SOAP service, the operation must be the service's (its name or a ``/``
    suffix of it); posted to a DISH service, it picks the member of the DISH's group.
    """
    service = route.service
    if service.type == "SOAP":
        if envelope.operation not in wsdl.operation_names(service.name):
            raise soap.SoapFault("Client", f"service {service.name!r} does not serve operation "
                                           f"{envelope.operation!r}")
        return route, service.format
    for op in wsdl.operations(engine.catalog.services, service.group_name):
        if op.name == envelope.operation:
            target = Route(op.service, ())
            _check_method("POST", target)
            return target, op.service.format or service.format
    raise soap.SoapFault("Client", f"DISH service {service.name!r} has no operation {envelope.operation!r}")


def _wsdl_response(engine: Engine, request: web.Request, inp: HttpInput, service: Service) -> web.Response:
    """The WSDL of a DISH service; its endpoint is the DISH's own URL, from the request's Host."""
    address = f"{request.scheme}://{request.host}{quote(inp.path, safe=_URL_SAFE)}"
    ops = wsdl.operations(engine.catalog.services, service.group_name)
    return web.Response(body=wsdl.build_wsdl(service.name, address, ops), content_type="text/xml", charset="utf-8")


def _fault_response(fault: soap.SoapFault, status: int, headers: Mapping[str, str] | None = None) -> web.Response:
    response = web.Response(status=status, body=soap.fault_envelope(fault))
    for name, value in (headers or {}).items():
        if name.lower() != "content-type":
            response.headers[name] = value
    response.headers["Content-Type"] = soap.CONTENT_TYPE
    return response


def _session_cookie(response: web.StreamResponse, session_id: str | None, clear: bool) -> None:
    if session_id is not None:
        response.set_cookie("sessionid", session_id, path="/", httponly=True, samesite="Lax")
    elif clear:
        response.set_cookie("sessionid", "", path="/", max_age=0, httponly=True, samesite="Lax")
