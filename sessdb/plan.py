"""From a routed request to a ``Call``: the statement, its parameters and the request context (pure).

The request context goes to PostgreSQL as transaction-local settings: ``sessdb.request`` for
the ``http_*`` functions, ``sessdb.response`` with the response headers the engine will send
unless the statement changes them, and PostgREST's ``request.method``, ``request.path``,
``request.headers`` and ``request.cookies`` so that SQL written for PostgREST ports over.
"""

from __future__ import annotations

import base64
import functools
import json
import json.encoder
from collections.abc import Callable
from dataclasses import dataclass

from sessdb.query import Statement, bind, parse_statement
from sessdb.routing import Route
from sessdb.web.inputs import HttpInput, text_of

CONTENT_TYPES = {
    "RAW": "text/plain; charset=utf-8",
    "HTML": "text/html; charset=utf-8",
    "XML": "text/xml; charset=utf-8",
    "JSON": "application/json; charset=utf-8",
    "SOAP": "text/xml; charset=utf-8",
    "DISH": "text/xml; charset=utf-8",
}


def _compact_encoder() -> Callable[[object], str]:
    """Compact JSON text of dicts, lists, tuples, strings, numbers and None, ASCII only.

    ``json.dumps`` builds a new C encoder on every call, about 1 us, more than encoding a
    request's context takes: this one is built once (with ``json``'s own fallback where the C
    encoder is missing). Non-ASCII text is escaped, so that the settings reach PostgreSQL
    intact whatever the connection's client encoding. No check for cycles: the values are the
    engine's own.
    """
    make = getattr(json.encoder, "c_make_encoder", None)
    if make is None:
        return json.JSONEncoder(separators=(",", ":"), check_circular=False).encode

    def refuse(value: object) -> object:
        raise TypeError(f"{type(value).__name__} is not JSON")

    encode = make(None, refuse, json.encoder.encode_basestring_ascii, None, ":", ",", False, False, True)
    return lambda value: "".join(encode(value, 0))


_compact = _compact_encoder()

# the response headers a statement starts from, by service type, as sessdb.response holds them
_DEFAULT_RESPONSE = {kind: json.dumps([["Content-Type", ctype]]) for kind, ctype in CONTENT_TYPES.items()}


@dataclass(slots=True)  # not frozen: a frozen dataclass is slower to make, per request
class Call:
    """One statement to run for one request, with everything bound."""

    sql: str
    params: tuple[str | None, ...]
    settings: tuple[tuple[str, str], ...]
    role: str | None
    kind: str


@functools.lru_cache(maxsize=1024)
def statement_for(sql: str) -> Statement:
    """The parsed statement (cached: services keep their text between requests)."""
    return parse_statement(sql)


def lookup_in(variables: tuple[tuple[str, str | None], ...]):  # type: ignore[no-untyped-def]
    """A lookup for ``bind``: the first variable of that name, exact case first, then any case."""
    exact: dict[str, str | None] = {}
    folded: dict[str, str | None] = {}
    for name, value in variables:
        exact.setdefault(name, value)
        folded.setdefault(name.lower(), value)

    def lookup(name: str) -> str | None:
        if name in exact:
            return exact[name]
        return folded.get(name.lower())

    return lookup


def all_variables(route: Route, inp: HttpInput) -> tuple[tuple[str, str | None], ...]:
    """The ``url*`` variables first, then query and form variables, as (name, value)."""
    return tuple(route.url_vars) + tuple((v.name, v.value) for v in inp.variables)


def request_context(route: Route, inp: HttpInput) -> dict:  # type: ignore[type-arg]
    """The JSON document behind ``http_variable``, ``http_header`` and ``http_body``."""
    variables = [{"n": name, "v": value} for name, value in route.url_vars]
    for var in inp.variables:
        item: dict[str, object] = {"n": var.name, "v": var.value}
        if var.raw is not None:
            item["b"] = base64.b64encode(var.raw).decode()
        if var.transport is not None and var.transport != var.value:
            item["t"] = var.transport
        if var.part_headers is not None:
            item["h"] = var.part_headers  # pairs are written as arrays
        variables.append(item)
    context: dict[str, object] = {
        "method": inp.method, "uri": inp.uri, "version": inp.version,
        "vars": variables, "headers": inp.headers,
    }
    if inp.query_string:
        context["query"] = inp.query_string
    if inp.body:
        text, exact = text_of(inp.body)
        if exact is None:
            context["body"] = text
        else:
            context["body64"] = base64.b64encode(inp.body).decode()
    return context


# the request-context settings of every call, in ``plan_call``'s order
CONTEXT_SETTINGS = ("sessdb.request", "sessdb.response", "request.method", "request.path", "request.headers",
                    "request.cookies")


def placeholder_call(sql: str) -> Call:
    """A call of ``sql`` (no parameters) with every request-context setting, each ``{}``: the
    engine runs one on a new connection so that its statements are prepared there."""
    return Call(sql, (), tuple((name, "{}") for name in CONTEXT_SETTINGS), None, "RAW")


def plan_call(route: Route, inp: HttpInput, *, role: str | None) -> Call:
    """The ``Call`` for a routed request; raises ``query.SqlLexError`` for a broken statement."""
    service = route.service
    statement = statement_for(service.statement or "")
    params = bind(statement, lookup_in(all_variables(route, inp))) if statement.names else ()
    headers = {name.lower(): value for name, value in inp.headers}
    settings = (
        ("sessdb.request", _compact(request_context(route, inp))),
        ("sessdb.response", _DEFAULT_RESPONSE[service.type]),
        ("request.method", inp.method),
        ("request.path", inp.path),
        ("request.headers", _compact(headers)),
        ("request.cookies", _compact(inp.cookies) if inp.cookies else "{}"),
    )
    return Call(statement.text, tuple(params), settings, role, service.type)
