"""Helpers for the state-server tests: a raw-bytes client, servers, time travel, a cuttable proxy."""

from __future__ import annotations

import asyncio
import contextlib
import re
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from urllib.parse import quote

import psycopg
import pytest

from sessdb.config import Settings
from sessdb.stateserver.server import StateServer

APP = "/LM/W3SVC/1/ROOT/App(hhhh=)/"
# Seconds a test waits for something that must come without waiting on a lock or a timer: long
# past any normal answer on a busy machine, far short of what a missed wake-up or a server that
# waits on the lock would take (the lock's execution timeout, or forever). Speed itself is
# measured by scripts/bench, never asserted.
HANG_GUARD = 20.0


def new_key(app: str = APP) -> str:
    """A fresh decoded item key under ``app`` (24-char-ish session id part)."""
    return app + uuid.uuid4().hex[:24]


def wire(key: str) -> str:
    """The request-target the .NET 4.x client sends: the whole key URL-encoded, lower-case hex."""
    encoded = quote(key, safe="-_.!*() ").replace(" ", "+")
    return re.sub(r"%[0-9A-F]{2}", lambda m: m.group(0).lower(), encoded)


@dataclass
class Reply:
    """One parsed response."""

    status: int
    reason: str
    headers: list[tuple[str, str]]
    body: bytes = b""

    def header(self, name: str) -> str | None:
        """The value of a header (case-insensitive), or None."""
        for key, value in self.headers:
            if key.lower() == name.lower():
                return value
        return None

    @property
    def names(self) -> set[str]:
        """The header names as sent."""
        return {k for k, _ in self.headers}


def check_envelope(reply: Reply) -> None:
    """S3: Content-Length and X-AspNet-Version (major >= 2) always; never chunked, never typed."""
    assert reply.header("Content-Length") is not None
    version = reply.header("X-AspNet-Version")
    assert version is not None and int(version.split(".")[0]) >= 2, reply
    assert reply.header("Transfer-Encoding") is None and reply.header("Content-Type") is None
    if reply.status in (404, 423):
        assert reply.body == b"" and reply.header("Content-Length") == "0"


@dataclass
class StateClient:
    """A raw TCP connection to a state server."""

    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    host: str = "127.0.0.1:42424"
    _closed: bool = field(default=False)

    @classmethod
    async def open(cls, port: int) -> StateClient:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        return cls(reader, writer)

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    def build(self, method: str, target: str, headers: list[tuple[str, str]] | None = None, body: bytes = b"",
              *, content_length: bool | None = None) -> bytes:
        lines = [f"{method} {target} HTTP/1.1", f"Host: {self.host}"]
        lines += [f"{k}: {v}" for k, v in headers or []]
        if content_length or (content_length is None and body):
            lines.append(f"Content-Length: {len(body)}")
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body

    async def request(self, method: str, key_or_target: str, headers: list[tuple[str, str]] | None = None,
                      body: bytes = b"", *, raw_target: bool = False) -> Reply:
        target = key_or_target if raw_target else wire(key_or_target)
        await self.send(self.build(method, target, headers, body))
        return await self.read_reply()

    async def read_reply(self, timeout: float = 10) -> Reply:
        return await asyncio.wait_for(self._read_reply(), timeout)

    async def _read_reply(self) -> Reply:
        head = await self.reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")[:-2]
        version, code, reason = lines[0].split(" ", 2)
        assert version == "HTTP/1.1"
        headers = [tuple(part.strip() for part in ln.split(":", 1)) for ln in lines[1:]]
        reply = Reply(int(code), reason, headers)  # type: ignore[arg-type]
        length = int(reply.header("Content-Length") or "-1")
        assert length >= 0, f"no Content-Length in {lines}"
        reply.body = await self.reader.readexactly(length)
        check_envelope(reply)
        return reply

    async def at_eof(self, timeout: float = 5) -> bool:
        """True when the server closed the connection (reads EOF or a reset)."""
        try:
            data = await asyncio.wait_for(self.reader.read(1), timeout)
        except ConnectionError:
            return True
        return data == b""

    async def close(self) -> None:
        if not self._closed:
            self._closed = True
            self.writer.close()
            with contextlib.suppress(Exception):
                await self.writer.wait_closed()

    # -- the six operations ----------------------------------------------------------------------

    async def get(self, key: str, *extra: tuple[str, str]) -> Reply:
        return await self.request("GET", key, list(extra))

    async def acquire(self, key: str) -> Reply:
        return await self.request("GET", key, [("Exclusive", "acquire")])

    async def release(self, key: str, cookie: int | str) -> Reply:
        return await self.request("GET", key, [("Exclusive", "release"), ("LockCookie", str(cookie))])

    async def put(self, key: str, body: bytes, *, timeout: int | None = 20, cookie: int | None = None,
                  extra_flags: int | None = None) -> Reply:
        headers = []
        if timeout is not None:
            headers.append(("Timeout", str(timeout)))
        if cookie is not None:
            headers.append(("LockCookie", str(cookie)))
        if extra_flags is not None:
            headers.append(("ExtraFlags", str(extra_flags)))
        return await self.request("PUT", key, headers, body)

    async def delete(self, key: str, cookie: int | None = None) -> Reply:
        return await self.request("DELETE", key, [] if cookie is None else [("LockCookie", str(cookie))])

    async def head(self, key: str) -> Reply:
        return await self.request("HEAD", key)


def state_settings(dsn: str, **changes: object) -> Settings:
    """Settings for an in-process state server on any free port."""
    return Settings(dsn=dsn, state_port=0, sweep_interval=3600, pool_size=10, session_reserve=0).replace(**changes)


@contextlib.asynccontextmanager
async def running_server(dsn: str, **kwargs: object) -> AsyncIterator[StateServer]:
    """A started ``StateServer``; keyword arguments go to ``Settings`` or the constructor."""
    ctor = {k: kwargs.pop(k) for k in ("max_body", "max_line", "max_headers", "pool_size") if k in kwargs}
    server = StateServer(state_settings(dsn, **kwargs), dsn, **ctor)  # type: ignore[arg-type]
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


@contextlib.asynccontextmanager
async def clients(port: int, n: int = 1) -> AsyncIterator[list[StateClient]]:
    """``n`` open connections, closed at the end."""
    opened = [await StateClient.open(port) for _ in range(n)]
    try:
        yield opened
    finally:
        for c in opened:
            await c.close()


def row(svc: psycopg.Connection, key: str) -> dict | None:
    """The stored row of ``key`` as a dict, or None."""
    cur = svc.execute("SELECT data, timeout_min AS timeout_minutes, flags, lock_cookie, locked, lock_date, expires_at - now() AS left,"
                      " lock_date - now() AS lock_offset, watched FROM sessdb.state_items WHERE item_key = %s", [key])
    values = cur.fetchone()
    if values is None:
        return None
    return dict(zip([c.name for c in cur.description], values))


def travel(svc: psycopg.Connection, key: str, seconds: float) -> None:
    """Pretend ``seconds`` pass for ``key``: move its expiry and lock date that far back."""
    svc.execute("UPDATE sessdb.state_items SET expires_at = expires_at - make_interval(secs => %s),"
                " lock_date = lock_date - make_interval(secs => %s),"
                " created_at = created_at - make_interval(secs => %s) WHERE item_key = %s",
                [seconds, seconds, seconds, key])


class TcpProxy:
    """A TCP proxy to PostgreSQL that a test can cut (connections reset, new ones refused)."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.port = 0
        self._server: asyncio.AbstractServer | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", self.port, reuse_address=True)
        self.port = int(self._server.sockets[0].getsockname()[1])

    async def cut(self) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()
        for writer in list(self._writers):
            writer.transport.abort()
        self._writers.clear()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.transport.abort()
            return
        self._writers |= {writer, up_writer}
        pumps = [asyncio.ensure_future(_pump(reader, up_writer)), asyncio.ensure_future(_pump(up_reader, writer))]
        self._tasks.update(pumps)
        await asyncio.gather(*pumps, return_exceptions=True)
        self._tasks.difference_update(pumps)
        for w in (writer, up_writer):
            self._writers.discard(w)
            w.transport.abort()


async def _pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    finally:
        writer.transport.abort()


@pytest.fixture(scope="module")
async def state_server(dsn: str) -> AsyncIterator[StateServer]:
    """One in-process state server for a test module (tests use their own keys)."""
    async with running_server(dsn) as server:
        yield server


@pytest.fixture
async def conn(state_server: StateServer) -> AsyncIterator[StateClient]:
    """One raw connection to the module's state server."""
    client = await StateClient.open(state_server.port)  # type: ignore[arg-type]
    yield client
    await client.close()
