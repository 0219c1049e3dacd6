"""Item state as the store reports it, and the pure rules about locks: age, ticks, breaking.

Nothing here reads a clock: the database reports its own ``now`` with every result (the lock
date was taken by that same clock), and callers pass it in.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime, timedelta, tzinfo

MAX_COOKIE = 2_147_483_647  # the client casts LockCookie to Int32
DOTNET_EPOCH = datetime(1, 1, 1)
TICKS_PER_SECOND = 10_000_000
UNIX_EPOCH_TICKS = 621_355_968_000_000_000  # DateTime(1970, 1, 1).Ticks


class Status(enum.IntEnum):
    """The outcomes an item operation can have (the protocol's status codes)."""

    OK = 200
    NOT_FOUND = 404
    LOCKED = 423


@dataclass(frozen=True)
class ItemResult:
    """One row returned by a ``sessdb.state_*`` function (see ``sql/stateserver.sql``).

    ``lock_cookie`` and ``lock_date`` describe the current lock: on 423 the holder's, after an
    acquire the caller's own. ``data`` is set only on a successful read.
    """

    status: Status
    data: bytes | None = None
    timeout_minutes: int | None = None
    lock_cookie: int | None = None
    lock_date: datetime | None = None
    db_now: datetime | None = None
    action_flags: int = 0

    @property
    def locked(self) -> bool:
        """True when someone else holds the lock (423)."""
        return self.status is Status.LOCKED

    @property
    def found(self) -> bool:
        """True unless the item is absent or expired."""
        return self.status is not Status.NOT_FOUND


def next_cookie(cookie: int) -> int:
    """The cookie an acquire hands out after ``cookie``: +1, wrapping 2,147,483,647 to 1."""
    return 1 if cookie >= MAX_COOKIE else cookie + 1


def lock_age(lock_date: datetime | None, now: datetime) -> timedelta:
    """How long the lock has been held at ``now`` (never negative; zero when unknown)."""
    if lock_date is None:
        return timedelta(0)
    return max(now - lock_date, timedelta(0))


def lock_age_seconds(lock_date: datetime | None, now: datetime) -> int:
    """``LockAge``: whole seconds the lock has been held."""
    return int(lock_age(lock_date, now).total_seconds())


def dotnet_ticks(instant: datetime, tz: tzinfo | None = None) -> int:
    """``LockDate``: .NET ``DateTime.Ticks`` of ``instant`` as wall-clock time in ``tz``.

    ``tz=None`` means the server's local time zone, as the reference server reports it.
    """
    local = instant.astimezone(tz).replace(tzinfo=None)
    return (local - DOTNET_EPOCH) // timedelta(microseconds=1) * 10


def should_break(age: timedelta, execution_timeout: timedelta) -> bool:
    """True when a waiter may force the release of a lock held ``age`` (ASP.NET's rule)."""
    return age >= execution_timeout


def wait_budget(age: timedelta, execution_timeout: timedelta) -> timedelta:
    """How long a waiter waits for a release before it breaks the lock itself."""
    return max(execution_timeout - age, timedelta(0))
