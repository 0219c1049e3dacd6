"""The error classes of sessdb. They know nothing of HTTP: ``sessdb.web.errors`` maps them.

The CLI turns any ``SessdbError`` into a one-line message and exit status 1 (``UsageError``
gives 2); the web layer turns them into statuses in one table.
"""

from __future__ import annotations


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (PostgreSQL's are often several), or its class
    name when the message is empty."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


class SessdbError(Exception):
    """Base of every error sessdb raises on purpose; its message is meant for a user."""


class UsageError(SessdbError):
    """The command line was wrong (exit status 2)."""


class ConfigError(UsageError):
    """A setting has a value that does not parse or is out of range."""


class DatabaseError(SessdbError):
    """PostgreSQL could not be reached, started or used."""


class DataDirError(DatabaseError):
    """The data directory cannot be used: not writable, or it holds something else."""


class ServiceUnavailable(SessdbError):
    """The engine cannot take the request now (queue full, session dropped, shutting down)."""

    def __init__(self, message: str, *, retry_after: int | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class NotFound(SessdbError):
    """No service answers this URL."""


class MethodNotAllowed(SessdbError):
    """The service exists but does not take this method."""

    def __init__(self, message: str, allowed: list[str]) -> None:
        super().__init__(message)
        self.allowed = allowed


class MethodNotImplemented(SessdbError):
    """The HTTP method is not one sessdb knows."""


class BadRequest(SessdbError):
    """The request cannot be understood (malformed body, bad variable encoding)."""


class Unauthorized(SessdbError):
    """Credentials are missing or wrong for a service that needs them."""

    def __init__(self, message: str, realm: str = "sessdb") -> None:
        super().__init__(message)
        self.realm = realm


class Forbidden(SessdbError):
    """The caller is known but may not do this (session of another client, admin surface)."""


class RequestTimeout(SessdbError):
    """A statement ran past REQUEST_TIMEOUT and was cancelled."""
