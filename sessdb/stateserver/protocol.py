"""The ASP.NET State Server wire format ([MS-ASP], aspnet-state.md section 1): parse and emit.

Requests are HTTP/1.1-shaped but not HTTP as a stock parser knows it: the modern client sends
the whole request-target percent-encoded (``GET %2fLM%2fW3SVC... HTTP/1.1``), so the target is
taken as an opaque token and decoded into the item key. ``RequestParser`` frames requests on a
persistent connection by ``Content-Length`` (on every verb) and enforces the size limits;
``parse_operation`` turns a framed request into an ``Operation``; ``respond`` turns a store
result back into a ``Response``. Pure: no I/O, no clock.

Choices (aspnet-state.md 1.13): ``LockCookie`` and ``Lock-Cookie`` are both read, ``LockCookie``
is written; ``Exclusive`` values are case-insensitive; 404 and 423 have no body; the status line
is ``HTTP/1.1 <code> <reason>``; no ``Content-Type``, never chunked.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import unquote_to_bytes

from sessdb.stateserver.locks import MAX_COOKIE, ItemResult, Status, dotnet_ticks, lock_age_seconds

MAX_LINE = 8192  # bytes per request line or header line
MAX_HEADERS = 60
MAX_BODY = 20 * 1024 * 1024
DEFAULT_TIMEOUT = 20  # minutes
MAX_TIMEOUT = 525_600  # minutes: one year, the client's own bound

H_CONTENT_LENGTH = "Content-Length"
H_VERSION = "X-AspNet-Version"
H_TIMEOUT = "Timeout"
H_LOCK_COOKIE = "LockCookie"
H_LOCK_AGE = "LockAge"
H_LOCK_DATE = "LockDate"
H_ACTION_FLAGS = "ActionFlags"

REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 423: "Locked"}

_DIGITS = re.compile(r"[0-9]+")
_INT32 = re.compile(r"[+-]?[0-9]+")
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")


class ProtocolError(Exception):
    """The byte stream cannot be framed any more: answer 400 and close the connection."""


class BadRequest(Exception):
    """A well-framed request with a bad verb or header: answer 400, keep the connection."""


class Verb(enum.Enum):
    """The six operations of the protocol."""

    GET = "get"
    ACQUIRE = "acquire"
    RELEASE = "release"
    PUT = "put"
    DELETE = "delete"
    HEAD = "head"


@dataclass(frozen=True)
class RawRequest:
    """One framed request: method, undecoded target, header fields (lower-case names), body."""

    method: str
    target: str
    version: str
    headers: Mapping[str, str]
    body: bytes = b""


@dataclass(frozen=True)
class Operation:
    """What a request asks of the store; ``lock_cookie`` is None when the header is absent."""

    verb: Verb
    key: str
    timeout: int = DEFAULT_TIMEOUT
    lock_cookie: int | None = None
    extra_flags: int = 0
    body: bytes = b""


@dataclass(frozen=True)
class Response:
    """A response before encoding; ``close`` asks the server to end the connection after it."""

    status: int
    headers: tuple[tuple[str, str], ...] = ()
    body: bytes = b""
    close: bool = False


@dataclass
class RequestParser:
    """Incremental framing of the requests of one connection.

    ``feed`` adds bytes; ``next_request`` returns the next complete request, or None when more
    bytes are needed, and raises ``ProtocolError`` when a limit is passed or the head does not
    parse (the connection cannot be trusted after that).
    """

    max_line: int = MAX_LINE
    max_headers: int = MAX_HEADERS
    max_body: int = MAX_BODY
    _buffer: bytearray = field(default_factory=bytearray)
    _lines: list[bytes] = field(default_factory=list)
    _head: tuple[str, str, str, dict[str, str]] | None = None
    _length: int = 0

    def feed(self, data: bytes) -> None:
        """Append bytes read from the connection."""
        self._buffer += data

    @property
    def idle(self) -> bool:
        """True when no partial request is buffered."""
        return not self._buffer and not self._lines and self._head is None

    def next_request(self) -> RawRequest | None:
        """The next complete request, or None if it has not fully arrived yet."""
        if self._head is None and not self._read_head():
            return None
        assert self._head is not None
        if len(self._buffer) < self._length:
            return None
        method, target, version, headers = self._head
        body = bytes(self._buffer[: self._length])
        del self._buffer[: self._length]
        self._head, self._length = None, 0
        return RawRequest(method, target, version, headers, body)

    def _read_head(self) -> bool:
        while True:
            end = self._buffer.find(b"\n")
            if end < 0:
                if len(self._buffer) > self.max_line:
                    raise ProtocolError("request line or header line too long")
                return False
            line = bytes(self._buffer[:end]).rstrip(b"\r")
            del self._buffer[: end + 1]
            if len(line) > self.max_line:
                raise ProtocolError("request line or header line too long")
            if line:
                self._lines.append(line)
                if len(self._lines) > self.max_headers + 1:
                    raise ProtocolError("too many header lines")
            elif self._lines:  # the blank line that ends a head (blank lines before one are skipped)
                self._head = _parse_head(self._lines)
                self._lines = []
                self._length = _content_length(self._head[3], self.max_body)
                return True


def _parse_head(lines: list[bytes]) -> tuple[str, str, str, dict[str, str]]:
    parts = lines[0].decode("latin-1").split(" ")
    if len(parts) != 3 or not parts[0] or not parts[1] or not parts[2].startswith("HTTP/"):
        raise ProtocolError("malformed request line")
    method, target, version = parts
    headers: dict[str, str] = {}
    for raw in lines[1:]:
        name, sep, value = raw.decode("latin-1").partition(":")
        if not sep or not _TOKEN.fullmatch(name):
            raise ProtocolError("malformed header line")
        key, value = name.lower(), value.strip(" \t")
        if key == "content-length" and key in headers and headers[key] != value:
            raise ProtocolError("conflicting Content-Length headers")
        headers[key] = value
    return method, target, version, headers


def _content_length(headers: Mapping[str, str], max_body: int) -> int:
    if "transfer-encoding" in headers:
        raise ProtocolError("Transfer-Encoding is not supported")
    raw = headers.get("content-length")
    if raw is None:
        return 0
    if not _DIGITS.fullmatch(raw):
        raise ProtocolError("malformed Content-Length")
    length = int(raw)
    if length > max_body:
        raise ProtocolError(f"body of {length} bytes is over the limit of {max_body}")
    return length


def decode_key(target: str) -> str:
    """The item key of a request-target: percent-decoded, ``+`` as space, one leading ``/`` of
    ``//`` dropped. Raises ``BadRequest`` when the result is not UTF-8 text without NUL."""
    if target.startswith("//"):
        target = target[1:]
    raw = unquote_to_bytes(target.replace("+", " "))
    try:
        key = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise BadRequest("the item key is not UTF-8") from None
    if not key or "\x00" in key:
        raise BadRequest("the item key is empty or holds NUL")
    return key


def parse_operation(request: RawRequest) -> Operation:
    """The operation a framed request asks for; raises ``BadRequest`` (400) when invalid."""
    key = decode_key(request.target)
    method, headers = request.method, request.headers
    if method == "GET":
        return _parse_get(key, headers)
    if method == "PUT":
        return Operation(
            Verb.PUT,
            key,
            timeout=_timeout(headers.get("timeout")),
            lock_cookie=_cookie(headers),
            extra_flags=_extra_flags(headers.get("extraflags")),
            body=request.body,
        )
    if method == "DELETE":
        return Operation(Verb.DELETE, key, lock_cookie=_cookie(headers))
    if method == "HEAD":
        return Operation(Verb.HEAD, key)
    raise BadRequest(f"unknown verb {method!r}")


def _parse_get(key: str, headers: Mapping[str, str]) -> Operation:
    exclusive = headers.get("exclusive")
    if exclusive is None:
        return Operation(Verb.GET, key)
    value = exclusive.lower()
    if value == "acquire":
        return Operation(Verb.ACQUIRE, key)
    if value == "release":
        cookie = _cookie(headers)
        if cookie is None:
            raise BadRequest("release without LockCookie")
        return Operation(Verb.RELEASE, key, lock_cookie=cookie)
    raise BadRequest(f"invalid Exclusive value {exclusive!r}")


def _cookie(headers: Mapping[str, str]) -> int | None:
    raw = headers.get("lockcookie", headers.get("lock-cookie"))
    if raw is None:
        return None
    if not _DIGITS.fullmatch(raw) or int(raw) > MAX_COOKIE:
        raise BadRequest(f"invalid LockCookie {raw!r}")
    return int(raw)


def _timeout(raw: str | None) -> int:
    if raw is None:
        return DEFAULT_TIMEOUT
    if not _DIGITS.fullmatch(raw) or int(raw) > MAX_TIMEOUT:
        raise BadRequest(f"invalid Timeout {raw!r}")
    return int(raw)


def _extra_flags(raw: str | None) -> int:
    if raw is None:
        return 0
    if not _INT32.fullmatch(raw) or not -(2**31) <= int(raw) < 2**31:
        raise BadRequest(f"invalid ExtraFlags {raw!r}")
    return int(raw)


def respond(op: Operation, result: ItemResult) -> Response:
    """The response to ``op`` given the store's ``result``."""
    if result.status is Status.NOT_FOUND:
        return Response(404)
    if result.status is Status.LOCKED:
        return locked_response(result)
    if op.verb in (Verb.GET, Verb.ACQUIRE):
        return _item_response(op, result)
    return Response(200)


def locked_response(result: ItemResult) -> Response:
    """423 with the holder's cookie, the lock's age in seconds and its date in .NET ticks."""
    assert result.db_now is not None
    headers = [(H_LOCK_COOKIE, str(result.lock_cookie or 0)), (H_LOCK_AGE, str(lock_age_seconds(result.lock_date, result.db_now)))]
    if result.lock_date is not None:
        headers.append((H_LOCK_DATE, str(dotnet_ticks(result.lock_date))))
    return Response(423, tuple(headers))


def _item_response(op: Operation, result: ItemResult) -> Response:
    headers = [(H_TIMEOUT, str(result.timeout_minutes))]
    if result.action_flags:
        headers.append((H_ACTION_FLAGS, str(result.action_flags)))
    if op.verb is Verb.ACQUIRE:
        headers.append((H_LOCK_COOKIE, str(result.lock_cookie)))
    return Response(200, tuple(headers), result.data or b"")


def bad_request(reason: str, *, close: bool = False) -> Response:
    """400 with a short plain-text reason (the client ignores the body)."""
    return Response(400, body=reason.encode("utf-8", "replace")[:512], close=close)


def encode(response: Response, version: str, *, head: bool = False) -> bytes:
    """The bytes of ``response``: status line, ``Content-Length``, ``X-AspNet-Version``, the
    other headers, and the body (none for HEAD)."""
    body = b"" if head else response.body
    lines = [
        f"HTTP/1.1 {response.status} {REASONS.get(response.status, 'Unknown')}",
        f"{H_CONTENT_LENGTH}: {len(body)}",
        f"{H_VERSION}: {version}",
    ]
    lines += [f"{name}: {value}" for name, value in response.headers]
    if response.close:
        lines.append("Connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body
