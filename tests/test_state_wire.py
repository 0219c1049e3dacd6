"""Scenarios S1-S23, S26, S27, S30 and S32 of aspnet-state.md section 9, as raw bytes over TCP.

Time-dependent scenarios (S17, S19, S23, S32) move the item's stored instants back with
``travel`` instead of sleeping: PostgreSQL's clock keeps running, the item ages.
"""

from __future__ import annotations

import asyncio
import calendar
from datetime import timedelta

import psycopg

from tests.state_helpers import (  # noqa: F401  (fixtures)
    HANG_GUARD,
    StateClient,
    clients,
    conn,
    new_key,
    row,
    running_server,
    state_server,
    travel,
)

S1_URI = "/w3svc/root/fxstatebvt(NDbkwGi0191wFdDv0yOUOobtHns%3d)%2f15hgq1uszp2tjt45lkwxmb55"
S1_KEY = "/w3svc/root/fxstatebvt(NDbkwGi0191wFdDv0yOUOobtHns=)/15hgq1uszp2tjt45lkwxmb55"
S1_HOST = "172.30.189.147:42424"


def _names(reply) -> list[str]:  # type: ignore[no-untyped-def]
    return [name for name, _ in reply.headers]


async def test_s1_spec_section_4_exchange(dsn: str, svcconn: psycopg.Connection) -> None:
    svcconn.execute("DELETE FROM sessdb.state_items WHERE item_key = %s", [S1_KEY])
    d1, d2 = bytes(range(256)) * 9 + b"x" * 77, b"\x01\x02" * 1490 + b"z"
    assert (len(d1), len(d2)) == (2381, 2981)
    async with running_server(dsn, aspnet_version="2.0.50727") as server, clients(server.port, 2) as (a, b):
        a.host = b.host = S1_HOST
        put1 = a.build("PUT", S1_URI, [("Content-Length", "2381"), ("Timeout", "10"), ("Lock-Cookie", "1"),
                                       ("ExtraFlags", "0")], d1, content_length=False)
        await a.send(put1)
        r = await a.read_reply()
        assert (r.status, r.reason, r.headers, r.body) == (200, "OK", [("Content-Length", "0"), ("X-AspNet-Version", "2.0.50727")], b"")

        await a.send(a.build("GET", S1_URI, [("Exclusive", "Acquire"), ("Content-Length", "184")], b"f" * 184,
                             content_length=False))
        r = await a.read_reply()
        assert (r.status, r.body) == (200, d1)
        assert r.headers == [("Content-Length", "2381"), ("X-AspNet-Version", "2.0.50727"), ("Timeout", "10"),
                             ("LockCookie", "1")]

        await b.send(b.build("GET", S1_URI, [("Content-Length", "163")], b"g" * 163, content_length=False))
        r = await b.read_reply()
        assert (r.status, r.reason, r.body) == (423, "Locked", b"")
        assert _names(r)[:2] == ["Content-Length", "X-AspNet-Version"] and r.header("Content-Length") == "0"
        assert r.header("X-AspNet-Version") == "2.0.50727" and r.header("LockCookie") == "1"
        assert int(r.header("LockAge")) >= 0 and int(r.header("LockDate")) >= 6.3e17  # type: ignore[arg-type]

        await a.send(a.build("PUT", S1_URI, [("Content-Length", "2981"), ("Timeout", "10"), ("Lock-Cookie", "1"),
                                             ("ExtraFlags", "0")], d2, content_length=False))
        r = await a.read_reply()
        assert (r.status, r.headers) == (200, [("Content-Length", "0"), ("X-AspNet-Version", "2.0.50727")])

        await a.send(a.build("GET", S1_URI, [("Exclusive", "release"), ("Lock-Cookie", "1")]))
        r = await a.read_reply()
        assert (r.status, r.headers) == (200, [("Content-Length", "0"), ("X-AspNet-Version", "2.0.50727")])

        await b.send(b.build("GET", S1_URI))
        r = await b.read_reply()
        assert (r.status, r.body) == (200, d2)
        assert r.headers == [("Content-Length", "2981"), ("X-AspNet-Version", "2.0.50727"), ("Timeout", "10")]


async def test_s2_modern_uri_form(conn: StateClient) -> None:
    key = "/LM/W3SVC/1/ROOT/App(hhhh=)/" + new_key("")
    encoded = key.replace("/", "%2f").replace("=", "%3d")
    assert not encoded.startswith("/")
    r = await conn.request("PUT", encoded, [("Timeout", "20")], b"D", raw_target=True)
    assert r.status == 200
    r = await conn.request("GET", key, raw_target=True)
    assert (r.status, r.body) == (200, b"D")
    r = await conn.request("GET", "%2F" + encoded[3:], raw_target=True)  # upper-case escapes decode alike
    assert (r.status, r.body) == (200, b"D")
    r = await conn.request("GET", "/" + key, raw_target=True)  # ASP.NET 1.1's "//" quirk
    assert (r.status, r.body) == (200, b"D")


async def test_s3_version_header_gate_on_every_kind_of_answer(conn: StateClient) -> None:
    key = new_key()
    replies = [await conn.get(key), await conn.put(key, b"x"), await conn.acquire(key), await conn.get(key),
               await conn.request("POST", key), await conn.head(key), await conn.release(key, 1),
               await conn.delete(key)]
    assert [r.status for r in replies] == [404, 200, 200, 423, 400, 200, 200, 200]
    for r in replies:  # check_envelope ran on each; spell the rule out once more
        assert r.header("X-AspNet-Version") == "4.0.30319"
        assert "Content-Type" not in r.names and "Transfer-Encoding" not in r.names


async def test_s4_get_missing(conn: StateClient) -> None:
    r = await conn.get(new_key())
    assert (r.status, r.reason, r.header("Content-Length"), r.body) == (404, "Not Found", "0", b"")


async def test_s5_opaque_bytes_round_trip(conn: StateClient, svcconn: psycopg.Connection) -> None:
    key, body = new_key(), b"\x00\xff\xfe\x80 caf\xe9 \x00\r\n\r\nHTTP/1.1 200 OK\r\n"
    r = await conn.put(key, body, timeout=20)
    assert (r.status, r.body, r.header("Content-Length")) == (200, b"", "0")
    r = await conn.get(key)
    assert (r.status, r.body, r.header("Timeout"), r.header("LockCookie")) == (200, body, "20", None)
    assert bytes(row(svcconn, key)["data"]) == body  # type: ignore[index]


async def test_s6_exclusive_acquire(conn: StateClient, svcconn: psycopg.Connection) -> None:
    key = new_key()
    await conn.put(key, b"data")
    svcconn.execute("UPDATE sessdb.state_items SET lock_cookie = 41 WHERE item_key = %s", [key])
    r = await conn.acquire(key)
    assert (r.status, r.body, r.header("Timeout"), r.header("LockCookie")) == (200, b"data", "20", "42")
    stored = row(svcconn, key)
    assert stored["locked"] and stored["lock_cookie"] == 42  # type: ignore[index]
    assert abs(stored["lock_offset"]) < timedelta(seconds=2)  # type: ignore[index]


async def test_s7_second_acquire_refused_at_once(state_server, svcconn: psycopg.Connection) -> None:  # type: ignore[no-untyped-def]
    key = new_key()
    async with clients(state_server.port, 2) as (a, b):
        await a.put(key, b"data")
        c = (await a.acquire(key)).header("LockCookie")
        # The lock is never released here: a server that waited on it would never answer.
        r = await asyncio.wait_for(b.acquire(key), HANG_GUARD)
        assert (r.status, r.reason, r.header("Content-Length"), r.header("LockCookie")) == (423, "Locked", "0", c)
        assert r.header("LockAge").isdigit() and int(r.header("LockDate")) > 6.3e17  # type: ignore[union-attr,arg-type]
    stored = row(svcconn, key)
    assert stored["locked"] and bytes(stored["data"]) == b"data"  # type: ignore[index]


async def test_s8_shared_get_while_locked(conn: StateClient) -> None:
    key = new_key()
    await conn.put(key, b"data")
    c = (await conn.acquire(key)).header("LockCookie")
    r = await conn.get(key)
    assert (r.status, r.header("LockCookie"), r.body) == (423, c, b"")


async def test_s9_put_with_matching_cookie_stores_and_unlocks(conn: StateClient, svcconn: psycopg.Connection) -> None:
    key = new_key()
    await conn.put(key, b"D1")
    c = int((await conn.acquire(key)).header("LockCookie"))  # type: ignore[arg-type]
    r = await conn.put(key, b"D2", cookie=c)
    assert (r.status, r.body) == (200, b"")
    stored = row(svcconn, key)
    assert not stored["locked"] and bytes(stored["data"]) == b"D2"  # type: ignore[index]
    assert (await conn.acquire(key)).header("LockCookie") == str(c + 1)


async def test_s10_put_with_wrong_or_missing_cookie_while_locked(conn: StateClient, svcconn: psycopg.Connection) -> None:
    key = new_key()
    await conn.put(key, b"D1")
    c = int((await conn.acquire(key)).header("LockCookie"))  # type: ignore[arg-type]
    for cookie in (c + 7, None):
        r = await conn.put(key, b"D2", cookie=cookie)
        assert (r.status, r.header("LockCookie")) == (423, str(c))
    stored = row(svcconn, key)
    assert stored["locked"] and bytes(stored["data"]) == b"D1"  # type: ignore[index]


async def test_s11_put_on_unlocked_item_without_cookie(conn: StateClient) -> None:
    key = new_key()
    await conn.put(key, b"D1")
    assert (await conn.put(key, b"D2")).status == 200
    assert (await conn.get(key)).body == b"D2"


async def test_s12_release_with_matching_cookie(conn: StateClient, svcconn: psycopg.Connection) -> None:
    key = new_key()
    await conn.put(key, b"D1")
    c = (await conn.acquire(key)).header("LockCookie")
    r = await conn.release(key, c)  # type: ignore[arg-type]
    assert (r.status, r.body, r.header("Content-Length")) == (200, b"", "0")
    stored = row(svcconn, key)
    assert not stored["locked"] and bytes(stored["data"]) == b"D1"  # type: ignore[index]


async def test_s13_release_with_mismatched_cookie(conn: StateClient, svcconn: psycopg.Connection) -> None:
    key = new_key()
    await conn.put(key, b"D1")
    c = int((await conn.acquire(key)).header("LockCookie"))  # type: ignore[arg-type]
    r = await conn.release(key, c + 1)
    assert (r.status, r.header("LockCookie")) == (423, str(c))
    assert row(svcconn, key)["locked"]  # type: ignore[index]


async def test_s14_release_unlocked_missing_or_malformed(conn: StateClient) -> None:
    key = new_key()
    await conn.put(key, b"D1")
    assert (await conn.release(key, 12345)).status == 200
    assert (await conn.request("GET", key, [("Exclusive", "release")])).status == 400
    assert (await conn.release(new_key(), 1)).status == 404
    assert (await conn.release(key, -1)).status == 400
    assert (await conn.release(key, "abc")).status == 400
    assert (await conn.release(key, 2**31)).status == 400
    assert (await conn.get(key)).status == 200  # the connection survived the 400s


async def test_s15_hyphenated_alias_and_case_insensitivity(conn: StateClient, svcconn: psycopg.Connection) -> None:
    key = new_key()
    await conn.put(key, b"D1")
    for exclusive in ("ACQUIRE", "Acquire"):
        for name in ("Exclusive", "exclusive"):
            r = await conn.request("GET", key, [(name, exclusive)])
            assert r.status == 200 and r.header("LockCookie") is not None
            c = r.header("LockCookie")
            r = await conn.request("GET", key, [("EXCLUSIVE", "Release"), ("lock-cookie", c)])  # type: ignore[list-item]
            assert r.status == 200
            assert not row(svcconn, key)["locked"]  # type: ignore[index]
    c = int((await conn.acquire(key)).header("LockCookie"))  # type: ignore[arg-type]
    r = await conn.request("PUT", key, [("LOCKCOOKIE", str(c)), ("timeout", "5")], b"D2")
    assert r.status == 200 and (await conn.get(key)).header("Timeout") == "5"


async def test_s16_remove(conn: StateClient, svcconn: psycopg.Connection) -> None:
    key, other = new_key(), new_key()
    for k in (key, other):
        await conn.put(k, b"D")
    c = int((await conn.acquire(key)).header("LockCookie"))  # type: ignore[arg-type]
    r = await conn.delete(key, c + 1)
    assert (r.status, r.header("LockCookie")) == (423, str(c))
    assert (await conn.delete(key)).status == 423
    assert row(svcconn, key) is not None
    r = await conn.delete(key, c)
    assert (r.status, r.body, r.header("Content-Length")) == (200, b"", "0")
    assert row(svcconn, key) is None
    assert (await conn.get(key)).status == 404
    assert (await conn.delete(key, c)).status == 404
    assert (await conn.delete(other)).status == 200  # unlocked: no cookie needed


async def test_s17_reset_timeout(conn: StateClient, svcconn: psycopg.Connection) -> None:
    touched, untouched = new_key(), new_key()
    for k in (touched, untouched):
        await conn.put(k, b"D", timeout=1)
    travel(svcconn, touched, 50)
    r = await conn.head(touched)
    assert (r.status, r.body, r.header("Content-Length")) == (200, b"", "0")
    travel(svcconn, touched, 50)  # t = 100 s, 50 s after the touch
    assert (await conn.get(touched)).status == 200
    travel(svcconn, untouched, 61)
    assert (await conn.get(untouched)).status == 404
    assert (await conn.head(untouched)).status == 404
    assert (await conn.head(new_key())).status == 404


async def test_s18_timeout_unit_default_and_bounds(conn: StateClient, svcconn: psycopg.Connection) -> None:
    key = new_key()
    assert (await conn.put(key, b"D", timeout=None)).status == 200
    assert (await conn.get(key)).header("Timeout") == "20"
    assert abs(row(svcconn, key)["left"] - timedelta(minutes=20)) < timedelta(seconds=5)  # type: ignore[index]
    assert (await conn.put(key, b"D", timeout=525600)).status == 200
    assert (await conn.get(key)).header("Timeout") == "525600"
    for bad in ("525601", "-5", "1.5", "x", ""):
        fresh = new_key()
        r = await conn.request("PUT", fresh, [("Timeout", bad)], b"D")
        assert r.status == 400, bad
        assert row(svcconn, fresh) is None


async def test_s19_sliding_expiry_on_every_access(conn: StateClient, svcconn: psycopg.Connection) -> None:
    key = new_key()
    await conn.put(key, b"D", timeout=1)
    for _ in range(3):  # t = 40, 80, 120 s
        travel(svcconn, key, 40)
        assert (await conn.get(key)).status == 200
    travel(svcconn, key, 61)  # t = 181 s
    assert (await conn.get(key)).status == 404
    assert (await conn.acquire(key)).status == 404


async def test_s20_uninitialized_item_and_action_flags(conn: StateClient, svcconn: psycopg.Connection) -> None:
    key, empty = new_key(), bytes.fromhex("14000000 0000ff")
    assert (await conn.put(key, empty, timeout=20, extra_flags=1)).status == 200
    r = await conn.acquire(key)
    assert (r.status, r.body, r.header("ActionFlags")) == (200, empty, "1")
    assert row(svcconn, key)["flags"] & 1 == 0  # type: ignore[index]
    assert (await conn.release(key, r.header("LockCookie"))).status == 200  # type: ignore[arg-type]
    r = await conn.acquire(key)
    assert (r.status, r.body, r.header("ActionFlags")) == (200, empty, None)


async def test_s21_insert_only_put_never_clobbers(conn: StateClient, svcconn: psycopg.Connection) -> None:
    unlocked, locked = new_key(), new_key()
    for k in (unlocked, locked):
        await conn.put(k, b"D")
    c = (await conn.acquire(locked)).header("LockCookie")
    before = {k: row(svcconn, k) for k in (unlocked, locked)}
    for k in (unlocked, locked):
        r = await conn.put(k, b"other bytes", extra_flags=1)
        assert (r.status, r.body) == (200, b"")
        after = row(svcconn, k)
        for field in ("data", "locked", "lock_cookie", "flags", "timeout_minutes"):
            assert after[field] == before[k][field], field  # type: ignore[index]
    assert (await conn.release(locked, c)).status == 200  # type: ignore[arg-type]


async def test_s22_new_session_choreography(conn: StateClient, svcconn: psycopg.Connection) -> None:
    key = new_key()
    assert (await conn.acquire(key)).status == 404
    assert (await conn.put(key, bytes.fromhex("14000000 0000ff"), timeout=20, cookie=0, extra_flags=1)).status == 200
    r = await conn.acquire(key)
    assert (r.status, r.header("ActionFlags"), r.header("LockCookie")) == (200, "1", "1")
    assert (await conn.put(key, b"<body>", timeout=20, cookie=1)).status == 200
    stored = row(svcconn, key)
    assert not stored["locked"] and bytes(stored["data"]) == b"<body>"  # type: ignore[index]


async def test_s23_lock_stealing_by_a_waiter(state_server, svcconn: psycopg.Connection) -> None:  # type: ignore[no-untyped-def]
    key = new_key()
    async with clients(state_server.port, 2) as (holder, waiter):
        await holder.put(key, b"D1")
        c = int((await holder.acquire(key)).header("LockCookie"))  # type: ignore[arg-type]
        svcconn.execute("UPDATE sessdb.state_items SET lock_date = now() - interval '111 seconds' WHERE item_key = %s", [key])
        r = await waiter.acquire(key)
        assert r.status == 423 and int(r.header("LockAge")) >= 110  # type: ignore[arg-type]
        assert (await waiter.release(key, r.header("LockCookie"))).status == 200  # type: ignore[arg-type]
        r = await waiter.acquire(key)
        assert (r.status, r.header("LockCookie")) == (200, str(c + 1))
        r = await holder.put(key, b"stale write", cookie=c)
        assert (r.status, r.header("LockCookie")) == (423, str(c + 1))
    assert bytes(row(svcconn, key)["data"]) == b"D1"  # type: ignore[index]


async def test_s26_bad_requests_leave_the_store_untouched(conn: StateClient, svcconn: psycopg.Connection, dsn: str) -> None:
    key = new_key()
    await conn.put(key, b"D")
    before = row(svcconn, key)
    assert (await conn.request("POST", key, [], b"x")).status == 400
    assert (await conn.request("GET", key, [("Exclusive", "maybe")])).status == 400
    assert (await conn.request("PUT", key, [("ExtraFlags", "z")], b"new")).status == 400
    assert (await conn.request("PUT", key, [("LockCookie", "-3")], b"new")).status == 400
    after = row(svcconn, key)
    assert {k: v for k, v in after.items() if k != "left"} == {k: v for k, v in before.items() if k != "left"}  # type: ignore[union-attr]
    # The default body limit (20 MiB): refused from the header alone, then the connection closes.
    await conn.send(conn.build("PUT", key, [("Content-Length", str(20 * 1024 * 1024 + 1))]))
    r = await conn.read_reply()
    assert r.status == 400 and await conn.at_eof()
    # A configured limit, with the body really sent.
    async with running_server(dsn, max_body=1024) as small, clients(small.port) as (c,):
        assert (await c.put(key, b"x" * 1024)).status == 200
        await c.send(c.build("PUT", key, [], b"y" * 1025))
        assert (await c.read_reply()).status == 400 and await c.at_eof()
    assert bytes(row(svcconn, key)["data"]) == b"x" * 1024  # type: ignore[index]


async def test_s26_header_limits_close_the_connection(dsn: str) -> None:
    async with running_server(dsn) as server, clients(server.port, 3) as (a, b, c):
        await a.send(b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\n\r\n")
        assert (await a.read_reply()).status == 400 and await a.at_eof()
        await b.send(b.build("GET", new_key(), [(f"X-H{i}", "v") for i in range(61)]))
        assert (await b.read_reply()).status == 400 and await b.at_eof()
        await c.send(b"GET\r\n\r\n")
        assert (await c.read_reply()).status == 400 and await c.at_eof()


async def test_s27_cookie_wrap(conn: StateClient, svcconn: psycopg.Connection) -> None:
    key = new_key()
    await conn.put(key, b"D")
    svcconn.execute("UPDATE sessdb.state_items SET lock_cookie = 2147483647 WHERE item_key = %s", [key])
    assert (await conn.acquire(key)).header("LockCookie") == "1"


async def test_s30_application_isolation(conn: StateClient) -> None:
    sid = new_key("")
    one, two = f"/LM/W3SVC/1/ROOT/App1(h1)/{sid}", f"/LM/W3SVC/1/ROOT/App2(h2)/{sid}"
    await conn.put(one, b"one")
    await conn.put(two, b"two")
    assert (await conn.get(one)).body == b"one" and (await conn.get(two)).body == b"two"
    assert (await conn.delete(one)).status == 200
    assert (await conn.get(one)).status == 404 and (await conn.get(two)).body == b"two"


async def test_s32_lock_metadata_units(conn: StateClient, svcconn: psycopg.Connection) -> None:
    key = new_key()
    await conn.put(key, b"D")
    await conn.acquire(key)
    travel(svcconn, key, 7)
    lock_date = row(svcconn, key)["lock_date"]  # type: ignore[index]  # T, as moved back
    r = await conn.get(key)
    assert r.status == 423 and abs(int(r.header("LockAge")) - 7) <= 1  # type: ignore[arg-type]
    local = lock_date.astimezone()
    expected = (calendar.timegm(local.timetuple()) + local.microsecond / 1e6) * 10**7 + 621_355_968_000_000_000
    assert abs(int(r.header("LockDate")) - expected) <= 10_000_000  # type: ignore[arg-type]


async def test_keys_of_any_length_within_the_line_limit(conn: StateClient, svcconn: psycopg.Connection) -> None:
    key = new_key() + "k" * 7000  # well past a btree entry's 2.7 kB, within the 8 KiB request line
    assert (await conn.put(key, b"long")).status == 200
    reply = await conn.get(key)
    assert (reply.status, reply.body) == (200, b"long")
    assert row(svcconn, key) is not None


async def test_timeout_zero_means_the_item_never_expires(conn: StateClient, svcconn: psycopg.Connection) -> None:
    key = new_key()
    assert (await conn.put(key, b"forever", timeout=0)).status == 200
    travel(svcconn, key, 10 * 365 * 24 * 3600)  # ten years pass
    reply = await conn.get(key)
    assert (reply.status, reply.body) == (200, b"forever")
