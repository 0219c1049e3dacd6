"""A PostgreSQL restart under a running engine (contract 5.6, 5.10): sessions are gone, the engine serves on.

The restart needs a cluster of its own, so that the shared test database is not disturbed.
"""

from __future__ import annotations

import asyncio
import shutil
import time

import pytest
from aiohttp.test_utils import TestClient

from sessdb.embedded import EmbeddedPostgres
from sessdb.migrate import migrate
from sessdb.web.app import make_app
from tests.fix_app import SessdbTestServer, app_settings, assert_no_connection_leak, engine_of
from tests.fix_db import make_data_dir
from tests.fix_gate import until as _until

pytestmark = pytest.mark.slow

SERVICE = """
SELECT sessdb.create_service(name => 'who', type => 'RAW',
    statement => 'SELECT sa_set_http_option(''SessionID'', :new)::text || connection_property(''SessionID'')')
"""


async def test_engine_serves_on_after_postgresql_restarts() -> None:
    data_dir = make_data_dir()
    cluster = EmbeddedPostgres(data_dir)
    dsn, _ = cluster.start()
    try:
        await asyncio.to_thread(migrate, dsn)
        import psycopg

        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(SERVICE)
        client = TestClient(SessdbTestServer(make_app(app_settings(dsn, pool_size=3), dsn), host="127.0.0.1"))
        await client.start_server()
        try:
            resp = await client.get("/who", params={"new": "R-1"})
            assert await resp.text() == "R-1"
            await asyncio.to_thread(cluster.stop)
            down = await client.get("/who")
            assert down.status == 503, "a request while PostgreSQL is down gets a clear 503"
            await asyncio.to_thread(cluster.start)
            statuses = []
            deadline = time.monotonic() + 20
            while True:
                resp = await client.get("/who", params={"sessionid": "R-1"})
                statuses.append(resp.status)
                if resp.status == 200:
                    assert await resp.text() == "", "the old session is gone: the request runs sessionless"
                    break
                assert resp.status == 503, await resp.text()
                assert time.monotonic() < deadline, statuses
                await asyncio.sleep(0.05)
            assert (await client.get("/_sessdb/ready")).status == 200
            assert await (await client.get("/who", params={"new": "R-2"})).text() == "R-2"
            await _until(lambda: engine_of(client).sessions.lookup("R-1") is None)
            await assert_no_connection_leak(dsn, [engine_of(client)])
        finally:
            await client.close()
    finally:
        cluster.stop()
        shutil.rmtree(data_dir, ignore_errors=True)
