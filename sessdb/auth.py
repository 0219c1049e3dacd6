"""HTTP Basic credentials checked against PostgreSQL itself.

A service with ``authorization => true`` runs as the role whose name and password the
client sends. The password is verified by logging in to PostgreSQL as that role (so a wrong
password never runs anything); a success is remembered for ``CACHE_SECONDS`` under a salted
hash of the password, so a busy client does not open a connection per request.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import secrets
import time

import psycopg
from psycopg.conninfo import make_conninfo

from sessdb.errors import BadRequest, DatabaseError, Forbidden, Unauthorized

CACHE_SECONDS = 60.0
LOGIN_CONCURRENCY = 4
_CACHE_LIMIT = 10000


def parse_basic(header: str | None) -> tuple[str, str]:
    """(user, password) from an ``Authorization: Basic`` header; raises ``Unauthorized``."""
    if not header:
        raise Unauthorized("this service needs a user name and password")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "basic" or not token.strip():
        raise Unauthorized("this service needs HTTP Basic credentials")
    try:
        decoded = base64.b64decode(token.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        raise BadRequest("malformed Basic credentials") from None
    user, sep, password = decoded.partition(":")
    if not sep or not user:
        raise Unauthorized("malformed Basic credentials")
    return user, password


class Authenticator:
    """Verifies role credentials by logging in to PostgreSQL, with a short positive cache."""

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        self._salt = secrets.token_bytes(16)
        self._verified: dict[tuple[str, bytes], float] = {}
        self._members: dict[tuple[str, str], tuple[bool, float]] = {}
        # logins in flight at once: failed attempts cannot use up PostgreSQL's connections
        self._logins = asyncio.Semaphore(LOGIN_CONCURRENCY)

    async def role_for(self, header: str | None, allowed_role: str | None) -> str:
        """The verified role of the request; raises ``Unauthorized`` or ``Forbidden``."""
        user, password = parse_basic(header)
        key = (user, hashlib.sha256(self._salt + password.encode()).digest())
        now = time.monotonic()
        if self._verified.get(key, 0.0) < now:
            await self._login(user, password, allowed_role)
            if len(self._verified) > _CACHE_LIMIT:
                self._verified.clear()
            self._verified[key] = now + CACHE_SECONDS
        if allowed_role is not None:
            member, until = self._members.get((user, allowed_role), (False, 0.0))
            if until < now:
                await self._login(user, password, allowed_role)
                member, _ = self._members[(user, allowed_role)]
            if not member:
                raise Forbidden(f"role {user!r} may not call this service")
        return user

    async def _login(self, user: str, password: str, allowed_role: str | None) -> None:
        conninfo = make_conninfo(self.dsn, user=user, password=password, application_name="sessdb-auth")
        try:
            async with self._logins:
                conn = await psycopg.AsyncConnection.connect(conninfo, autocommit=True, connect_timeout=10)
        except psycopg.OperationalError as exc:
            if _is_auth_failure(exc):
                raise Unauthorized("wrong user name or password") from None
            raise DatabaseError("cannot verify credentials: the database is unavailable") from None
        try:
            if allowed_role is not None:
                cur = await conn.execute("SELECT pg_has_role(current_user, %s, 'MEMBER')", [allowed_role])
                row = await cur.fetchone()
                self._members[(user, allowed_role)] = (bool(row and row[0]), time.monotonic() + CACHE_SECONDS)
        finally:
            await conn.close()


def _is_auth_failure(exc: psycopg.OperationalError) -> bool:
    text = str(exc)
    # libpq reports login failures without a SQLSTATE, so the server's message is all there is
    return (exc.sqlstate in ("28P01", "28000") or "password authentication failed" in text
            or "is not permitted to log in" in text or "does not exist" in text)
