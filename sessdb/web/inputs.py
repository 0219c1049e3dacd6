"""Reading an HTTP request into an ``HttpInput``: variables, headers, body, cookies, session id.

Variables come from the query string, then an ``application/x-www-form-urlencoded`` or
``multipart/form-data`` body, in that order (repeats kept). A leading cookieless segment
``/(S(<id>))/`` is taken off the path before routing.
"""

from __future__ import annotations

import email.parser
import email.policy
import re
from dataclasses import dataclass, field
from http.cookies import CookieError, SimpleCookie
from urllib.parse import unquote_to_bytes

from aiohttp import web

from sessdb.errors import BadRequest

COOKIELESS = re.compile(r"^/\(S\(([^()/]*)\)\)(?=/|$|\?)")
SESSION_VARIABLE = "sessionid"


@dataclass(frozen=True)
class Variable:
    """One HTTP variable; ``raw`` holds the bytes when they are not plain UTF-8 text."""

    name: str
    value: str | None
    raw: bytes | None = None
    transport: str | None = None
    part_headers: tuple[tuple[str, str], ...] | None = None


@dataclass(slots=True)  # not frozen: a frozen dataclass is slower to make, per request
class HttpInput:
    """Everything a service statement may see of a request."""

    method: str
    path: str
    uri: str
    version: str
    query_string: str
    variables: tuple[Variable, ...]
    headers: tuple[tuple[str, str], ...]
    body: bytes
    cookies: dict[str, str] = field(default_factory=dict)
    peer: str | None = None
    url_session_id: str | None = None

    def session_id(self) -> str | None:
        """The session id the request presents (contract 5.1): query, form, (S(id)), cookie."""
        for var in self.variables:  # query variables come before form variables
            if var.name.lower() == SESSION_VARIABLE and var.value:
                return var.value
        if self.url_session_id:
            return self.url_session_id
        for name, value in self.cookies.items():
            if name.lower() == SESSION_VARIABLE and value:
                return value
        return None


def text_of(raw: bytes) -> tuple[str, bytes | None]:
    """Text for raw bytes, and the bytes themselves when the text does not carry them exactly."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("utf-8", errors="replace").replace("\x00", "\ufffd"), raw
    if "\x00" in text:  # PostgreSQL text cannot hold NUL
        return text.replace("\x00", "\ufffd"), raw
    return text, None


def parse_urlencoded(data: bytes) -> list[Variable]:
    """Variables of a query string or urlencoded body (as bytes), keeping repeats and the transport form."""
    found = []
    for pair in data.split(b"&"):
        if not pair:
            continue
        name, _, value = pair.partition(b"=")
        raw = unquote_to_bytes(value.replace(b"+", b" "))
        text, exact = text_of(raw)
        found.append(Variable(text_of(unquote_to_bytes(name.replace(b"+", b" ")))[0], text, exact,
                              value.decode("utf-8", "replace")))
    return found


def clean_text(value: str) -> str:
    """A header value as valid text: bytes that are not UTF-8 become U+FFFD (aiohttp keeps them
    as surrogate escapes, which JSON and PostgreSQL refuse)."""
    if value.isascii() and "\x00" not in value:
        return value  # the common case, at C speed
    try:
        value.encode("utf-8")
        return value.replace("\x00", "\ufffd")
    except UnicodeEncodeError:
        return value.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def parse_multipart(content_type: str, body: bytes) -> list[Variable]:
    """Variables of a ``multipart/form-data`` body, with each part's headers."""
    parser = email.parser.BytesParser(policy=email.policy.HTTP)
    try:
        header = content_type.encode("utf-8", "surrogateescape")
        message = parser.parsebytes(b"Content-Type: " + header + b"\r\n\r\n" + body)
        if not message.is_multipart():
            raise BadRequest("malformed multipart/form-data body")
        return _parts(message)
    except (UnicodeError, ValueError, LookupError, TypeError) as exc:
        raise BadRequest(f"malformed multipart/form-data body: {exc}") from None


def _parts(message) -> list[Variable]:  # type: ignore[no-untyped-def]
    found = []
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        if not name:
            continue
        raw = part.get_payload(decode=True) or b""
        text, exact = text_of(raw)
        headers = tuple((k, clean_text(str(v))) for k, v in part.items())
        found.append(Variable(clean_text(str(name)), text, exact, None, headers))
    return found


def _cookies(header_values: list[str]) -> dict[str, str]:
    jar: dict[str, str] = {}
    for value in header_values:
        cookie = SimpleCookie()
        try:
            cookie.load(value)
        except CookieError:
            continue
        for name, morsel in cookie.items():
            jar.setdefault(name, morsel.value)
    return jar


async def read_input(request: web.Request) -> HttpInput:
    """Read the whole request; raises ``BadRequest`` for a body that cannot be parsed.

    A body over ``client_max_size`` raises aiohttp's 413 from ``request.read()``.
    """
    path = request.path
    url_session_id = None
    match = COOKIELESS.match(path)
    if match:
        url_session_id = match.group(1) or None
        path = path[match.end():] or "/"
    body = await request.read() if request.body_exists else b""
    raw_query = request.rel_url.raw_query_string
    query_string = clean_text(raw_query)
    variables = parse_urlencoded(raw_query.encode("utf-8", "surrogateescape")) if raw_query else []
    if body:
        ctype = request.content_type
        if ctype == "application/x-www-form-urlencoded":
            variables += parse_urlencoded(body)
        elif ctype == "multipart/form-data":
            variables += parse_multipart(request.headers.get("Content-Type", ""), body)
    version = f"HTTP/{request.version.major}.{request.version.minor}"
    return HttpInput(
        method=request.method, path=clean_text(path), uri=clean_text(request.raw_path), version=version,
        query_string=query_string, variables=tuple(variables),
        headers=tuple((clean_text(k), clean_text(v)) for k, v in request.headers.items()), body=body,
        cookies=_cookies([clean_text(c) for c in request.headers.getall("Cookie", [])]), peer=request.remote,
        url_session_id=url_session_id,
    )
