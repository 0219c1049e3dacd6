"""The pure core of the state server: framing, parsing, responses, lock arithmetic. No I/O."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from sessdb.aspnet_session import cookieless_location, create_session_id, split_cookieless, valid_session_id
from sessdb.stateserver.locks import (
    ItemResult,
    Status,
    dotnet_ticks,
    lock_age_seconds,
    next_cookie,
    should_break,
    wait_budget,
)
from sessdb.stateserver.protocol import (
    BadRequest,
    Operation,
    ProtocolError,
    RawRequest,
    RequestParser,
    Verb,
    decode_key,
    encode,
    parse_operation,
    respond,
)

T0 = datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc)


def frame(data: bytes, **limits: int) -> list[RawRequest]:
    parser = RequestParser(**limits)
    parser.feed(data)
    out = []
    while (request := parser.next_request()) is not None:
        out.append(request)
    return out


def test_percent_encoded_targets_and_pipelining() -> None:
    data = (b"GET %2fLM%2fApp(x%3d)%2fid HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\nabc"
            b"PUT /a HTTP/1.1\r\nLockCookie: 4\r\nContent-Length: 2\r\n\r\nzz")
    first, second = frame(data)
    assert (first.method, first.target, first.body) == ("GET", "%2fLM%2fApp(x%3d)%2fid", b"abc")
    assert decode_key(first.target) == "/LM/App(x=)/id"
    assert (second.method, second.headers["lockcookie"], second.body) == ("PUT", "4", b"zz")


def test_bytes_arrive_one_at_a_time() -> None:
    parser = RequestParser()
    data = b"\r\nHEAD /k HTTP/1.1\nContent-Length: 1\n\nx"
    for i, byte in enumerate(data):
        parser.feed(bytes([byte]))
        request = parser.next_request()
        assert (request is None) == (i < len(data) - 1)
    assert request is not None and request.body == b"x" and parser.idle


@pytest.mark.parametrize("data", [
    b"GET /k\r\n\r\n",
    b"GET /k HTTP/1.1 extra\r\n\r\n",
    b"GET /k HTTP/1.1\r\nno colon\r\n\r\n",
    b"GET /k HTTP/1.1\r\nContent-Length: -1\r\n\r\n",
    b"GET /k HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
    b"PUT /k HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
])
def test_unframeable_requests(data: bytes) -> None:
    with pytest.raises(ProtocolError):
        frame(data)


def test_limits() -> None:
    with pytest.raises(ProtocolError):
        frame(b"GET /k HTTP/1.1\r\nContent-Length: 11\r\n\r\n", max_body=10)
    with pytest.raises(ProtocolError):
        frame(b"GET /" + b"a" * 100, max_line=64)
    with pytest.raises(ProtocolError):
        frame(b"GET /k HTTP/1.1\r\n" + b"A: b\r\n" * 4 + b"\r\n", max_headers=3)
    assert frame(b"GET /k HTTP/1.1\r\n" + b"A: b\r\n" * 3 + b"\r\n", max_headers=3)


def test_key_decoding() -> None:
    assert decode_key("//w3svc/x") == "/w3svc/x"
    assert decode_key("a+b%20c") == "a b c"
    assert decode_key("%C3%A9") == "é"
    for bad in ("%ff", "%00", ""):
        with pytest.raises(BadRequest):
            decode_key(bad)


def op(method: str, headers: dict[str, str], body: bytes = b"") -> Operation:
    return parse_operation(RawRequest(method, "/k", "HTTP/1.1", headers, body))


def test_operations() -> None:
    assert op("GET", {}).verb is Verb.GET
    assert op("GET", {"exclusive": "ACQUIRE"}).verb is Verb.ACQUIRE
    assert op("GET", {"exclusive": "Release", "lock-cookie": "7"}) == Operation(Verb.RELEASE, "/k", lock_cookie=7)
    assert op("PUT", {"timeout": "5", "lockcookie": "3", "extraflags": "1"}, b"d") == \
        Operation(Verb.PUT, "/k", 5, 3, 1, b"d")
    assert op("PUT", {}).timeout == 20 and op("PUT", {}).lock_cookie is None
    assert op("DELETE", {"lockcookie": "0"}).lock_cookie == 0
    assert op("HEAD", {}).verb is Verb.HEAD


@pytest.mark.parametrize("method,headers", [
    ("POST", {}), ("GET", {"exclusive": "maybe"}), ("GET", {"exclusive": "release"}),
    ("GET", {"exclusive": "release", "lockcookie": "-1"}), ("PUT", {"timeout": "525601"}),
    ("PUT", {"timeout": "1.5"}), ("PUT", {"extraflags": "z"}), ("PUT", {"lockcookie": "2147483648"}),
])
def test_bad_operations(method: str, headers: dict[str, str]) -> None:
    with pytest.raises(BadRequest):
        op(method, headers)


def test_responses() -> None:
    got = ItemResult(Status.OK, b"data", 20, 5, T0, T0, 1)
    acquire = respond(Operation(Verb.ACQUIRE, "/k"), got)
    assert acquire.headers == (("Timeout", "20"), ("ActionFlags", "1"), ("LockCookie", "5")) and acquire.body == b"data"
    assert respond(Operation(Verb.GET, "/k"), got).headers == (("Timeout", "20"), ("ActionFlags", "1"))
    assert respond(Operation(Verb.PUT, "/k"), got).body == b""
    assert respond(Operation(Verb.GET, "/k"), ItemResult(Status.NOT_FOUND)).status == 404
    locked = respond(Operation(Verb.GET, "/k"), ItemResult(Status.LOCKED, None, 20, 9, T0, T0 + timedelta(seconds=7.9)))
    assert locked.status == 423 and locked.body == b""
    assert dict(locked.headers)["LockCookie"] == "9" and dict(locked.headers)["LockAge"] == "7"
    assert encode(locked, "4.0.30319").startswith(b"HTTP/1.1 423 Locked\r\nContent-Length: 0\r\nX-AspNet-Version: 4.0.30319\r\n")
    assert encode(respond(Operation(Verb.HEAD, "/k"), got), "2.0.50727", head=True).endswith(b"\r\n\r\n")


def test_lock_arithmetic() -> None:
    assert next_cookie(0) == 1 and next_cookie(2_147_483_647) == 1
    assert lock_age_seconds(T0, T0 + timedelta(seconds=111.5)) == 111
    assert lock_age_seconds(T0, T0 - timedelta(seconds=1)) == 0 and lock_age_seconds(None, T0) == 0
    assert dotnet_ticks(datetime(1970, 1, 1, tzinfo=timezone.utc), timezone.utc) == 621_355_968_000_000_000
    assert dotnet_ticks(datetime(2012, 5, 24, 20, 8, 47, tzinfo=timezone.utc), timezone.utc) == 634_734_869_270_000_000
    plus2 = timezone(timedelta(hours=2))
    assert dotnet_ticks(T0, plus2) - dotnet_ticks(T0, timezone.utc) == 2 * 3600 * 10**7
    limit = timedelta(seconds=110)
    assert should_break(limit, limit) and not should_break(limit - timedelta(seconds=1), limit)
    assert wait_budget(timedelta(seconds=100), limit) == timedelta(seconds=10)
    assert wait_budget(timedelta(seconds=200), limit) == timedelta(0)


def test_session_ids_and_cookieless_paths() -> None:
    ids = {create_session_id() for _ in range(100)}
    assert len(ids) == 100 and all(valid_session_id(i) for i in ids)
    assert not valid_session_id("ABCDEFGHIJKLMNOPQRSTUVWX") and not valid_session_id(None)
    sid = "lit3py55t21z5v55vlm25s55"
    assert split_cookieless(f"/app/(S({sid}))/page.aspx", "/app/") == (sid, "/app/page.aspx")
    assert split_cookieless(f"/(A(anon)S({sid})F(t))/p", "/") == (sid, "/p")
    assert split_cookieless(f"/({sid})/p", "/") == (None, None)  # the v1.x form is ignored
    assert split_cookieless("/other/(S(x))/p", "/app/") == (None, None)
    assert cookieless_location("/app/", sid, "/app/page.aspx", "a=1") == f"/app/(S({sid}))/page.aspx?a=1"
