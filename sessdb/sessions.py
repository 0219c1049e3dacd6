"""The session registry and the per-session scheduler.

Ids map to sessions in memory (the authority; ``sessdb.http_sessions`` only mirrors it). A
request for a busy session waits in that session's FIFO, at most ``SESSION_QUEUE_LIMIT``
deep; when the running request releases the session the next waiter is granted it at once,
with no polling. Waiters of a session that was deleted or renamed away are granted
``SESSIONLESS``; waiters of a dropped session are failed with 503.

Session changes reach the registry as events from the ``sessdb`` SQL functions while the
statement still runs, so a new id is registered immediately (contract 5.4).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from sessdb.errors import Forbidden, ServiceUnavailable
from sessdb.session import PENDING_DELETE, Grant, RequestSessions, Session

log = logging.getLogger("sessdb.scheduler")


def wall_now() -> datetime:
    """The current wall-clock time, in UTC."""
    return datetime.now(timezone.utc)


@dataclass(eq=False)
class Waiter:
    """A request waiting for its turn in a session."""

    presented_id: str
    future: asyncio.Future[Grant]

    def grant(self, grant: Grant) -> bool:
        """Hand the turn over; False when the request is gone (client left)."""
        if self.future.done():
            return False
        self.future.set_result(grant)
        return True

    def fail(self, exc: Exception) -> bool:
        """Fail the waiting request; False when it is gone."""
        if self.future.done():
            return False
        self.future.set_exception(exc)
        return True


class SessionManager:
    """Every live session of this engine, by id and by backend pid."""

    def __init__(self, *, queue_limit: int, default_timeout: Callable[[], float], bind_ip: bool,
                 on_closed: Callable[[Session], None], max_sessions: int = 200) -> None:
        self.queue_limit = queue_limit
        self.max_sessions = max_sessions
        self.default_timeout = default_timeout  # minutes, for sessions created from now on
        self.bind_ip = bind_ip
        self._on_closed = on_closed
        self._by_id: dict[str, Session] = {}
        self._by_pid: dict[int, Session] = {}

    # -- lookup --------------------------------------------------------------------------------

    def lookup(self, session_id: str | None) -> Session | None:
        """The usable session that answers to ``session_id``, or None (run sessionless)."""
        if not session_id:
            return None
        session = self._by_id.get(session_id)
        return session if session is not None and session.usable() else None

    def by_pid(self, pid: int) -> Session | None:
        """The session whose backend has this pid."""
        return self._by_pid.get(pid)

    def __iter__(self) -> Iterator[Session]:
        return iter(list(self._by_pid.values()))

    def __len__(self) -> int:
        return len(self._by_pid)

    def register(self, session: Session) -> None:
        """Add a session the engine made itself (``session => 'required'``)."""
        self._by_id[session.id] = session
        self._by_pid[session.backend.pid] = session

    # -- scheduling ----------------------------------------------------------------------------

    async def enter(self, session: Session, presented_id: str, peer: str | None) -> Grant:
        """Wait for the session's turn; raises ``Forbidden`` (other client) or 503 (queue full, dropped)."""
        if self.bind_ip and session.creator_addr is not None and peer != session.creator_addr:
            raise Forbidden("this session belongs to another client address")
        if not session.busy:
            session.busy = True
            return Grant.RUN
        if len(session.queue) >= self.queue_limit:
            raise ServiceUnavailable(f"too many requests waiting on session {session.id!r}", retry_after=1)
        waiter = Waiter(presented_id, asyncio.get_running_loop().create_future())
        session.queue.append(waiter)
        try:
            return await waiter.future
        except asyncio.CancelledError:
            # Critical section: the turn may have been granted just as the client left.
            if waiter.future.done() and not waiter.future.cancelled() and waiter.future.exception() is None:
                if waiter.future.result() is Grant.RUN:
                    self.leave(session)
            elif waiter in session.queue:
                session.queue.remove(waiter)
            raise

    def leave(self, session: Session) -> None:
        """The running request is done with the session: hand it on, or let it idle."""
        session.last_time = wall_now()
        while session.queue:
            waiter = session.queue.popleft()
            if session.closed or session.marked is not None or not session.answers_to(waiter.presented_id):
                waiter.grant(Grant.SESSIONLESS)
                continue
            if waiter.grant(Grant.RUN):
                return
        session.release(time.monotonic(), wall_now())

    def _release_waiters(self, session: Session, *, keep: Callable[[Waiter], bool] = lambda w: False) -> None:
        """Grant SESSIONLESS to waiters that no longer belong to the session."""
        kept = [w for w in session.queue if keep(w)]
        for waiter in session.queue:
            if waiter not in kept:
                waiter.grant(Grant.SESSIONLESS)
        session.queue.clear()
        session.queue.extend(kept)

    def _fail_waiters(self, session: Session, exc: Exception) -> None:
        for waiter in session.queue:
            waiter.fail(exc)
        session.queue.clear()

    # -- events from SQL ----------------------------------------------------------------------

    def apply_event(self, run: RequestSessions, backend: Any, event: dict[str, Any]) -> None:
        """Apply a ``session`` event raised by the request's statement (synchronously)."""
        op = event.get("op")
        if op == "set" and run.creator:
            self._creator_set(run, backend, event.get("id"), event.get("slot"))
        elif op == "pending" and not run.creator:
            self._pending(run, event.get("id"), bool(event.get("delete")))
        elif op == "timeout":
            session = run.session
            minutes = event.get("minutes")
            if session is not None and isinstance(minutes, (int, float)) and minutes > 0:
                session.timeout_minutes = float(minutes)
                session.mirrored_at = None  # the next request writes the row, should this one roll back

    def _taken(self, session_id: str, by: Session | None) -> bool:
        """Whether ``session_id`` belongs to a session other than ``by``.

        The SQL functions refuse such an id (SD939) through its advisory lock, so an event that
        claims it was forged by the statement: the engine keeps its invariants and ignores it.
        """
        other = self._by_id.get(session_id)
        if other is not None and other is not by and not other.closed:
            log.warning("ignored a session event for %r, which another session holds", session_id)
            return True
        return False

    def _creator_set(self, run: RequestSessions, backend: Any, new_id: str | None, slot: Any) -> None:
        current = run.created
        if new_id is not None and self._taken(new_id, current):
            return
        if current is None and new_id is not None and len(self._by_pid) >= self.max_sessions:
            log.warning("ignored a session event past MAX_SESSIONS")
            return
        if current is not None:
            self._forget_id(current.id)
            run.replaced_ids.append(current.id)
            self._release_waiters(current)
            if new_id is None:
                self._forget(current)
                current.closed = True
                run.created = None
                return
            current.id = new_id
            self._by_id[new_id] = current
            return
        if new_id is None:
            return
        session = Session(id=new_id, backend=backend, created_at=wall_now(), timeout_minutes=self.default_timeout(),
                          creator_addr=run.peer, slot=slot if isinstance(slot, int) else None, busy=True)
        self._by_id[new_id] = session
        self._by_pid[backend.pid] = session
        run.created = session
        log.debug("session %s created on backend %s", new_id, backend.pid)

    def _pending(self, run: RequestSessions, pending_id: str | None, delete: bool) -> None:
        session = run.inherited
        assert session is not None
        if pending_id is not None and not delete and self._taken(pending_id, session):
            return
        for alias in session.aliases:
            self._forget_id(alias)
        session.aliases.clear()
        if delete:
            run.pending = PENDING_DELETE
        elif pending_id is None or pending_id == session.id:
            run.pending = None
        else:
            run.pending = pending_id
            session.aliases.add(pending_id)
            self._by_id[pending_id] = session

    # -- request end --------------------------------------------------------------------------

    def finish(self, run: RequestSessions, committed: bool) -> Session | None:
        """Settle a request's session changes; returns the session the backend now belongs to.

        For an inheriting request the pending change replaces the session on commit and is
        discarded otherwise (contract 5.3). The caller then calls ``leave`` or ``close``.
        """
        if run.creator:
            return run.created
        session = run.inherited
        assert session is not None
        pending, aliases = run.pending, set(session.aliases)
        session.aliases.clear()
        if not committed or pending is None:
            for alias in aliases:
                self._forget_id(alias)
            return session
        if pending is PENDING_DELETE:
            self._forget(session)
            self._release_waiters(session)
            session.closed = True
            return None
        old_id = session.id
        self._forget_id(old_id)
        session.id = str(pending)
        self._by_id[session.id] = session
        self._release_waiters(session, keep=lambda w: w.presented_id == session.id)
        log.debug("session %s renamed to %s", old_id, session.id)
        return session

    # -- ending sessions ----------------------------------------------------------------------

    def drop(self, session: Session, reason: str) -> None:
        """Admin drop or a killed backend (contract 5.6): no new request may use the session.

        Its waiters are answered 503 at once. An idle session is closed by the next sweep; a
        busy one when its request ends.
        """
        if session.closed or session.marked is not None:
            return
        session.marked = reason
        self._forget_id(session.id)
        for alias in session.aliases:
            self._forget_id(alias)
        self._fail_waiters(session, ServiceUnavailable(f"session {session.id!r} was dropped", retry_after=1))

    def close(self, session: Session) -> None:
        """Forget a session that no request uses; its backend goes to ``on_closed``."""
        if session.closed:
            return
        self._forget(session)
        self._release_waiters(session)
        session.closed = True
        self._on_closed(session)

    def expired(self, now: float) -> list[Session]:
        """Idle sessions past their timeout, and idle sessions marked for deletion."""
        return [s for s in self if not s.busy and (s.marked is not None or s.expired(now))]

    def _forget_id(self, session_id: str) -> None:
        self._by_id.pop(session_id, None)

    def _forget(self, session: Session) -> None:
        for key in [k for k, v in self._by_id.items() if v is session]:
            del self._by_id[key]
        if self._by_pid.get(session.backend.pid) is session:
            del self._by_pid[session.backend.pid]
