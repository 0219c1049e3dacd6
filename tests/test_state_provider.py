"""The provider API (``sessdb.statestore``): the scenario behaviours through Python calls."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from sessdb.statestore import (
    SessionStateActions,
    SessionStateStore,
    SessionStateStoreData,
    application_key_prefix,
)
from tests.fix_db import tcp_host
from tests.state_helpers import HANG_GUARD, TcpProxy, clients, row, running_server, travel


@pytest.fixture(scope="module")
async def provider(dsn: str) -> AsyncIterator[SessionStateStore]:
    async with SessionStateStore(dsn, application="/LM/W3SVC/1/ROOT/PyApp") as p:
        yield p


def sid() -> str:
    return uuid.uuid4().hex[:24]


def data(**items: object) -> SessionStateStoreData:
    return SessionStateStoreData(dict(items), 20)


async def test_key_prefix_is_the_dotnet_client_uri_base() -> None:
    # /LM/W3SVC/1/ROOT/App + "(" + base64(sha256("/LM/W3SVC/1/ROOT/App")) + ")/"
    assert application_key_prefix("/LM/W3SVC/1/ROOT/App") == "/LM/W3SVC/1/ROOT/App(ayVckNouF6x1T3QOpFsrSDD0RtrIJ9q9H8fkfRGm58M=)/"
    assert application_key_prefix("App").startswith("/App(")


async def test_missing_item(provider: SessionStateStore) -> None:
    for get in (provider.get_item, provider.get_item_exclusive):
        result = await get(sid())
        assert (result.item, result.locked, result.lock_id, result.actions) == (None, False, None, SessionStateActions.NONE)
    assert not await provider.reset_item_timeout(sid())
    assert not await provider.release_item_exclusive(sid(), 1)
    assert not await provider.remove_item(sid(), 1)


async def test_store_read_lock_and_release(provider: SessionStateStore, svcconn: psycopg.Connection) -> None:
    s = sid()
    assert await provider.set_and_release_item_exclusive(s, data(n=1, name="ann"), None, new_item=True)
    shared = await provider.get_item(s)
    assert shared.item is not None and shared.item.items == {"n": 1, "name": "ann"} and shared.item.timeout == 20
    mine = await provider.get_item_exclusive(s)
    assert not mine.locked and mine.lock_id == 1 and mine.item.items["n"] == 1  # type: ignore[union-attr]
    for get in (provider.get_item, provider.get_item_exclusive):  # S7/S8
        other = await get(s)
        assert (other.item, other.locked, other.lock_id) == (None, True, mine.lock_id)
        assert timedelta(0) <= other.lock_age < timedelta(seconds=2)
    assert not await provider.set_and_release_item_exclusive(s, data(n=99), mine.lock_id + 7)  # S10
    assert not await provider.release_item_exclusive(s, mine.lock_id + 1)  # S13
    assert await provider.set_and_release_item_exclusive(s, data(n=2), mine.lock_id)  # S9
    assert not row(svcconn, provider.key(s))["locked"]  # type: ignore[index]
    again = await provider.get_item_exclusive(s)
    assert again.lock_id == mine.lock_id + 1 and again.item.items == {"n": 2}  # type: ignore[union-attr]
    assert await provider.release_item_exclusive(s, again.lock_id)  # S12
    assert (await provider.get_item(s)).item.items == {"n": 2}  # type: ignore[union-attr]


async def test_remove_item(provider: SessionStateStore) -> None:
    s = sid()
    await provider.set_and_release_item_exclusive(s, data(a=1), None, new_item=True)
    lock = (await provider.get_item_exclusive(s)).lock_id
    assert not await provider.remove_item(s, lock + 1)  # type: ignore[operator]
    assert await provider.remove_item(s, lock)
    assert (await provider.get_item(s)).item is None


async def test_uninitialized_item_and_actions(provider: SessionStateStore) -> None:
    s = sid()
    await provider.create_uninitialized_item(s, 20)
    first = await provider.get_item_exclusive(s)
    assert first.actions is SessionStateActions.INITIALIZE_ITEM and first.item.items == {}  # type: ignore[union-attr]
    await provider.create_uninitialized_item(s, 20)  # never clobbers (S21), even while locked
    assert (await provider.get_item(s)).locked
    assert await provider.set_and_release_item_exclusive(s, data(x=1), first.lock_id)
    await provider.create_uninitialized_item(s, 20)
    second = await provider.get_item_exclusive(s)
    assert second.actions is SessionStateActions.NONE and second.item.items == {"x": 1}  # type: ignore[union-attr]


async def test_sliding_expiry_and_reset_timeout(provider: SessionStateStore, svcconn: psycopg.Connection) -> None:
    s = sid()
    await provider.set_and_release_item_exclusive(s, SessionStateStoreData({"a": 1}, 1), None, new_item=True)
    travel(svcconn, provider.key(s), 50)
    assert await provider.reset_item_timeout(s)
    travel(svcconn, provider.key(s), 50)
    assert (await provider.get_item(s)).item is not None
    travel(svcconn, provider.key(s), 61)
    assert (await provider.get_item(s)).item is None
    assert not await provider.reset_item_timeout(s)


async def test_breaking_a_stale_lock(provider: SessionStateStore, svcconn: psycopg.Connection) -> None:
    s = sid()
    await provider.set_and_release_item_exclusive(s, data(v="holder"), None, new_item=True)
    holder = await provider.get_item_exclusive(s)
    travel(svcconn, provider.key(s), 111)
    waiter = await provider.get_item_exclusive(s)
    assert waiter.locked and waiter.lock_age >= timedelta(seconds=110)
    assert await provider.release_item_exclusive(s, waiter.lock_id)  # type: ignore[arg-type]
    taken = await provider.get_item_exclusive(s)
    assert taken.lock_id == holder.lock_id + 1  # type: ignore[operator]
    assert not await provider.set_and_release_item_exclusive(s, data(v="stale"), holder.lock_id)
    assert await provider.set_and_release_item_exclusive(s, data(v="new"), taken.lock_id)
    assert (await provider.get_item(s)).item.items == {"v": "new"}  # type: ignore[union-attr]


async def test_local_odds_and_ends(provider: SessionStateStore) -> None:
    fresh = provider.create_new_store_data(35)
    assert (fresh.items, fresh.timeout) == ({}, 35)
    assert provider.set_item_expire_callback(lambda *a: None) is False
    await provider.initialize_request(None)
    await provider.end_request(None)
    with pytest.raises(ValueError):
        provider.create_new_store_data(525601)


async def test_shared_with_the_wire_protocol(provider: SessionStateStore, dsn: str) -> None:
    s = sid()
    await provider.set_and_release_item_exclusive(s, data(hello="wire"), None, new_item=True)
    async with running_server(dsn) as server, clients(server.port) as (c,):
        r = await c.acquire(provider.key(s))
        assert (r.status, r.body) == (200, b'{"hello":"wire"}')
        assert (await provider.get_item_exclusive(s)).lock_id == int(r.header("LockCookie"))  # type: ignore[arg-type]
        assert (await c.put(provider.key(s), b'{"from":"wire"}', cookie=int(r.header("LockCookie")))).status == 200  # type: ignore[arg-type]
    assert (await provider.get_item(s)).item.items == {"from": "wire"}  # type: ignore[union-attr]


async def test_a_release_anywhere_wakes_a_watcher(provider: SessionStateStore, dsn: str) -> None:
    """The waiter's provider is another instance (as in another process): the wake-up comes
    through PostgreSQL's NOTIFY, also when the holder is a state-server client on the wire."""
    s = sid()
    await provider.set_and_release_item_exclusive(s, data(a=1), None, new_item=True)
    async with SessionStateStore(dsn, application=provider.application) as other:
        for releaser in ("provider", "wire"):
            lock = (await provider.get_item_exclusive(s)).lock_id
            with other.watch(s) as watch:
                assert (await other.get_item_exclusive(s, watch=True)).locked
                assert row_watched(dsn, provider.key(s))
                if releaser == "provider":
                    assert await provider.release_item_exclusive(s, lock)  # type: ignore[arg-type]
                else:
                    async with running_server(dsn) as server, clients(server.port) as (c,):
                        assert (await c.release(provider.key(s), lock)).status == 200  # type: ignore[arg-type]
                assert await watch.wait(HANG_GUARD), releaser  # nothing but the NOTIFY sets it
            taken = await other.get_item_exclusive(s)
            assert not taken.locked, releaser
            assert await other.release_item_exclusive(s, taken.lock_id)  # type: ignore[arg-type]


def row_watched(dsn: str, key: str) -> bool:
    with psycopg.connect(dsn) as c:
        return bool(c.execute("SELECT watched FROM sessdb.state_items WHERE item_key = %s", [key]).fetchone()[0])  # type: ignore[index]


async def test_database_outage_raises_never_reports_missing(dsn: str) -> None:
    parts = conninfo_to_dict(dsn)
    proxy = TcpProxy(tcp_host(parts), int(parts.get("port", 5432)))
    await proxy.start()
    async with SessionStateStore(make_conninfo(dsn, host="127.0.0.1", port=str(proxy.port)), listen=False) as p:
        s = sid()
        await p.set_and_release_item_exclusive(s, data(a=1), None, new_item=True)
        await proxy.cut()
        for call in (p.get_item(s), p.get_item_exclusive(s), p.reset_item_timeout(s)):
            with pytest.raises(psycopg.OperationalError):
                await call
        await proxy.start()
        assert (await p.get_item(s)).item.items == {"a": 1}  # type: ignore[union-attr]
    await proxy.cut()


async def test_concurrent_exclusive_gets_one_winner(provider: SessionStateStore) -> None:
    s = sid()
    await provider.set_and_release_item_exclusive(s, data(a=1), None, new_item=True)
    results = await asyncio.gather(*(provider.get_item_exclusive(s) for _ in range(30)))
    assert sum(not r.locked for r in results) == 1
    assert len({r.lock_id for r in results}) == 1
