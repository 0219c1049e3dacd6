"""Bytes that are not UTF-8, in headers, cookies, forms and multipart bodies: clear answers, never a 500."""

from __future__ import annotations

import asyncio

import pytest

from tests.fix_app import engine_of


async def _raw(client, request: bytes) -> bytes:  # type: ignore[no-untyped-def]
    reader, writer = await asyncio.open_connection("127.0.0.1", client.server.port)
    writer.write(request)
    await writer.drain()
    data = await reader.read()
    writer.close()
    return data


@pytest.fixture
async def echo(client, svcconn):  # type: ignore[no-untyped-def]
    svcconn.execute("SELECT sessdb.create_service(name => 'enc_echo', type => 'RAW', methods => 'GET,POST', "
                    "statement => 'SELECT coalesce(:a, ''-'') || ''|'' || coalesce(http_header(''X-Odd''), ''-'')', "
                    "replace => true)")
    while "enc_echo" not in engine_of(client).catalog.services:
        await asyncio.sleep(0.01)
    return client


async def test_non_utf8_header_and_cookie_are_not_a_500(echo) -> None:  # type: ignore[no-untyped-def]
    answer = await _raw(echo, b"GET /enc_echo?a=1 HTTP/1.1\r\nHost: x\r\nX-Odd: caf\xe9\r\n"
                              b"Cookie: sessionid=\xe9\r\nConnection: close\r\n\r\n")
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), answer
    assert body.decode() == "1|caf\ufffd"


async def test_utf8_in_a_urlencoded_body_arrives_intact(echo) -> None:  # type: ignore[no-untyped-def]
    resp = await echo.post("/enc_echo", data="a=é ü".encode(), headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert await resp.text() == "é ü|-"


async def test_malformed_multipart_content_type_is_400(echo) -> None:  # type: ignore[no-untyped-def]
    answer = await _raw(echo, b"POST /enc_echo HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=\xe9\r\n"
                              b"Content-Length: 5\r\nConnection: close\r\n\r\nhello")
    assert answer.startswith(b"HTTP/1.1 400"), answer


async def test_request_text_arrives_intact_when_a_session_changed_its_client_encoding(
        echo, svcconn) -> None:  # type: ignore[no-untyped-def]
    # the request context goes to PostgreSQL as JSON text: escaped to ASCII, it does not depend
    # on the connection's client encoding, which a session's statement may change
    svcconn.execute("SELECT sessdb.create_service(name => 'enc_set', type => 'RAW', "
                    "statement => 'SELECT set_config(''client_encoding'', ''LATIN1'', false)', replace => true)")
    svcconn.execute("SELECT sessdb.create_service(name => 'enc_vars', type => 'RAW', "
                    "statement => 'SELECT http_variable(''v'') || ''|'' || current_setting(''request.path'')', "
                    "replace => true)")
    while not {"enc_set", "enc_vars"} <= set(engine_of(echo).catalog.services):
        await asyncio.sleep(0.01)
    sid = "enc-latin1"
    assert (await echo.get("/sess", params={"op": "set", "arg": sid})).status == 200
    assert (await echo.get("/enc_set", params={"sessionid": sid})).status == 200
    resp = await echo.get("/enc_vars", params={"v": "café", "sessionid": sid})  # LATIN1 has é
    assert resp.status == 200
    assert await resp.text() == "café|/enc_vars"
