"""examples/webapp.sql loads with ``sessdb sql -f`` (twice: it is idempotent) and every service answers."""

from __future__ import annotations

import secrets
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from tests.fix_server import run_cli
from tests.web_helpers import basic, unique, wait_catalog

EXAMPLE = Path(__file__).parent.parent / "examples" / "webapp.sql"
SERVICES = ["webapp/hello", "webapp/notes", "webapp/notes/add", "webapp/note", "webapp/page", "webapp/files",
            "webapp/me"]


@pytest.fixture
def example(dsn: str, svcconn: psycopg.Connection) -> Iterator[None]:
    """The example loaded twice through the CLI; its services dropped afterwards."""
    for _ in range(2):
        result = run_cli("sql", "-f", str(EXAMPLE), env={"SESSDB_DSN": dsn}, timeout=60)
        assert result.returncode == 0, result.stderr
    try:
        yield
    finally:
        svcconn.execute("DELETE FROM sessdb.services WHERE name LIKE 'webapp/%'")


async def test_example_services(client, example, svcconn: psycopg.Connection) -> None:
    await wait_catalog(client, lambda services: all(name in services for name in SERVICES))
    assert svcconn.execute("SELECT count(*) FROM public.webapp_notes WHERE title = 'Welcome'").fetchone() == (1,)

    resp = await client.get("/webapp/hello", params={"name": "Ada"})
    assert (resp.status, await resp.text()) == (200, "Hello, Ada!")

    resp = await client.post("/webapp/notes/add", data={"title": "Ünïcode <title>", "body": "b"})
    assert resp.status == 201, await resp.text()
    (added,) = await resp.json()
    assert added["title"] == "Ünïcode <title>"
    assert (await client.get("/webapp/notes/add")).status == 405
    assert (await client.post("/webapp/notes/add", data={"body": "no title"})).status == 500  # NOT NULL

    notes = await (await client.get("/webapp/notes")).json()
    assert notes[0]["title"] == "Welcome"
    assert any(n["id"] == added["id"] for n in notes)

    resp = await client.get(f"/webapp/note/{added['id']}")
    assert resp.headers["Content-Type"] == "text/xml; charset=utf-8"
    row = ET.fromstring(await resp.read()).find("row")
    assert row is not None and row.attrib["title"] == "Ünïcode <title>"

    resp = await client.get("/webapp/page")
    assert resp.headers["Content-Type"] == "text/html; charset=utf-8"
    page = await resp.text()
    assert "<th>Title</th>" in page and "&lt;b&gt;markup&lt;/b&gt;" in page

    resp = await client.get("/webapp/files/a/b.txt")
    assert (resp.status, await resp.text()) == (200, "you asked for a/b.txt with GET")
    assert resp.headers["Cache-Control"] == "no-store"


async def test_example_authorized_service(client, example, svcconn: psycopg.Connection) -> None:
    await wait_catalog(client, lambda services: "webapp/me" in services)
    role, password = unique("reader_"), secrets.token_urlsafe(12)
    svcconn.execute(f"CREATE ROLE {role} LOGIN PASSWORD '{password}'")
    svcconn.execute(f"GRANT USAGE ON SCHEMA sessdb TO {role}")
    try:
        assert (await client.get("/webapp/me")).status == 401
        resp = await client.get("/webapp/me", headers={**basic(role, password), "User-Agent": "curl/8"})
        assert await resp.json() == [{"you": role, "agent": "curl/8"}]
    finally:
        svcconn.execute(f"DROP OWNED BY {role}")
        svcconn.execute(f"DROP ROLE {role}")
