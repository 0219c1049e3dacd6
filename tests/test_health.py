"""The admin health endpoints of the in-process server."""

from __future__ import annotations


async def test_live_and_ready(client) -> None:  # type: ignore[no-untyped-def]
    resp = await client.get("/_sessdb/live")
    assert resp.status == 200
    resp = await client.get("/_sessdb/ready")
    assert resp.status == 200
    assert (await resp.json()) == {"status": "ready"}
