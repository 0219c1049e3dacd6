"""Faults: PostgreSQL unreachable (S33), clients that vanish mid-request, restart of sessdb (S29)."""

from __future__ import annotations

import asyncio

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from tests.fix_db import tcp_host
from tests.fix_server import free_port
from tests.state_helpers import (  # noqa: F401  (fixtures)
    StateClient,
    TcpProxy,
    clients,
    conn,
    new_key,
    row,
    running_server,
    state_server,
    wire,
)


async def test_s33_database_outage_never_fakes_not_found(dsn: str, svcconn: psycopg.Connection) -> None:
    parts = conninfo_to_dict(dsn)
    proxy = TcpProxy(tcp_host(parts), int(parts.get("port", 5432)))
    await proxy.start()
    proxied = make_conninfo(dsn, host="127.0.0.1", port=str(proxy.port))
    key = new_key()
    async with running_server(proxied) as server:
        async with clients(server.port) as (c,):
            assert (await c.put(key, b"original")).status == 200
            await proxy.cut()
            await c.send(c.build("GET", wire(key), [("Exclusive", "acquire")]))
            assert await _closed_or_400(c)
        for request in (("GET", [("Exclusive", "acquire")], b""), ("GET", [], b""), ("PUT", [("LockCookie", "1")], b"new"),
                        ("DELETE", [], b""), ("HEAD", [], b"")):
            async with clients(server.port) as (c,):
                method, headers, body = request
                await c.send(c.build(method, wire(key), headers, body))
                assert await _closed_or_400(c), request
        stored = row(svcconn, key)  # straight from PostgreSQL: nothing half-written
        assert bytes(stored["data"]) == b"original" and not stored["locked"]  # type: ignore[index]
        await proxy.start()  # PostgreSQL is reachable again, on the same address
        async with clients(server.port) as (c,):
            r = await c.get(key)
            assert (r.status, r.body) == (200, b"original")
    await proxy.cut()


async def _closed_or_400(c: StateClient) -> bool:
    """True when the server answered 400 or closed the connection without any answer."""
    try:
        head = await asyncio.wait_for(c.reader.read(12), 15)
    except ConnectionError:
        return True
    return head in (b"", b"HTTP/1.1 400")


async def test_client_gone_mid_body_stores_nothing(state_server, svcconn: psycopg.Connection) -> None:  # type: ignore[no-untyped-def]
    key = new_key()
    async with clients(state_server.port) as (c,):
        request = c.build("PUT", wire(key), [("Timeout", "20")], b"x" * 10000)
        await c.send(request[:-5000])
    async with clients(state_server.port) as (c,):  # the server is fine and the key absent
        assert (await c.get(key)).status == 404
    assert row(svcconn, key) is None


async def test_client_gone_after_sending_keeps_the_whole_write(state_server, svcconn: psycopg.Connection) -> None:  # type: ignore[no-untyped-def]
    keys = [new_key() for _ in range(20)]
    async with clients(state_server.port) as (c,):
        for k in keys:
            await c.put(k, b"old")
        for k in keys:
            c.writer.write(c.build("PUT", wire(k), [], b"new" * 1000))
        await c.writer.drain()
    # The client went away without reading: each write happened whole or not at all.
    async with clients(state_server.port) as (c,):
        await c.get(keys[0])  # the previous connection's writes ran before this answer (or never will)
    seen = {bytes(row(svcconn, k)["data"]) for k in keys}  # type: ignore[index]
    assert seen <= {b"old", b"new" * 1000}


async def test_persistent_connection_survives_a_bad_request(conn: StateClient) -> None:
    key = new_key()
    for _ in range(3):
        assert (await conn.request("PUT", key, [("Timeout", "x")], b"abc")).status == 400
        assert (await conn.put(key, b"ok")).status == 200


@pytest.mark.slow
async def test_s29_durability_across_restart(dsn: str, server_factory) -> None:  # type: ignore[no-untyped-def]
    state_port, key = free_port(), new_key()
    server = server_factory("--dsn", dsn, "--state-port", str(state_port), "--no-migrate")
    await asyncio.to_thread(server.wait_ready)
    async with clients(state_port) as (c,):
        assert (await c.put(key, b"kept")).status == 200
        cookie = (await c.acquire(key)).header("LockCookie")
    assert await asyncio.to_thread(server.stop) == 0
    server = server_factory("--dsn", dsn, "--state-port", str(state_port), "--no-migrate")
    await asyncio.to_thread(server.wait_ready)
    async with clients(state_port) as (c,):
        r = await c.get(key)
        assert (r.status, r.header("LockCookie")) == (423, cookie)
        assert (await c.release(key, cookie)).status == 200  # type: ignore[arg-type]
        r = await c.get(key)
        assert (r.status, r.body) == (200, b"kept")
    assert await asyncio.to_thread(server.stop) == 0
