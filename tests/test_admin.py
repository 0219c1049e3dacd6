"""The admin surface: loopback only, or the bearer token; metrics; the sessions page and its drop.

This machine has only loopback addresses, so a caller from another host is simulated by making
the guard's loopback test answer False; the server, the database and HTTP are real.
"""

from __future__ import annotations

import aiohttp
import pytest

from tests.fix_app import engine_of


async def _from_elsewhere(client, path: str, method: str = "GET", token: str | None = None) -> int:  # type: ignore[no-untyped-def]
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    connector = aiohttp.TCPConnector(local_addr=("127.0.0.2", 0))
    async with aiohttp.ClientSession(connector=connector) as other:
        async with other.request(method, client.make_url(path), headers=headers) as resp:
            return resp.status


@pytest.mark.parametrize("path", ["/_sessdb/", "/_sessdb/metrics", "/_sessdb/ready", "/_sessdb/live"])
async def test_loopback_callers_get_in_without_a_token(client, path: str) -> None:  # type: ignore[no-untyped-def]
    assert (await client.get(path)).status == 200


async def test_token_opens_the_admin_surface_and_nothing_else_does(make_client, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    client = await make_client(admin_token="s3cret")
    assert (await client.get("/_sessdb/metrics")).status == 401, "with a token set, loopback needs it too"
    assert (await client.get("/_sessdb/metrics", headers={"Authorization": "Bearer wrong"})).status == 401
    assert (await client.get("/_sessdb/metrics", headers={"Authorization": "Bearer s3cret"})).status == 200
    from sessdb.web import admin

    monkeypatch.setattr(admin, "_is_loopback", lambda address: False)  # as seen from another host
    assert await _from_elsewhere(client, "/_sessdb/metrics") == 401
    assert await _from_elsewhere(client, "/_sessdb/metrics", token="s3cret") == 200


async def test_dns_rebinding_and_cross_site_posts_are_refused(client) -> None:  # type: ignore[no-untyped-def]
    assert (await client.get("/_sessdb/sessions", headers={"Host": "attacker.example"})).status == 403
    assert (await client.get("/_sessdb/sessions", headers={"Host": "localhost:1234"})).status == 200
    resp = await client.post("/_sessdb/sessions/1/drop", headers={"Origin": "http://attacker.example"})
    assert resp.status == 403
    resp = await client.post("/_sessdb/sessions/1/drop", headers={"Sec-Fetch-Site": "cross-site"})
    assert resp.status == 403


async def test_without_a_token_strangers_are_refused(make_client, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    client = await make_client()
    from sessdb.web import admin

    monkeypatch.setattr(admin, "_is_loopback", lambda address: False)
    assert await _from_elsewhere(client, "/_sessdb/") == 403
    assert await _from_elsewhere(client, "/_sessdb/sessions/1/drop", method="POST") == 403


async def test_metrics_and_page_show_sessions_and_the_page_drops_one(client) -> None:  # type: ignore[no-untyped-def]
    resp = await client.get("/sess", params={"op": "set", "arg": "ADM-x"})
    pid = (await resp.json(content_type=None))["pid"]
    text = await (await client.get("/_sessdb/metrics")).text()
    assert "sessdb_sessions 1" in text and "# TYPE sessdb_sessions gauge" in text
    page = await (await client.get("/_sessdb/")).text()
    assert "ADM-x" in page and f"/_sessdb/sessions/{pid}/drop" in page
    dropped = await client.post(f"/_sessdb/sessions/{pid}/drop")
    assert dropped.status == 200
    assert engine_of(client).sessions.lookup("ADM-x") is None
    assert (await client.post("/_sessdb/sessions/1/drop")).status == 404


async def test_sessions_command_shows_the_engine_queues(client, dsn: str, gate) -> None:  # type: ignore[no-untyped-def]
    """The CLI asks the running engine: a session whose request waits at the gate is busy with
    one request queued, for as long as the CLI takes (a subprocess, seconds on a loaded machine)."""
    import asyncio
    import json

    from tests.fix_server import run_cli
    from tests.test_sessions import _until, _until_busy

    await client.get("/sess", params={"op": "set", "arg": "ADM-q"})
    busy = asyncio.ensure_future(client.get("/sess", params={"op": "gate", "gate": gate.name, "sessionid": "ADM-q"}))
    session = await _until_busy(client, "ADM-q")
    await gate.until_waiting(busy)
    waiting = asyncio.ensure_future(client.get("/sess", params={"sessionid": "ADM-q"}))
    await _until(lambda: waiting.done() or len(session.queue) == 1)
    port = str(client.server.port)
    proc = await asyncio.to_thread(run_cli, "sessions", "--json", "--dsn", dsn, "--port", port)
    assert proc.returncode == 0, proc.stderr
    rows = {r["session_id"]: r for r in json.loads(proc.stdout)}
    assert rows["ADM-q"]["state"] == "busy" and rows["ADM-q"]["waiting"] == 1
    await gate.open()
    assert (await busy).status == 200
    assert (await waiting).status == 200
