"""Turning an ``Outcome`` into the HTTP response: status, headers and body by service type.

The application shapes the response with ``sa_set_http_header`` (its events, in order) or
PostgREST's ``response.headers`` / ``response.status``; a failed statement answers 500 with
its SQLSTATE and message unless the application already chose a status (contract 3).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from aiohttp import web

from sessdb.execute import Outcome
from sessdb.soap import CONTENT_TYPE as SOAP_CONTENT_TYPE
from sessdb.soap import SoapFault, SoapRequest, fault_envelope, result_envelope
from sessdb.web.render import render_error, render_result

STATUS_HEADER = "@HttpStatus"
_BREAKS = frozenset("\r\n\x00")
_TIMEOUT_SQLSTATE = "57014"


@dataclass
class ResponsePlan:
    """Headers and status an application asked for while its statement ran."""

    headers: dict[str, tuple[str, str]] = field(default_factory=dict)  # lower name -> (name, value)
    removed: set[str] = field(default_factory=set)  # lower names removed (also server-generated ones)
    status: int | None = None
    reason: str | None = None

    def apply_header_event(self, name: str, value: str | None) -> None:
        """Apply one ``sa_set_http_header`` call (value None removes the header)."""
        if name == STATUS_HEADER:
            if value is not None:
                code, _, reason = value.partition(":")
                self.status, self.reason = int(code), reason or None
            return
        if value is None:
            self.headers.pop(name.lower(), None)
            self.removed.add(name.lower())
        else:
            self.headers[name.lower()] = (name, value)
            self.removed.discard(name.lower())

    def apply_pgrst(self, headers_json: str | None, status: str | None) -> None:
        """Apply PostgREST's ``response.headers`` (a JSON array of objects) and ``response.status``."""
        if headers_json:
            try:
                items = json.loads(headers_json)
            except ValueError:
                items = []
            for item in items if isinstance(items, list) else []:
                if isinstance(item, dict):
                    for name, value in item.items():
                        if isinstance(name, str) and isinstance(value, str) and not _BREAKS.intersection(name + value):
                            self.headers[name.lower()] = (name, value)
        if status and status.strip().isdigit() and 100 <= int(status) <= 999:
            self.status = int(status)


SERVER_HEADERS = frozenset({"date", "server"})


class ServiceResponse(web.Response):
    """A response whose server-generated headers (Date, Server) the application may remove."""

    removed: frozenset[str] = frozenset()

    async def _prepare_headers(self) -> None:
        await super()._prepare_headers()
        for name in self.removed:
            self.headers.popall(name, None)


def build_response(kind: str, outcome: Outcome, plan: ResponsePlan, *, timed_out: bool = False) -> web.Response:
    """The response for a finished call."""
    plan.apply_pgrst(outcome.pgrst_headers, outcome.pgrst_status)
    if outcome.error is None:
        body, ctype = render_result(kind, outcome.columns, outcome.rows)
        status = plan.status or 200
    else:
        status = _error_status(outcome, plan, timed_out)
        diag = outcome.error.diag
        body, ctype = render_error(kind, status, outcome.error.sqlstate, diag.message_primary or str(outcome.error),
                                   diag.message_detail, diag.message_hint)
    return _response(plan, status, body, ctype, failed=outcome.error is not None)


def build_soap_response(request: SoapRequest, fmt: str | None, outcome: Outcome, plan: ResponsePlan, *,
                        timed_out: bool = False) -> web.Response:
    """The response of a SOAP service: its result envelope, or a ``soap:Server`` fault.

    A fault answers 500 (SOAP 1.1 section 6.2; SQL Anywhere answers 200), or 504 for a
    statement cancelled by REQUEST_TIMEOUT, unless the application chose a status.
    """
    plan.apply_pgrst(outcome.pgrst_headers, outcome.pgrst_status)
    if outcome.error is None:
        body = result_envelope(request, fmt, outcome.columns, outcome.rows)
        status = plan.status or 200
    else:
        status = _error_status(outcome, plan, timed_out)
        diag = outcome.error.diag
        fault = SoapFault("Server", diag.message_primary or str(outcome.error), sqlstate=outcome.error.sqlstate,
                          detail=diag.message_detail, hint=diag.message_hint)
        body = fault_envelope(fault)
    return _response(plan, status, body, SOAP_CONTENT_TYPE, failed=outcome.error is not None)


def _error_status(outcome: Outcome, plan: ResponsePlan, timed_out: bool) -> int:
    assert outcome.error is not None
    return plan.status or (504 if timed_out or outcome.error.sqlstate == _TIMEOUT_SQLSTATE else 500)


def _response(plan: ResponsePlan, status: int, body: bytes, ctype: str, *, failed: bool) -> web.Response:
    removed = plan.removed & SERVER_HEADERS
    if removed:
        response: web.Response = ServiceResponse(status=status, reason=plan.reason, body=body)
        response.removed = frozenset(removed)  # type: ignore[attr-defined]
    else:
        response = web.Response(status=status, reason=plan.reason, body=body)
    headers = dict(plan.headers)
    if failed and plan.status is None:
        headers["content-type"] = ("Content-Type", ctype)  # the error document, whatever was set
    headers.setdefault("content-type", ("Content-Type", ctype))
    for name, value in headers.values():
        response.headers[name] = value
    return response
