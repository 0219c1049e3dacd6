"""One HTTP session and one request's view of session changes (pure: no I/O, no clock reads).

A session pins a backend. It is *busy* while a request runs in it, *idle* otherwise, and
*marked* once an admin dropped it (no new request may use it). Its inactivity clock starts
when a request releases it (``last_release``); a busy session never expires.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from datetime import datetime
from enum import Enum
from typing import Any


class Grant(Enum):
    """What a request waiting on a session is told when its turn comes."""

    RUN = "run"  # run in the session
    SESSIONLESS = "sessionless"  # the session was deleted or renamed: run without it


PENDING_DELETE = object()

# Seconds a session's row of sessdb.http_sessions may go without its last release time: a
# request that ends within them leaves the row alone (see ``Session.mirror_written``).
MIRROR_SLACK = 1


@dataclass(eq=False)
class Session:
    """A live HTTP session and its FIFO of waiting requests."""

    id: str
    backend: Any  # sessdb.connection.Backend
    created_at: datetime
    timeout_minutes: float
    creator_addr: str | None
    slot: int | None = None
    busy: bool = True
    last_release: float | None = None  # monotonic seconds
    last_time: datetime | None = None  # wall clock of the last release ('' until the creator's)
    marked: str | None = None  # why it is being dropped: 'admin', 'killed'
    closed: bool = False
    aliases: set[str] = field(default_factory=set)  # pending ids of the running request
    queue: deque[Any] = field(default_factory=deque)  # scheduler Waiters
    mirrored_at: str | None = None  # PostgreSQL's epoch seconds when the mirror row last got a release time
    mirrored_peer: str | None = None  # the client address the mirror row holds

    def usable(self) -> bool:
        """Whether a new request may join this session."""
        return not self.closed and self.marked is None

    def answers_to(self, session_id: str) -> bool:
        """Whether a request presenting ``session_id`` belongs to this session."""
        return session_id == self.id or session_id in self.aliases

    def expired(self, now: float) -> bool:
        """Idle past its timeout at monotonic time ``now``."""
        if self.busy or self.last_release is None:
            return False
        return now >= self.last_release + self.timeout_minutes * 60.0

    def mirror_written(self, peer: str | None) -> str:
        """When the session's mirror row last got a release time, for a request from ``peer``
        (its bookkeeping writes the row once that is ``MIRROR_SLACK`` old); ``''``: write it in
        any case (never written, written since with another address, or a timeout change that
        may have rolled back).

        Other connections read an idle session's last release from PostgreSQL itself (when its
        connection went idle), and a busy one's from the row: at most ``MIRROR_SLACK`` early.
        """
        if self.mirrored_at is None or peer != self.mirrored_peer:
            return ""
        return self.mirrored_at

    def mirrored(self, peer: str | None, at: str) -> None:
        """A committed request wrote the mirror row, with ``peer``, at ``at`` (PostgreSQL's epoch)."""
        self.mirrored_at, self.mirrored_peer = at, peer

    def release(self, now: float, wall: datetime) -> None:
        """A request let go of the session and nobody is waiting."""
        self.busy = False
        self.last_release = now
        self.last_time = wall


@dataclass(eq=False)
class RequestSessions:
    """What one request did to sessions while its statement ran."""

    inherited: Session | None  # the session the request started in
    peer: str | None
    created: Session | None = None  # a creator request's current session
    pending: object = None  # None, PENDING_DELETE, or the pending id (str)
    replaced_ids: list[str] = field(default_factory=list)  # ids a creator renamed away from

    @property
    def creator(self) -> bool:
        """A request that started without a session (its changes act at once)."""
        return self.inherited is None

    @property
    def session(self) -> Session | None:
        """The session the request runs in now."""
        return self.created if self.creator else self.inherited
