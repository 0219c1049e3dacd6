"""The ASP.NET state-server listener: asyncio TCP server, persistent connections, sweeper.

Each connection is served by one task that frames requests with ``RequestParser``, answers them
in order (pipelined requests included) and keeps the connection open. Requests never wait on
a session lock: a locked item is answered 423 at once. A request that passes a size limit or
cannot be framed gets 400 and the connection is closed. When PostgreSQL cannot be reached the
connection is closed without an answer, so the ASP.NET client raises an error instead of
mistaking the outage for a missing item (aspnet-state.md 1.5, scenario S33).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

import psycopg

from sessdb.config import Settings
from sessdb.stateserver import store
from sessdb.stateserver.pool import StatePool
from sessdb.stateserver.protocol import (
    MAX_BODY,
    MAX_HEADERS,
    MAX_LINE,
    BadRequest,
    ProtocolError,
    RawRequest,
    RequestParser,
    Response,
    bad_request,
    encode,
    parse_operation,
    respond,
)

log = logging.getLogger("sessdb.stateserver")

READ_SIZE = 65536
STOP_GRACE = 5.0  # seconds in-flight requests get to finish at stop()


class StoreUnavailable(Exception):
    """PostgreSQL could not run the operation; the connection is dropped unanswered."""


@dataclass
class _Client:
    """One client connection and whether a request of it is being answered."""

    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    busy: bool = False


class StateServer:
    """The state-server listener on ``settings.state_host:state_port`` plus its sweeper.

    ``port`` is the bound port once ``start()`` returned (useful with port 0). The limits
    default to aspnet-state.md 1.12: 8 KiB per line, 60 headers, 20 MiB of body.
    """

    def __init__(self, settings: Settings, dsn: str, *, max_body: int = MAX_BODY, max_line: int = MAX_LINE,
                 max_headers: int = MAX_HEADERS, pool_size: int | None = None) -> None:
        self.settings = settings
        self.dsn = dsn
        self.port: int | None = None
        self.pool = StatePool(dsn, pool_size or settings.pool_size)
        self._limits = (max_line, max_headers, max_body)
        self._server: asyncio.AbstractServer | None = None
        self._clients: dict[asyncio.Task[None], _Client] = {}
        self._sweeper: asyncio.Task[None] | None = None
        self._sweep_waiters: list[asyncio.Future[int]] = []
        self._stopping = False

    async def start(self) -> None:
        """Bind the listener and start the sweeper; raises ``OSError`` when the port is taken."""
        port = self.settings.state_port or 0
        self._server = await asyncio.start_server(self._on_connect, self.settings.state_host, port,
                                                  reuse_address=True)
        self.port = int(self._server.sockets[0].getsockname()[1])
        self._sweeper = asyncio.get_running_loop().create_task(self._sweep_forever(), name="sessdb-state-sweeper")
        log.info("state server listening on %s:%d", self.settings.state_host, self.port)

    async def stop(self) -> None:
        """Stop listening, let requests in flight finish (bounded), close everything."""
        self._stopping = True
        if self._server is not None:
            self._server.close()
        for task, client in list(self._clients.items()):
            if not client.busy:
                task.cancel()
        if self._clients:
            _, late = await asyncio.wait(list(self._clients), timeout=STOP_GRACE)
            for task in late:
                task.cancel()
            await asyncio.gather(*late, return_exceptions=True)
        if self._sweeper is not None:
            self._sweeper.cancel()
            await asyncio.gather(self._sweeper, return_exceptions=True)
        await self.pool.close()
        log.info("state server stopped")

    # -- connections ---------------------------------------------------------------------------

    async def _on_connect(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        client = _Client(reader, writer)
        self._clients[task] = client
        try:
            await self._serve(client)
        except StoreUnavailable:
            writer.transport.abort()
        except (ConnectionError, asyncio.CancelledError):
            pass
        except Exception:
            log.exception("state server connection failed")
        finally:
            del self._clients[task]
            writer.close()

    async def _serve(self, client: _Client) -> None:
        max_line, max_headers, max_body = self._limits
        parser = RequestParser(max_line, max_headers, max_body)
        while not self._stopping:
            try:
                request = parser.next_request()
            except ProtocolError as exc:
                await self._send(client, bad_request(str(exc), close=True), head=False)
                return
            if request is None:
                client.busy = False
                data = await client.reader.read(READ_SIZE)
                if not data:
                    return
                parser.feed(data)
                continue
            client.busy = True
            await self._send(client, await self._answer(request), head=request.method == "HEAD")

    async def _send(self, client: _Client, response: Response, *, head: bool) -> None:
        client.writer.write(encode(response, self.settings.aspnet_version, head=head))
        await client.writer.drain()
        if response.close:
            raise ConnectionResetError("closing after a framing error")

    async def _answer(self, request: RawRequest) -> Response:
        try:
            op = parse_operation(request)
        except BadRequest as exc:
            return bad_request(str(exc))
        try:
            async with self.pool.connection() as conn:
                result = await store.apply(conn, op)
        except (psycopg.Error, OSError) as exc:
            log.warning("state store unavailable, dropping the connection: %s", str(exc).strip().splitlines()[-1:])
            raise StoreUnavailable() from exc
        return respond(op, result)

    # -- sweeper -------------------------------------------------------------------------------

    async def next_sweep(self) -> int:
        """Wait for the next sweep cycle to finish; returns how many items it deleted."""
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._sweep_waiters.append(future)
        return await future

    def _swept(self, deleted: int) -> None:
        waiters, self._sweep_waiters = self._sweep_waiters, []
        for future in waiters:
            if not future.done():
                future.set_result(deleted)

    async def _sweep_forever(self) -> None:
        loop = asyncio.get_running_loop()
        interval = self.settings.sweep_interval
        next_at = loop.time() + interval
        while True:
            await asyncio.sleep(max(0.0, next_at - loop.time()))
            next_at = loop.time() + interval  # reschedule first: a slow sweep never stops the next
            deleted = 0
            try:
                async with self.pool.connection() as conn:
                    deleted = await store.sweep_expired(conn)
                if deleted:
                    log.info("swept %d expired state items", deleted)
            except Exception as exc:  # never die: log and try again next time
                log.warning("state sweep failed: %s", exc)
            self._swept(deleted)
