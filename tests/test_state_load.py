"""Scenarios under load: S24 (200 simultaneous acquires), S25 (10,000 pipelined requests on one
connection), S28 (50,000 expired rows, swept in batches while live requests stay fast) and S31
(50 pollers on a locked item get answers at once)."""

from __future__ import annotations

import asyncio
import random
import time

import psycopg
import pytest

from sessdb.stateserver import store
from tests.fix_server import free_port
from tests.state_helpers import (  # noqa: F401  (fixtures)
    HANG_GUARD,
    Reply,
    StateClient,
    clients,
    new_key,
    row,
    running_server,
    state_server,
    wire,
)


async def test_s24_exactly_one_winner_among_200(state_server, svcconn: psycopg.Connection) -> None:  # type: ignore[no-untyped-def]
    key = new_key()
    async with clients(state_server.port, 200) as conns:
        await conns[0].put(key, b"D")
        before = row(svcconn, key)["lock_cookie"]  # type: ignore[index]
        request = conns[0].build("GET", wire(key), [("Exclusive", "acquire")])
        for c in conns:  # all requests are on the wire before any answer is read
            c.writer.write(request)
        await asyncio.gather(*(c.writer.drain() for c in conns))
        replies = await asyncio.gather(*(c.read_reply() for c in conns))
    winners = [r for r in replies if r.status == 200]
    assert len(winners) == 1
    cookie = winners[0].header("LockCookie")
    assert cookie == str(before + 1)
    assert sorted(r.status for r in replies if r is not winners[0]) == [423] * 199
    assert {r.header("LockCookie") for r in replies} == {cookie}
    assert row(svcconn, key)["lock_cookie"] == before + 1  # type: ignore[index]


def _s25_script(keys: list[str], rounds: int) -> tuple[bytes, list[tuple[int, bytes, dict[str, str]]]]:
    """Requests and expected (status, body, headers) for ``rounds`` x 5 operations."""
    client = StateClient(None, None)  # type: ignore[arg-type]  # only for build()
    cookies = {k: 0 for k in keys}
    out: list[bytes] = []
    expected: list[tuple[int, bytes, dict[str, str]]] = []
    for i in range(rounds):
        key = keys[i % len(keys)]
        target = wire(key)
        first, second = f"{i}:first:".encode() * (1 + i % 7), f"{i}:second".encode() * (1 + i % 3)
        cookies[key] += 1
        out += [
            client.build("PUT", target, [("Timeout", "20")], first),
            client.build("GET", target, [], b"filler" * (i % 5), content_length=True),
            client.build("GET", target, [("Exclusive", "acquire")]),
            client.build("PUT", target, [("LockCookie", str(cookies[key]))], second),
            client.build("HEAD", target),
        ]
        expected += [
            (200, b"", {}),
            (200, first, {"Timeout": "20"}),
            (200, first, {"LockCookie": str(cookies[key])}),
            (200, b"", {}),
            (200, b"", {}),
        ]
    return b"".join(out), expected


async def test_s25_pipelined_requests_on_one_connection(state_server, svcconn: psycopg.Connection) -> None:  # type: ignore[no-untyped-def]
    keys = [new_key() for _ in range(16)]
    payload, expected = _s25_script(keys, 2000)
    assert len(expected) == 10_000
    async with clients(state_server.port) as (c,):
        async def writer() -> None:
            for start in range(0, len(payload), 256 * 1024):
                c.writer.write(payload[start:start + 256 * 1024])
                await c.writer.drain()

        sending = asyncio.ensure_future(writer())
        replies: list[Reply] = [await c.read_reply(timeout=60) for _ in expected]
        await sending
        for reply, (status, body, headers) in zip(replies, expected):
            assert (reply.status, reply.body) == (status, body)
            for name, value in headers.items():
                assert reply.header(name) == value
        assert (await c.get(keys[0])).status == 200  # still open and in step
    assert all(not row(svcconn, k)["locked"] for k in keys)  # type: ignore[index]


@pytest.mark.slow
async def test_s28_expired_rows_invisible_then_swept_in_batches(state_server, svcconn: psycopg.Connection) -> None:  # type: ignore[no-untyped-def]
    prefix = new_key() + "/expired/"
    svcconn.execute(
        "INSERT INTO sessdb.state_items (item_key, data, created_at, expires_at, timeout_min, flags, lock_cookie, locked)"
        " SELECT %s || n, '\\x00'::bytea, now() - interval '2 hours', now() - interval '1 hour' + n * interval '1 ms',"
        " 20, 1, 7, n %% 2 = 0 FROM generate_series(1, 50000) n", [prefix])
    live = [new_key() for _ in range(10)]
    async with clients(state_server.port) as (c,):
        for k in live:
            assert (await c.put(k, b"live")).status == 200
        expired = prefix + "17"
        assert (await c.get(expired)).status == 404
        assert (await c.acquire(prefix + "18")).status == 404
        assert (await c.put(expired, b"fresh", extra_flags=1)).status == 200
        fresh = row(svcconn, expired)
        assert (fresh["lock_cookie"], fresh["flags"], fresh["locked"]) == (0, 1, False)  # type: ignore[index]
        r = await c.acquire(expired)
        assert (r.header("LockCookie"), r.header("ActionFlags"), r.body) == ("1", "1", b"fresh")

        # One batch deletes at most its size.
        with psycopg.connect(state_server.dsn, autocommit=True) as one:
            assert one.execute("SELECT sessdb.state_sweep(1000)").fetchone()[0] == 1000  # type: ignore[index]

        # One full sweeper cycle while a client keeps acquiring and releasing live items.
        cycles = during_sweep = 0
        sweep = asyncio.ensure_future(_sweep(state_server))
        while not sweep.done() or cycles < 20:
            k = random.choice(live)
            r = await asyncio.wait_for(c.acquire(k), HANG_GUARD)
            assert r.status == 200
            assert (await c.release(k, r.header("LockCookie"))).status == 200  # type: ignore[arg-type]
            cycles += 1
            during_sweep += not sweep.done()
        deleted = await sweep
    assert deleted >= 48_999
    # Live items are served while the sweep runs: an acquire blocked behind the whole sweep would
    # leave at most one cycle inside it. How fast they are is measured by scripts/bench.
    assert during_sweep >= 3, (during_sweep, cycles)
    left = svcconn.execute("SELECT count(*) FROM sessdb.state_items WHERE item_key LIKE %s", [prefix + "%"]).fetchone()
    assert left == (1,)  # only the re-created item
    assert all(row(svcconn, k) is not None for k in live)


async def _sweep(server) -> int:  # type: ignore[no-untyped-def]
    async with server.pool.connection() as conn:
        return await store.sweep_expired(conn)


async def test_sweeper_task_runs_every_interval_and_survives_failures(
        dsn: str, svcconn: psycopg.Connection, monkeypatch: pytest.MonkeyPatch) -> None:
    real = store.sweep_expired
    failures = [RuntimeError("injected sweep failure")]

    async def flaky(conn, batch=1000):  # type: ignore[no-untyped-def]
        if failures:
            raise failures.pop()
        return await real(conn, batch)

    monkeypatch.setattr(store, "sweep_expired", flaky)
    async with running_server(dsn, sweep_interval=0.05) as server, clients(server.port) as (c,):
        key = new_key()
        await c.put(key, b"D", timeout=1)
        svcconn.execute("UPDATE sessdb.state_items SET expires_at = now() - interval '1 s' WHERE item_key = %s", [key])
        while row(svcconn, key) is not None:
            await server.next_sweep()
        assert not failures  # the failing cycle happened, and later cycles still ran
        assert server._sweeper is not None and not server._sweeper.done()


@pytest.mark.slow
async def test_s31_no_server_side_waiting(dsn: str, server_factory, svcconn: psycopg.Connection) -> None:  # type: ignore[no-untyped-def]
    # The server runs in its own process, as in production. The latencies are printed, not
    # asserted: a machine busy with other work can stall all 50 pollers at once.
    state_port, key = free_port(), new_key()
    count = ("SELECT count(*) FROM pg_stat_activity WHERE application_name = 'sessdb-state'"
             " AND datname = current_database()")
    baseline = svcconn.execute(count).fetchone()[0]  # type: ignore[index]  # other servers of this test run
    server = server_factory("--dsn", dsn, "--state-port", str(state_port), "--no-migrate")
    await asyncio.to_thread(server.wait_ready)
    latencies: list[float] = []
    answers = [0] * 50
    async with clients(state_port, 51) as conns:
        holder, pollers = conns[0], conns[1:]
        await holder.put(key, b"D")
        cookie = (await holder.acquire(key)).header("LockCookie")
        loop = asyncio.get_running_loop()
        end = loop.time() + 10

        async def poll(i: int, c: StateClient) -> None:
            await asyncio.sleep(random.random() * 0.5)  # clients are not in step
            while loop.time() < end:
                started = time.perf_counter()
                # The lock is held throughout: a server that waited on it would never answer.
                r = await asyncio.wait_for(c.acquire(key), HANG_GUARD)
                latencies.append(time.perf_counter() - started)
                assert (r.status, r.header("LockCookie")) == (423, cookie)
                answers[i] += 1
                await asyncio.sleep(0.5)  # the ASP.NET module's poll interval

        await asyncio.gather(*(poll(i, c) for i, c in enumerate(pollers)))
        # Requests at the header limits still parse.
        big = [("X-Pad", "p" * (8192 - len("X-Pad: ")))] + [(f"X-H{i}", "v") for i in range(57)]
        r = await holder.request("GET", key, [("Exclusive", "acquire")] + big)
        assert r.status == 423
        busy = svcconn.execute(count).fetchone()[0] - baseline  # type: ignore[index]
    latencies.sort()
    print(f"\npolls of a locked item: {len(latencies)}, p99 {latencies[int(len(latencies) * 0.99)] * 1000:.1f} ms"
          " (information only: speed is scripts/bench's business)")
    assert min(answers) >= 5, answers  # every poller was answered, again and again
    assert busy <= 10  # the default POOL_SIZE: pollers never pile up connections
