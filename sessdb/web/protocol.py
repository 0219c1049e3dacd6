"""HTTP/1.1 connection handling on top of aiohttp's, with SQL Anywhere's answers to bad input.

aiohttp's parser answers every malformed request with 400. sessdb refines that (contract
section 3 and SQL Anywhere's error table): an unknown method is 501, a request line over
8 KiB is 414, an oversized header 431, anything else malformed 400; each closes the
connection. A client that opens a connection, or starts a request, and then sends nothing for
``read_timeout`` seconds (30 by default, SQL Anywhere's ``TO``) gets 408 and is disconnected.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from typing import Any

from aiohttp import http_exceptions, web
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_server import Server

from sessdb.execute import Ticket

log = logging.getLogger("sessdb.web")

REQUEST_LINE_LIMIT = 8192
HEADER_FIELD_LIMIT = 8190  # must differ from REQUEST_LINE_LIMIT (see status_for_parse_error)
READ_TIMEOUT = 30.0


def _json_error(status: int, message: str) -> web.Response:
    body = json.dumps({"code": None, "message": message, "detail": None, "hint": None})
    response = web.Response(status=status, text=body, content_type="application/json")
    response.force_close()
    return response


_REQUEST_LINE = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+ \S+ HTTP/\d\.\d\Z")
_QUOTED_LINE = re.compile(r"b'((?:[^'\\]|\\.)*)'")


def _offending_line(exc: http_exceptions.BadHttpMethod) -> str:
    """The request line a bad-method error is about (the C parser quotes it in the message)."""
    if exc.args and exc.args[0]:
        return str(exc.args[0])
    found = _QUOTED_LINE.search(exc.message)
    return found.group(1) if found else ""


def status_for_parse_error(exc: BaseException | None) -> tuple[int, str]:
    """The status and message for an error of aiohttp's HTTP parser."""
    if isinstance(exc, http_exceptions.BadHttpMethod):
        # llhttp reports garbage (a TLS hello, "NOT A REQUEST") as a bad method too: only a
        # well-formed request line with an unknown method is 501
        if _REQUEST_LINE.match(_offending_line(exc)):
            return 501, "method not implemented"
        return 400, f"malformed HTTP request: {exc.message.splitlines()[0]}"
    if isinstance(exc, http_exceptions.LineTooLong):
        # the parser reports the limit it hit: the request line's and a header's differ
        if len(exc.args) > 1 and str(exc.args[1]) == str(REQUEST_LINE_LIMIT):
            return 414, "request line too long"
        return 431, "request header too long"
    if isinstance(exc, http_exceptions.HttpProcessingError):
        return 400, f"malformed HTTP request: {exc.message}"
    return 400, "malformed HTTP request"


class SessdbRequestHandler(RequestHandler):
    """aiohttp's protocol with sessdb's statuses for parse errors and a receive timeout."""

    def __init__(self, *args: Any, read_timeout: float = READ_TIMEOUT, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._read_timeout = read_timeout
        self._read_timer: asyncio.TimerHandle | None = None
        self._last_read = 0.0
        self._partial = False
        self._ticket: Ticket | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self._last_read = self._loop.time()
        self._arm_read_timer(self._read_timeout)

    def connection_lost(self, exc: BaseException | None) -> None:
        self._disarm_read_timer()
        ticket = self._ticket
        if ticket is not None and ticket.shielded:
            # not cancelled: the engine finishes the call, settles it and then ends the request
            self._task_handler = None
            ticket.client_left()
        super().connection_lost(exc)

    def guard(self, ticket: Ticket) -> None:
        """Tell ``ticket``, rather than cancel the handler, when the client leaves during its call."""
        ticket.guarded = True
        self._ticket = ticket

    def unguard(self, ticket: Ticket) -> None:
        """The call of ``ticket`` is over."""
        if self._ticket is ticket:
            self._ticket = None

    def data_received(self, data: bytes) -> None:
        before = self._request_count
        super().data_received(data)
        self._partial = self._request_count == before
        # the timer is not moved on every read (a cancel and a new timer per request); it
        # looks at the time of the last read when it fires
        self._last_read = self._loop.time()

    def _arm_read_timer(self, delay: float) -> None:
        self._disarm_read_timer()
        if self._read_timeout > 0:
            self._read_timer = self._loop.call_later(delay, self._read_timed_out)

    def _disarm_read_timer(self) -> None:
        if self._read_timer is not None:
            self._read_timer.cancel()
            self._read_timer = None

    def _read_timed_out(self) -> None:
        self._read_timer = None
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        quiet = self._loop.time() - self._last_read
        if quiet < self._read_timeout:
            self._arm_read_timer(self._read_timeout - quiet)
            return
        waiting_for_first = self._request_count == 0
        if self._current_request is not None or self._messages or not (self._partial or waiting_for_first):
            # a request is being served, or an idle keep-alive connection (aiohttp's own
            # keepalive_timeout closes those): nothing to time out here
            self._arm_read_timer(self._read_timeout)
            return
        log.info("closing a connection that sent nothing for %.0fs (408)", self._read_timeout)
        body = json.dumps({"code": None, "message": "request timeout", "detail": None, "hint": None}).encode()
        transport.write(
            b"HTTP/1.1 408 Request Timeout\r\nContent-Type: application/json\r\nConnection: close\r\n"
            + f"Content-Length: {len(body)}\r\n\r\n".encode() + body
        )
        self.force_close()
        transport.close()

    def handle_error(self, request: Any, status: int = 500, exc: BaseException | None = None,
                     message: str | None = None) -> web.StreamResponse:
        if status == 400:
            status, text = status_for_parse_error(exc)
            log.info("answered %d to %s: %s", status, request.remote, text)
            if request.writer.output_size > 0:
                raise ConnectionError("response already started")
            return _json_error(status, text)
        return super().handle_error(request, status, exc, message)


class SessdbServer(Server):
    """aiohttp's low-level server, making ``SessdbRequestHandler`` protocols."""

    def __call__(self) -> RequestHandler:
        return SessdbRequestHandler(self, loop=self._loop, **self._kwargs)


class SessdbRunner(web.AppRunner):
    """An ``AppRunner`` whose connections use ``SessdbRequestHandler``, and whose service
    requests go to the engine without aiohttp's router (``handlers.dispatcher``).

    Extra keyword arguments: ``read_timeout`` (seconds, 30 by default).
    """

    def __init__(self, app: web.Application, **kwargs: Any) -> None:
        kwargs.setdefault("max_line_size", REQUEST_LINE_LIMIT)
        kwargs.setdefault("max_field_size", HEADER_FIELD_LIMIT)
        kwargs.setdefault("handler_cancellation", True)
        super().__init__(app, **kwargs)

    async def _make_server(self) -> Server:
        app = self.app
        loop = asyncio.get_running_loop()
        app._set_loop(loop)
        app.on_startup.freeze()
        await app.startup()
        app.freeze()
        from sessdb.web.handlers import dispatcher  # handlers imports this module

        return SessdbServer(dispatcher(app), request_factory=app._make_request, loop=loop, **self._kwargs)
