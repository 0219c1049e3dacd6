"""The session-state store provider: ASP.NET's ``SessionStateStoreProviderBase`` in Python.

``SessionStateStore`` keeps items in ``sessdb.state_items``, the table the state server uses,
with the same SQL functions, so Python front ends, the wire protocol and any number of
processes share one store and one set of locks. Method names are the .NET ones in Python
spelling; the ``HttpContext`` argument is dropped (``initialize_request`` and ``end_request``
take an optional context and ignore it). Like the ASP.NET providers, the get methods never
wait: a locked item comes back as ``locked=True`` with the holder's ``lock_id`` and
``lock_age``; the caller (``sessdb.aspnet_session``) decides to wait or to break the lock.
Waiting is made cheap by ``watch``: pass ``watch=True`` to a get and await the ``Watch``
returned by ``watch(session_id)``, which fires when the lock is released anywhere.

Item keys follow the .NET 4.x out-of-process client: ``/<app>(<base64 sha256(app)>)/<id>``,
so a Python application named like an IIS application id shares that application's keys.
"""

from __future__ import annotations

import base64
import enum
import hashlib
import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Protocol

from sessdb.stateserver import store
from sessdb.stateserver.locks import ItemResult, Status, lock_age
from sessdb.stateserver.pool import StatePool
from sessdb.stateserver.protocol import DEFAULT_TIMEOUT, MAX_TIMEOUT
from sessdb.stateserver.waiters import ReleaseWatcher, Watch

__all__ = [
    "GetItemResult",
    "JsonSerializer",
    "SessionStateActions",
    "SessionStateStore",
    "SessionStateStoreData",
    "application_key_prefix",
]


class SessionStateActions(enum.IntEnum):
    """``SessionStateActions``: whether a fetched item still needs initializing."""

    NONE = 0
    INITIALIZE_ITEM = 1


@dataclass
class SessionStateStoreData:
    """``SessionStateStoreData``: the session's items and its timeout in minutes."""

    items: dict[str, Any] = field(default_factory=dict)
    timeout: int = DEFAULT_TIMEOUT
    static_objects: dict[str, Any] | None = None


@dataclass(frozen=True)
class GetItemResult:
    """What ``get_item``/``get_item_exclusive`` report (the .NET out parameters).

    ``item`` is None when the item is missing or locked by someone else; ``locked``,
    ``lock_age`` and ``lock_id`` then describe the holder's lock. After a successful exclusive
    get ``lock_id`` is the caller's own lock cookie.
    """

    item: SessionStateStoreData | None
    locked: bool = False
    lock_age: timedelta = timedelta(0)
    lock_id: int | None = None
    actions: SessionStateActions = SessionStateActions.NONE


class Serializer(Protocol):
    """Turns a session's items into the stored bytes and back."""

    def dumps(self, items: dict[str, Any]) -> bytes: ...

    def loads(self, data: bytes) -> dict[str, Any]: ...


class JsonSerializer:
    """Items as a UTF-8 JSON object (the default: safe to load, readable in SQL)."""

    def dumps(self, items: dict[str, Any]) -> bytes:
        """Encode; raises ``TypeError`` for values JSON cannot hold."""
        return json.dumps(items, separators=(",", ":")).encode()

    def loads(self, data: bytes) -> dict[str, Any]:
        """Decode; empty data is an empty session."""
        return json.loads(data) if data else {}


def application_key_prefix(application: str) -> str:
    """``/<app>(<base64 sha256 of app>)/``: the key prefix the .NET 4.x client uses for ``app``."""
    digest = base64.b64encode(hashlib.sha256(application.encode("utf-8")).digest()).decode()
    path = application if application.startswith("/") else "/" + application
    return f"{path}({digest})/"


class SessionStateStore:
    """An async ``SessionStateStoreProviderBase`` on PostgreSQL.

    ``open()`` (or ``async with``) starts the connection pool and, with ``listen=True``, the
    LISTEN connection behind ``watch``. Database failures raise ``psycopg.Error``; they are
    never reported as a missing item.
    """

    def __init__(self, dsn: str, *, application: str = "/", pool_size: int = 4,
                 serializer: Serializer | None = None, listen: bool = True) -> None:
        self.application = application
        self.prefix = application_key_prefix(application)
        self.serializer: Serializer = serializer or JsonSerializer()
        self.pool = StatePool(dsn, pool_size, app_name="sessdb-provider")
        self._watcher = ReleaseWatcher(self.pool.connect) if listen else None

    async def open(self) -> SessionStateStore:
        """Start listening for releases (when enabled); connections open on first use."""
        if self._watcher is not None:
            await self._watcher.start()
        return self

    async def close(self) -> None:
        """Close every connection and wake all waiters."""
        if self._watcher is not None:
            await self._watcher.stop()
        await self.pool.close()

    async def __aenter__(self) -> SessionStateStore:
        return await self.open()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def key(self, session_id: str) -> str:
        """The ``state_items`` key of a session id in this application."""
        return self.prefix + session_id

    # -- SessionStateStoreProviderBase -------------------------------------------------------

    async def initialize_request(self, context: object = None) -> None:
        """Per-request set-up; nothing to do for this store."""

    async def end_request(self, context: object = None) -> None:
        """Per-request clean-up; nothing to do for this store (locks are released explicitly)."""

    async def get_item(self, session_id: str, *, watch: bool = False) -> GetItemResult:
        """Read without locking; a locked item comes back as ``locked`` with no data."""
        return self._result(await self._call(store.get, self.key(session_id), exclusive=False, watch=watch))

    async def get_item_exclusive(self, session_id: str, *, watch: bool = False) -> GetItemResult:
        """Read and lock; ``lock_id`` is then the caller's cookie. Never waits for a lock."""
        return self._result(await self._call(store.get, self.key(session_id), exclusive=True, watch=watch))

    async def set_and_release_item_exclusive(self, session_id: str, item: SessionStateStoreData,
                                             lock_id: int | None, new_item: bool = False) -> bool:
        """Store ``item`` and release the lock ``lock_id``; with ``new_item`` insert a new item.

        Without ``new_item`` the write happens only if ``lock_id`` is still the item's cookie:
        a holder whose lock was broken and taken over gets False and changes nothing (ASP.NET's
        SQL provider semantics; the wire protocol lets any cookie overwrite an unlocked item).
        """
        data = self.serializer.dumps(item.items)
        cookie = None if new_item else lock_id
        result = await self._call(store.put, self.key(session_id), data, timeout=_timeout(item.timeout), cookie=cookie,
                                  strict=not new_item)
        return self._released(session_id, result)

    async def release_item_exclusive(self, session_id: str, lock_id: int) -> bool:
        """Release the lock if ``lock_id`` still holds it (also how a stale lock is broken)."""
        result = await self._call(store.release, self.key(session_id), lock_id)
        return self._released(session_id, result)

    async def remove_item(self, session_id: str, lock_id: int | None, item: SessionStateStoreData | None = None) -> bool:
        """Delete the item when ``lock_id`` is its cookie, or when it is unlocked and ``lock_id``
        is None (``Session.Abandon``)."""
        result = await self._call(store.remove, self.key(session_id), lock_id, strict=lock_id is not None)
        return self._released(session_id, result)

    async def reset_item_timeout(self, session_id: str) -> bool:
        """Slide the item's expiry; False when there is no live item."""
        return (await self._call(store.touch, self.key(session_id))).found

    def create_new_store_data(self, timeout: int = DEFAULT_TIMEOUT) -> SessionStateStoreData:
        """A new empty session in memory (no store I/O)."""
        return SessionStateStoreData({}, _timeout(timeout))

    async def create_uninitialized_item(self, session_id: str, timeout: int = DEFAULT_TIMEOUT) -> None:
        """Insert an empty item flagged InitializeItem; never overwrites a live item."""
        data = self.serializer.dumps({})
        await self._call(store.put, self.key(session_id), data, timeout=_timeout(timeout), cookie=None, extra_flags=1)

    def set_item_expire_callback(self, callback: Callable[..., Any] | None) -> bool:
        """False: like the state server, SQL and Redis stores, this one raises no Session_End."""
        return False

    async def dispose(self) -> None:
        """Release every resource (same as ``close``)."""
        await self.close()

    # -- waiting -----------------------------------------------------------------------------

    @contextmanager
    def watch(self, session_id: str) -> Iterator[Watch]:
        """A ``Watch`` that fires when the session's lock is released by anyone.

        Enter it *before* the ``get_item*(..., watch=True)`` call that may find the item
        locked. Requires ``listen=True``.
        """
        if self._watcher is None:
            raise RuntimeError("this SessionStateStore was opened with listen=False")
        with self._watcher.watch(self.key(session_id)) as watch:
            yield watch

    # -- internals ---------------------------------------------------------------------------

    async def _call(self, operation: Callable[..., Any], *args: Any, **kwargs: Any) -> ItemResult:
        async with self.pool.connection() as conn:
            return await operation(conn, *args, **kwargs)  # type: ignore[no-any-return]

    def _result(self, result: ItemResult) -> GetItemResult:
        if result.status is Status.NOT_FOUND:
            return GetItemResult(None)
        assert result.db_now is not None
        if result.status is Status.LOCKED:
            return GetItemResult(None, True, lock_age(result.lock_date, result.db_now), result.lock_cookie)
        item = SessionStateStoreData(self.serializer.loads(result.data or b""), result.timeout_minutes or 0)
        actions = SessionStateActions(result.action_flags & 1)
        return GetItemResult(item, False, timedelta(0), result.lock_cookie, actions)

    def _released(self, session_id: str, result: ItemResult) -> bool:
        if result.status is not Status.OK:
            return False
        if self._watcher is not None:
            self._watcher.wake(self.key(session_id))  # waiters in this process need no round trip
        return True


def _timeout(minutes: int) -> int:
    if not 0 <= int(minutes) <= MAX_TIMEOUT:
        raise ValueError(f"session timeout must be 0..{MAX_TIMEOUT} minutes, got {minutes}")
    return int(minutes)
