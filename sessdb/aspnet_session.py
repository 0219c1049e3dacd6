"""ASP.NET session state for aiohttp: ``request.session`` with ``SessionStateModule``'s rules.

``AspNetSessionMiddleware`` drives a ``sessdb.statestore.SessionStateStore`` the way ASP.NET's
module drives its provider (aspnet-state.md section 3):

- a handler that needs session state (the default, or ``@session_state(REQUIRED)``) holds the
  session's lock for its whole run, so requests of one session never interleave, across
  processes too; ``@session_state(READ_ONLY)`` handlers take no lock (they still wait for a
  writer to finish, as in ASP.NET) and may not change the session; ``@session_state(DISABLED)``
  handlers only slide the expiry of a session they carry;
- a request that finds the session locked waits until the lock is released (woken by
  PostgreSQL NOTIFY, not by polling) or until the lock is older than ``execution_timeout``,
  when it breaks the lock as ASP.NET does; at most ``queue_limit`` requests of one session wait
  in one process, one more gets 503;
- ids are 24 characters over ``a-z0-5`` (120 random bits); they travel in the
  ``ASP.NET_SessionId`` cookie or, with ``cookieless=True``, as a ``/(S(<id>))/`` segment after
  the application path: a request without a valid one gets a new id, an uninitialized item is
  created for it, and the client is redirected to the URL with the segment (302 for GET and
  HEAD, 307 otherwise so that a POST keeps its body);
- at the end of the request the session is written and unlocked when it changed (or its
  timeout did), only unlocked when it did not, removed when abandoned; a new session nobody
  wrote to is not stored and gets no cookie; after a handler error the lock is released and
  nothing is written.
"""

from __future__ import annotations

import collections
import re
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, MutableMapping
from dataclasses import dataclass
from datetime import timedelta
from functools import partial
from typing import Any, TypeVar

from aiohttp import web
from yarl import URL

from sessdb.stateserver.locks import should_break, wait_budget
from sessdb.statestore import GetItemResult, SessionStateActions, SessionStateStore, SessionStateStoreData

__all__ = [
    "DISABLED",
    "READ_ONLY",
    "REQUIRED",
    "AspNetSessionMiddleware",
    "Session",
    "SessionReadOnlyError",
    "create_session_id",
    "get_session",
    "session_state",
    "setup",
]

REQUIRED, READ_ONLY, DISABLED = "required", "readonly", "disabled"
ID_ALPHABET = "abcdefghijklmnopqrstuvwxyz012345"
ID_LENGTH = 24
_MODE_ATTR = "__aspnet_session_state__"
_SEGMENT = re.compile(r"\(((?:[A-Z]\([^/()]*\))+)\)")
_PAIR = re.compile(r"([A-Z])\(([^/()]*)\)")
_IMMUTABLE = (str, int, float, bool, bytes, type(None), tuple, frozenset)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
F = TypeVar("F")


class SessionReadOnlyError(RuntimeError):
    """A read-only handler tried to change its session."""


def session_state(mode: str) -> Callable[[F], F]:
    """Mark a handler (function or view class) ``REQUIRED``, ``READ_ONLY`` or ``DISABLED``."""
    if mode not in (REQUIRED, READ_ONLY, DISABLED):
        raise ValueError(f"unknown session state mode {mode!r}")

    def mark(handler: F) -> F:
        setattr(handler, _MODE_ATTR, mode)
        return handler

    return mark


def create_session_id() -> str:
    """A new id: 120 random bits as 24 characters over ``a-z0-5`` (ASP.NET's SessionIDManager)."""
    number = int.from_bytes(secrets.token_bytes(15), "big")
    return "".join(ID_ALPHABET[(number >> (5 * i)) & 31] for i in range(ID_LENGTH))


def valid_session_id(value: str | None) -> bool:
    """True for ids this middleware could have issued."""
    return value is not None and len(value) == ID_LENGTH and all(ch in ID_ALPHABET for ch in value)


def split_cookieless(path: str, app_path: str) -> tuple[str | None, str | None]:
    """(session id, path without the segment) of a ``/app/(S(id))/rest`` path, else (None, None)."""
    if not path.startswith(app_path):
        return None, None
    segment, _, rest = path[len(app_path):].partition("/")
    match = _SEGMENT.fullmatch(segment)
    if match is None:
        return None, None
    values = dict(_PAIR.findall(match.group(1)))
    return values.get("S"), app_path + rest


def cookieless_location(app_path: str, session_id: str, path: str, query: str) -> str:
    """``path`` (under ``app_path``) rewritten with the ``(S(id))`` segment, query kept."""
    rest = path[len(app_path):] if path.startswith(app_path) else path.lstrip("/")
    return f"{app_path}(S({session_id}))/{rest}" + (f"?{query}" if query else "")


class Session(MutableMapping[str, Any]):
    """``request.session``: the session's items plus ASP.NET's ``HttpSessionState`` extras.

    Reading a mutable value marks the session changed (it may be modified in place), as in
    ASP.NET; assigning or deleting does too. In a read-only session changes raise
    ``SessionReadOnlyError``.
    """

    def __init__(self, session_id: str, data: SessionStateStoreData, *, is_new: bool, read_only: bool,
                 cookieless: bool) -> None:
        self.session_id = session_id
        self.is_new = is_new
        self.is_read_only = read_only
        self.is_cookieless = cookieless
        self._data = data
        self._original_timeout = data.timeout
        self.dirty = False
        self.is_abandoned = False

    @property
    def timeout(self) -> int:
        """Minutes of inactivity after which the session expires; settable."""
        return self._data.timeout

    @timeout.setter
    def timeout(self, minutes: int) -> None:
        self._check_writable()
        self._data.timeout = int(minutes)

    @property
    def timeout_changed(self) -> bool:
        """True when the handler changed ``timeout``."""
        return self._data.timeout != self._original_timeout

    @property
    def data(self) -> SessionStateStoreData:
        """The store data behind the mapping."""
        return self._data

    def abandon(self) -> None:
        """End the session at the end of this request (``Session.Abandon``)."""
        self.is_abandoned = True

    def __getitem__(self, name: str) -> Any:
        value = self._data.items[name]
        if not isinstance(value, _IMMUTABLE) and not self.is_read_only:
            self.dirty = True
        return value

    def __setitem__(self, name: str, value: Any) -> None:
        self._check_writable()
        self._data.items[name] = value
        self.dirty = True

    def __delitem__(self, name: str) -> None:
        self._check_writable()
        del self._data.items[name]
        self.dirty = True

    def __iter__(self) -> Iterator[str]:
        return iter(self._data.items)

    def __len__(self) -> int:
        return len(self._data.items)

    def _check_writable(self) -> None:
        if self.is_read_only:
            raise SessionReadOnlyError("this handler has read-only session state")


SESSION_KEY = web.RequestKey("sessdb.aspnet_session", Session)


def get_session(request: web.Request) -> Session | None:
    """The session of a request (also available as ``request.session``), or None."""
    return request.get(SESSION_KEY)


@dataclass
class _State:
    """What the middleware knows of the request's session between acquire and release."""

    session_id: str
    result: GetItemResult
    new_id: bool = False

    @property
    def lock_id(self) -> int | None:
        return None if self.result.locked or self.result.item is None else self.result.lock_id


class AspNetSessionMiddleware:
    """The aiohttp middleware; see the module docstring. Put it last in ``middlewares`` when
    ``cookieless=True``: the re-routed request then skips no other middleware."""

    __middleware_version__ = 1

    def __init__(self, store: SessionStateStore, *, cookieless: bool = False, cookie_name: str = "ASP.NET_SessionId",
                 timeout: int = 20, execution_timeout: float = 110.0, queue_limit: int = 50,
                 default_mode: str = REQUIRED, app_path: str = "/", regenerate_expired_session_id: bool = True,
                 cookie_same_site: str | None = "Lax") -> None:
        self.store = store
        self.cookieless = cookieless
        self.cookie_name = cookie_name
        self.timeout = timeout
        self.execution_timeout = timedelta(seconds=execution_timeout)
        self.queue_limit = queue_limit
        self.default_mode = default_mode
        self.app_path = app_path if app_path.endswith("/") else app_path + "/"
        self.regenerate = regenerate_expired_session_id
        self.same_site = cookie_same_site
        self._waiting: collections.Counter[str] = collections.Counter()

    async def __call__(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        session_id, request, handler = await self._locate(request, handler)
        mode = getattr(request.match_info.handler, _MODE_ATTR, self.default_mode)
        if mode == DISABLED:
            if session_id is not None:
                await self.store.reset_item_timeout(session_id)
            return await handler(request)
        state = await self._acquire(request, session_id, exclusive=mode == REQUIRED)
        session = self._session(state, read_only=mode == READ_ONLY)
        request[SESSION_KEY] = session
        object.__setattr__(request, "session", session)  # request.session, without aiohttp's debug warning
        return await self._run(request, handler, state, session)

    # -- finding the id ------------------------------------------------------------------------

    async def _locate(self, request: web.Request, handler: Handler) -> tuple[str | None, web.Request, Handler]:
        if not self.cookieless:
            value = request.cookies.get(self.cookie_name)
            return (value if valid_session_id(value) else None), request, handler
        session_id, stripped = split_cookieless(request.rel_url.raw_path, self.app_path)
        if stripped is None:
            return None, request, handler
        rerouted, inner = await self._reroute(request, handler, stripped)
        return (session_id if valid_session_id(session_id) else None), rerouted, inner

    async def _reroute(self, request: web.Request, handler: Handler, path: str) -> tuple[web.Request, Handler]:
        """Route the request again without the ``(S(...))`` segment (as aiohttp's own
        normalize_path_middleware does) and rebuild the middlewares that follow this one."""
        query = request.rel_url.raw_query_string
        clone = request.clone(rel_url=URL(path + (f"?{query}" if query else ""), encoded=True))
        match_info = await request.app.router.resolve(clone)
        match_info.add_app(request.app)
        match_info.freeze()
        clone._match_info = match_info
        inner: Handler = match_info.handler
        middlewares = list(request.app.middlewares)
        after = middlewares[middlewares.index(self) + 1:] if self in middlewares else []
        for mw in reversed(after):
            inner = partial(mw, handler=inner)
        return clone, inner

    # -- acquiring -----------------------------------------------------------------------------

    async def _acquire(self, request: web.Request, session_id: str | None, *, exclusive: bool) -> _State:
        if session_id is None:
            if self.cookieless:
                await self._redirect_new(request)
            return _State(create_session_id(), GetItemResult(None), new_id=True)
        result = await self.wait_for_item(session_id, exclusive)
        if result.item is None and exclusive:
            if self.cookieless and self.regenerate:
                await self._redirect_new(request)
            # ASP.NET (DevDiv 146875): create the item first, so concurrent first requests queue.
            await self.store.create_uninitialized_item(session_id, self.timeout)
            result = await self.wait_for_item(session_id, exclusive)
        return _State(session_id, result)

    async def wait_for_item(self, session_id: str, exclusive: bool) -> GetItemResult:
        """Get the item as a handler would before it runs: wait while someone else holds its
        lock (woken by the release), break a lock older than ``execution_timeout``, and raise
        ``HTTPServiceUnavailable`` when ``queue_limit`` requests of this session already wait."""
        get = self.store.get_item_exclusive if exclusive else self.store.get_item
        waiting = False
        try:
            while True:
                with self.store.watch(session_id) as watch:
                    result = await get(session_id, watch=True)
                    if not result.locked:
                        return result
                    if not waiting:
                        self._enqueue(session_id)
                        waiting = True
                    if should_break(result.lock_age, self.execution_timeout):
                        assert result.lock_id is not None
                        await self.store.release_item_exclusive(session_id, result.lock_id)
                        continue
                    await watch.wait(wait_budget(result.lock_age, self.execution_timeout).total_seconds())
        finally:
            if waiting:
                self._waiting[session_id] -= 1
                if self._waiting[session_id] <= 0:
                    del self._waiting[session_id]

    def _enqueue(self, session_id: str) -> None:
        if self._waiting[session_id] >= self.queue_limit:
            raise web.HTTPServiceUnavailable(text="too many requests wait for this session", headers={"Retry-After": "1"})
        self._waiting[session_id] += 1

    async def _redirect_new(self, request: web.Request) -> None:
        session_id = create_session_id()
        await self.store.create_uninitialized_item(session_id, self.timeout)
        path = split_cookieless(request.rel_url.raw_path, self.app_path)[1] or request.rel_url.raw_path
        location = cookieless_location(self.app_path, session_id, path, request.rel_url.raw_query_string)
        if request.method in ("GET", "HEAD"):
            raise web.HTTPFound(location)
        raise web.HTTPTemporaryRedirect(location)

    def _session(self, state: _State, *, read_only: bool) -> Session:
        item = state.result.item
        is_new = item is None or state.result.actions is SessionStateActions.INITIALIZE_ITEM
        data = item if item is not None else self.store.create_new_store_data(self.timeout)
        return Session(state.session_id, data, is_new=is_new, read_only=read_only, cookieless=self.cookieless)

    # -- running and releasing -----------------------------------------------------------------

    async def _run(self, request: web.Request, handler: Handler, state: _State, session: Session) -> web.StreamResponse:
        try:
            response = await handler(request)
        except web.HTTPException as exc:
            await (self._release(state, session) if exc.status < 500 else self._release_on_error(state, session))
            self._maybe_set_cookie(exc, state, session)
            raise
        except BaseException:
            await self._release_on_error(state, session)
            raise
        await self._release(state, session)
        self._maybe_set_cookie(response, state, session)
        return response

    async def _release(self, state: _State, session: Session) -> None:
        """ReleaseRequestState: remove, write and unlock, or only unlock."""
        if session.is_read_only:
            return
        lock_id = state.lock_id
        if session.is_abandoned:
            if lock_id is not None:
                await self.store.remove_item(state.session_id, lock_id)
            return
        if session.dirty or session.timeout_changed:
            await self.store.set_and_release_item_exclusive(state.session_id, session.data, lock_id,
                                                            new_item=lock_id is None)
        elif lock_id is not None and session.is_new:
            # a new session nobody touched is not kept (aspnet-state.md 3.4): the uninitialized
            # item made so that concurrent first requests queue goes away again
            await self.store.remove_item(state.session_id, lock_id)
        elif lock_id is not None:
            await self.store.release_item_exclusive(state.session_id, lock_id)

    async def _release_on_error(self, state: _State, session: Session) -> None:
        if not session.is_read_only and state.lock_id is not None:
            await self.store.release_item_exclusive(state.session_id, state.lock_id)

    def _maybe_set_cookie(self, response: web.StreamResponse, state: _State, session: Session) -> None:
        stored = session.dirty or session.timeout_changed
        if self.cookieless or not state.new_id or not stored or session.is_abandoned or response.prepared:
            return
        cookie = f"{self.cookie_name}={state.session_id}; path=/; HttpOnly"
        if self.same_site:
            cookie += f"; SameSite={self.same_site}"
        response.headers.add("Set-Cookie", cookie)


def setup(app: web.Application, dsn: str, *, application: str = "/", pool_size: int = 4,
          **options: Any) -> AspNetSessionMiddleware:
    """Add the middleware to ``app`` with a store on ``dsn`` that opens and closes with the app."""
    store = SessionStateStore(dsn, application=application, pool_size=pool_size)
    middleware = AspNetSessionMiddleware(store, **options)
    app.middlewares.append(middleware)  # type: ignore[arg-type]

    async def store_ctx(app: web.Application) -> AsyncIterator[None]:
        await store.open()
        try:
            yield
        finally:
            await store.close()

    app.cleanup_ctx.append(store_ctx)
    return middleware
