"""THE place where exceptions become HTTP responses.

Two tables: ``SessdbError`` subclasses to statuses (looked up along the class's MRO), and
SQLSTATEs to statuses for database errors that escape a handler. Anything else is a 500 with a
generic message; the traceback goes to the log, never to the client.
"""

from __future__ import annotations

import json
import logging

import psycopg
from aiohttp import web

from sessdb import errors

log = logging.getLogger("sessdb.web")

STATUS_BY_ERROR: dict[type[errors.SessdbError], int] = {
    errors.BadRequest: 400,
    errors.Unauthorized: 401,
    errors.Forbidden: 403,
    errors.NotFound: 404,
    errors.MethodNotAllowed: 405,
    errors.MethodNotImplemented: 501,
    errors.RequestTimeout: 504,
    errors.ServiceUnavailable: 503,
    errors.DatabaseError: 503,
    errors.SessdbError: 500,
}


def status_for(exc: errors.SessdbError) -> int:
    """The HTTP status of a sessdb error, by the first class of its MRO in the table."""
    for cls in type(exc).__mro__:
        if cls in STATUS_BY_ERROR:
            return STATUS_BY_ERROR[cls]  # type: ignore[index]
    return 500


def error_response(status: int, message: str, *, code: str | None = None, headers: dict[str, str] | None = None) -> web.Response:
    """A JSON error body ``{"code", "message", "detail", "hint"}`` with the given status."""
    body = {"code": code, "message": message, "detail": None, "hint": None}
    return web.Response(status=status, text=json.dumps(body), content_type="application/json", headers=headers)


def response_for(exc: errors.SessdbError) -> web.Response:
    """The response for a sessdb error, with the headers its status calls for."""
    status = status_for(exc)
    headers: dict[str, str] = {}
    if isinstance(exc, errors.MethodNotAllowed):
        headers["Allow"] = ", ".join(exc.allowed)
    if isinstance(exc, errors.Unauthorized):
        headers["WWW-Authenticate"] = f'Basic realm="{exc.realm}", charset="UTF-8"'
    if isinstance(exc, errors.ServiceUnavailable) and exc.retry_after is not None:
        headers["Retry-After"] = str(exc.retry_after)
    return error_response(status, str(exc), headers=headers)


@web.middleware
async def error_middleware(request: web.Request, handler):  # type: ignore[no-untyped-def]
    """Turn every exception a handler lets out into a clean response (the only such place)."""
    try:
        return await handler(request)
    except web.HTTPException:
        raise
    except errors.SessdbError as exc:
        return response_for(exc)
    except psycopg.OperationalError as exc:
        log.warning("database unavailable for %s %s: %s", request.method, request.path, exc)
        return error_response(503, "the database is unavailable", headers={"Retry-After": "1"})
    except psycopg.Error as exc:
        diag = exc.diag
        return error_response(500, diag.message_primary or str(exc), code=exc.sqlstate)
    except Exception:
        log.exception("unhandled error for %s %s", request.method, request.path)
        return error_response(500, "internal server error")
