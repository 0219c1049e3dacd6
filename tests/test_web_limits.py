"""Sessionless isolation (scenario 42), cancellation, timeouts, and the limits of the HTTP layer.

Statements are observed from the outside through ``pg_stat_activity``; waits poll with a
deadline. Malformed HTTP goes over raw sockets, since no client library would send it.
"""

from __future__ import annotations

import asyncio
import logging
import time

import aiohttp
import psycopg
import pytest

from tests.web_helpers import (  # noqa: F401  (fixtures)
    ServiceMaker,
    raw_http,
    services,
    status_of,
    table,
    unique,
)


async def until(check, timeout: float = 5.0, interval: float = 0.02):  # type: ignore[no-untyped-def]
    """Poll ``check()`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        await asyncio.sleep(interval)


def _backend_running(conn: psycopg.Connection, marker: str) -> int | None:
    row = conn.execute("SELECT pid FROM pg_stat_activity WHERE state = 'active' AND query LIKE %s "
                       "AND pid <> pg_backend_pid()", [f"%{marker}%"]).fetchone()
    return row[0] if row else None


def _is_busy(conn: psycopg.Connection, pid: int, marker: str) -> bool:
    row = conn.execute("SELECT state, query FROM pg_stat_activity WHERE pid = %s", [pid]).fetchone()
    return row is not None and row[0] == "active" and marker in row[1]


# --- scenario 42: sessionless requests never see each other's state ---------------------------------


def _make_iso_role(conn: psycopg.Connection) -> None:
    conn.execute("DO $$ BEGIN CREATE ROLE web_iso_role; EXCEPTION WHEN duplicate_object THEN NULL; END $$")
    conn.execute("GRANT USAGE ON SCHEMA sessdb TO web_iso_role")


async def test_scenario_42_pooled_connections_are_sanitized(make_client, services: ServiceMaker,
                                                            svcconn: psycopg.Connection) -> None:
    _make_iso_role(svcconn)
    client = await make_client(pool_size=1)  # one connection: the second request reuses the first's
    dirty = await services.create(client, "JSON", """
        SELECT pg_backend_pid() AS pid FROM (
            SELECT set_config('app.v', 'leaked', false), set_config('role', 'web_iso_role', false),
                   pg_advisory_lock(4242), (SELECT count(*) FROM pg_class) AS n
        ) s
    """)
    make_temp = await services.create(client, "RAW", "CREATE TEMP TABLE leak_probe (x int)")
    probe = await services.create(client, "JSON", """
        SELECT pg_backend_pid() AS pid, current_setting('app.v', true) AS v, current_user AS u,
               to_regclass('pg_temp.leak_probe') IS NOT NULL AS temp_table,
               (SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid()) AS locks
    """)
    engine_user = psycopg.conninfo.conninfo_to_dict(svcconn.info.dsn)["user"]
    (first,) = await (await client.get(f"/{dirty}")).json()
    assert (await client.get(f"/{make_temp}")).status == 200
    (second,) = await (await client.get(f"/{probe}")).json()
    assert second["pid"] == first["pid"]  # the same backend served both
    assert second.pop("v") in (None, "")  # a custom setting, once defined, reads '' after a reset
    assert second == {"pid": first["pid"], "u": engine_user, "temp_table": False, "locks": 0}


async def test_scenario_42_set_role_statement_does_not_leak(make_client, services: ServiceMaker,
                                                            svcconn: psycopg.Connection) -> None:
    _make_iso_role(svcconn)
    client = await make_client(pool_size=1)
    setter = await services.create(client, "RAW", "SET ROLE web_iso_role")
    probe = await services.create(client, "RAW", "SELECT current_user")
    assert (await client.get(f"/{setter}")).status == 200
    engine_user = psycopg.conninfo.conninfo_to_dict(svcconn.info.dsn)["user"]
    assert await (await client.get(f"/{probe}")).text() == engine_user


async def test_scenario_42_a_failed_request_leaves_nothing_either(make_client, services: ServiceMaker) -> None:
    client = await make_client(pool_size=1)
    failing = await services.create(client, "RAW", "SELECT 1 / (count(*) - count(*)) FROM "
                                                   "(SELECT set_config('app.v', 'leaked', false)) s")
    probe = await services.create(client, "RAW", "SELECT coalesce(current_setting('app.v', true), '<none>')")
    assert (await client.get(f"/{failing}")).status == 500
    assert await (await client.get(f"/{probe}")).text() in ("<none>", "")



async def test_scenario_42_prepared_statements_cursors_and_listens_do_not_leak(make_client,
                                                                              services: ServiceMaker) -> None:
    client = await make_client(pool_size=1)
    dirty = [
        await services.create(client, "RAW", "PREPARE leak_stmt AS SELECT 1"),
        await services.create(client, "RAW", "DECLARE leak_cursor CURSOR WITH HOLD FOR SELECT 1"),
        await services.create(client, "RAW", "LISTEN leak_channel"),
    ]
    probe = await services.create(client, "JSON", """
        SELECT (SELECT count(*) FROM pg_prepared_statements WHERE from_sql) AS prepared,
               (SELECT count(*) FROM pg_cursors WHERE name <> '') AS cursors,
               (SELECT count(*) FROM pg_listening_channels()) AS listens
    """)
    for name in dirty:
        assert (await client.get(f"/{name}")).status == 200
        assert await (await client.get(f"/{probe}")).json() == [{"prepared": 0, "cursors": 0, "listens": 0}]
    assert (await client.get(f"/{dirty[0]}")).status == 200  # the name is free again


async def test_engine_statements_come_back_after_deallocate_all(make_client, services: ServiceMaker) -> None:
    # the engine keeps its statements prepared on each connection; a statement that drops
    # them all fails (the engine's own statement after it is gone), and the next request
    # prepares them again
    client = await make_client(pool_size=1)
    dropper = await services.create(client, "RAW", "DEALLOCATE ALL")
    probe = await services.create(client, "RAW", "SELECT 'fine'")
    assert await (await client.get(f"/{probe}")).text() == "fine"
    resp = await client.get(f"/{dropper}")
    assert resp.status in (200, 500)
    for _ in range(3):
        resp = await client.get(f"/{probe}")
        assert (resp.status, await resp.text()) == (200, "fine")


async def test_a_changed_table_is_read_with_its_new_columns(make_client, services: ServiceMaker, table: str,
                                                           svcconn: psycopg.Connection) -> None:
    # the statement's plan, prepared on the connection, no longer fits: it is made again
    client = await make_client(pool_size=1)
    svcconn.execute(f"INSERT INTO public.{table} (v) VALUES ('a')")
    name = await services.create(client, "JSON", f"SELECT * FROM public.{table}")
    first = await (await client.get(f"/{name}")).json()
    assert [row["v"] for row in first] == ["a"]
    svcconn.execute(f"ALTER TABLE public.{table} ADD COLUMN extra int DEFAULT 7")
    resp = await client.get(f"/{name}")
    assert resp.status == 200
    assert [(row["v"], row["extra"]) for row in await resp.json()] == [("a", 7)]



async def test_a_commit_that_fails_answers_its_error(make_client, services: ServiceMaker, table: str,
                                                    svcconn: psycopg.Connection) -> None:
    # a deferred constraint fails at the commit, that is at the Sync that ends the request's
    # statements, after the statement itself succeeded; the connection serves on
    parent = unique("parent")
    svcconn.execute(f"CREATE TABLE public.{parent} (id int PRIMARY KEY)")
    svcconn.execute(f"GRANT ALL ON public.{parent} TO PUBLIC")
    svcconn.execute(f"ALTER TABLE public.{table} ADD COLUMN parent int REFERENCES public.{parent} (id) "
                    "DEFERRABLE INITIALLY DEFERRED")
    try:
        client = await make_client(pool_size=1)
        failing = await services.create(client, "JSON", f"INSERT INTO public.{table} (v, parent) "
                                                        "VALUES ('orphan', 42) RETURNING v")
        probe = await services.create(client, "RAW", "SELECT 'fine'")
        for _ in range(3):  # the first on a fresh connection, the next after a full reset
            resp = await client.get(f"/{failing}")
            assert resp.status == 500
            assert (await resp.json())["code"] == "23503"
            resp = await client.get(f"/{probe}")
            assert (resp.status, await resp.text()) == (200, "fine")
        assert svcconn.execute(f"SELECT count(*) FROM public.{table}").fetchone() == (0,)
    finally:
        svcconn.execute(f"DROP TABLE public.{table}")
        svcconn.execute(f"DROP TABLE public.{parent}")


async def test_a_session_requests_deferred_triggers_fire_as_its_role_and_a_failing_commit_answers_its_error(
        make_client, services: ServiceMaker, table: str, svcconn: psycopg.Connection) -> None:
    # a session request's deferred triggers fire right after its statement, as its role and with
    # its settings, whether or not the engine's bookkeeping then writes the session's row (here
    # it does when the statement set a SessionTimeout); a failing check answers its error, and
    # the session serves on
    parent, note, add, role = unique("parent"), unique("note"), unique("add"), unique("deferred_role")
    svcconn.execute(f"CREATE ROLE {role} NOLOGIN")
    svcconn.execute(f"GRANT USAGE ON SCHEMA sessdb TO {role}")
    svcconn.execute(f"CREATE TABLE public.{parent} (id int PRIMARY KEY)")
    svcconn.execute(f"GRANT ALL ON public.{parent} TO PUBLIC")
    svcconn.execute(f"ALTER TABLE public.{table} ADD COLUMN parent int REFERENCES public.{parent} (id) "
                    "DEFERRABLE INITIALLY DEFERRED")
    svcconn.execute(f"""
        CREATE FUNCTION public.{note}() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            INSERT INTO public.{table} (v) VALUES (current_user || ' ' || current_setting('request.path', true));
            RETURN NULL;
        END $$""")
    svcconn.execute(f"CREATE CONSTRAINT TRIGGER note AFTER INSERT ON public.{parent} DEFERRABLE INITIALLY DEFERRED "
                    f"FOR EACH ROW EXECUTE FUNCTION public.{note}()")
    svcconn.execute(f"""
        CREATE FUNCTION public.{add}(sid text, n int, parent int, minutes text) RETURNS text LANGUAGE plpgsql AS $$
        BEGIN
            IF sid IS NOT NULL THEN
                PERFORM sa_set_http_option('SessionID', sid);
            END IF;
            IF n IS NOT NULL THEN
                INSERT INTO public.{parent} VALUES (n);
            END IF;
            IF parent IS NOT NULL THEN
                INSERT INTO public.{table} (v, parent) VALUES ('orphan', parent);
            END IF;
            IF minutes IS NOT NULL THEN
                PERFORM sa_set_http_option('SessionTimeout', minutes);
            END IF;
            RETURN 'done';
        END $$""")
    try:
        client = await make_client(pool_size=1)
        name = await services.create(client, "RAW", f"SELECT public.{add}(:sid, cast(:n AS int), "
                                                    "cast(:parent AS int), :minutes)", user_name=role)

        async def request(**params: str) -> tuple[int, str]:
            resp = await client.get(f"/{name}", params=params)
            return resp.status, await resp.text()

        assert await request(sid="DEF-1") == (200, "done")
        assert await request(sessionid="DEF-1", n="1") == (200, "done")
        assert await request(sessionid="DEF-1", n="2", minutes="7") == (200, "done")  # the row is written
        for minutes in ([], ["7"], []):
            status, text = await request(sessionid="DEF-1", parent="42", **dict(zip(["minutes"], minutes)))
            assert status == 500 and "23503" in text, text
        assert await request(sessionid="DEF-1", n="3") == (200, "done")
        seen = svcconn.execute(f"SELECT v FROM public.{table} ORDER BY id").fetchall()
        assert seen == [(f"{role} /{name}",)] * 3
    finally:
        svcconn.execute(f"DROP TABLE public.{table}")
        svcconn.execute(f"DROP TABLE public.{parent}")
        svcconn.execute(f"DROP FUNCTION public.{add}(text, int, int, text)")
        svcconn.execute(f"DROP FUNCTION public.{note}()")
        svcconn.execute(f"DROP OWNED BY {role}")
        svcconn.execute(f"DROP ROLE {role}")


async def test_a_session_request_needs_no_usage_on_sessdb_for_its_role_even_one_its_statement_set(
        make_client, services: ServiceMaker, table: str, svcconn: psycopg.Connection) -> None:
    # the engine's last step of a session request is prepared with the request's role in force:
    # a service role with no rights on schema sessdb is served, and the session's row is kept,
    # both for a service that runs as that role and after a role-less statement SET it for good;
    # and what the role put in its own schema, on the search path as "$user", never stands in for
    # what the step calls once it has reset the role: a num_nulls that fits the reset's arguments
    # better than pg_catalog's, and operators that fit an unqualified form of the time check
    role = unique("bare_role")
    svcconn.execute(f"CREATE ROLE {role} NOLOGIN")
    svcconn.execute(f"CREATE SCHEMA {role} AUTHORIZATION {role}")
    with svcconn.transaction():
        svcconn.execute(f"SET LOCAL ROLE {role}")
        trap = f"INSERT INTO public.{table} (v) VALUES ('trapped as ' || current_user)"
        svcconn.execute(f"CREATE FUNCTION {role}.num_nulls(text, text) RETURNS int LANGUAGE plpgsql "
                        f"AS $$ BEGIN {trap}; RETURN 0; END $$")
        for name, args, kind in (("ge", "numeric, float8", "boolean"), ("plus", "float8, integer", "float8")):
            svcconn.execute(f"CREATE FUNCTION {role}.{name}({args}) RETURNS {kind} LANGUAGE plpgsql "
                            f"AS $$ BEGIN {trap}; RETURN NULL; END $$")
        svcconn.execute(f"CREATE OPERATOR {role}.>= (LEFTARG = numeric, RIGHTARG = float8, FUNCTION = {role}.ge)")
        svcconn.execute(f"CREATE OPERATOR {role}.+ (LEFTARG = float8, RIGHTARG = integer, FUNCTION = {role}.plus)")

    def row_of(session_id: str):  # type: ignore[no-untyped-def]
        return svcconn.execute("SELECT client_addr, last_time FROM sessdb.http_sessions WHERE session_id = %s",
                               [session_id]).fetchone()

    try:
        client = await make_client(pool_size=1, session_bind_ip=False)
        make = await services.create(client, "RAW",
                                     "SELECT 'made' FROM (SELECT sa_set_http_option('SessionID', :sid)) s")
        end = await services.create(client, "RAW", "SELECT 'ended' FROM (SELECT sa_set_http_option('SessionID', '')) s")
        who = await services.create(client, "RAW", "SELECT current_user::text", user_name=role)
        plain_who = await services.create(client, "RAW", "SELECT current_user::text")
        become = await services.create(client, "RAW", "SELECT set_config('role', :r, false)")
        unbecome = await services.create(client, "RAW", "SELECT set_config('role', 'none', false)")

        async def get(name: str, **params: str) -> tuple[int, str]:
            resp = await client.get(f"/{name}", params=params)
            return resp.status, await resp.text()

        # a request from another address has the session's row written in its transaction
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(local_addr=("127.0.0.2", 0))) as other:
            for session_id, first, then in (("BARE-1", (who, {}), (who, {})),
                                             ("BARE-2", (become, {"r": role}), (plain_who, {}))):
                assert await get(make, sid=session_id) == (200, "made")
                _, created = await until(lambda sid=session_id: row_of(sid))
                async with other.get(client.make_url(f"/{first[0]}"), params={"sessionid": session_id, **first[1]}) \
                        as resp:
                    assert resp.status == 200, await resp.text()
                addr, written = row_of(session_id)
                assert addr == "127.0.0.2" and written > created  # the bookkeeping ran, as the engine
                for _ in range(2):  # the second from the address the row now holds: $3 is not ''
                    assert await get(then[0], sessionid=session_id, **then[1]) == (200, role)
                assert await get(unbecome, sessionid=session_id) == (200, "none")  # so that it can end
                assert await get(end, sessionid=session_id) == (200, "ended")
        assert svcconn.execute(f"SELECT v FROM public.{table}").fetchall() == []
        # anyone may call the step's function, but it can do no more than they could
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            with svcconn.transaction():
                svcconn.execute(f"SET LOCAL ROLE {role}")
                svcconn.execute("SELECT sessdb_request.sync_from_request('engine', 'addr')")
    finally:
        svcconn.execute(f"DROP OWNED BY {role}")
        svcconn.execute(f"DROP ROLE {role}")


async def test_deferred_triggers_see_the_request_and_the_connection_is_still_reset(
        make_client, services: ServiceMaker, table: str, svcconn: psycopg.Connection) -> None:
    # a sessionless request's deferred constraints are checked right after its statement, with
    # its settings, as at a commit; then the pooled reset takes back what their triggers left too:
    # a statement they PREPAREd, and the temp table they fire on
    note, fill = unique("deferred_note"), unique("deferred_fill")
    svcconn.execute(f"""
        CREATE FUNCTION public.{note}() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            INSERT INTO public.{table} (v) VALUES (current_setting('request.path', true));
            IF NEW.x = 1 THEN
                EXECUTE 'PREPARE deferred_leak AS SELECT 1';
            END IF;
            RETURN NULL;
        END $$""")
    svcconn.execute(f"""
        CREATE FUNCTION public.{fill}() RETURNS text LANGUAGE plpgsql AS $$
        BEGIN
            CREATE TEMP TABLE deferred_probe (x int);
            CREATE CONSTRAINT TRIGGER note AFTER INSERT ON deferred_probe DEFERRABLE INITIALLY DEFERRED
                FOR EACH ROW EXECUTE FUNCTION public.{note}();
            INSERT INTO deferred_probe VALUES (1), (2);
            RETURN 'filled';
        END $$""")
    try:
        client = await make_client(pool_size=1)
        filler = await services.create(client, "RAW", f"SELECT public.{fill}()")
        probe = await services.create(client, "JSON", """
            SELECT to_regclass('pg_temp.deferred_probe') IS NULL AS gone,
                   (SELECT count(*) FROM pg_catalog.pg_prepared_statements WHERE from_sql) AS prepared""")
        for _ in range(2):  # the temp table is gone, so the same request runs again on the same connection
            resp = await client.get(f"/{filler}")
            assert (resp.status, await resp.text()) == (200, "filled")
            assert await (await client.get(f"/{probe}")).json() == [{"gone": True, "prepared": 0}]
        paths = svcconn.execute(f"SELECT v FROM public.{table}").fetchall()
        assert paths == [(f"/{filler}",)] * 4
    finally:
        svcconn.execute(f"DROP FUNCTION public.{fill}()")
        svcconn.execute(f"DROP FUNCTION public.{note}()")


async def test_a_temp_view_does_not_hide_a_prepared_statement_from_the_reset(
        make_client, services: ServiceMaker, svcconn: psycopg.Connection) -> None:
    hide = unique("hide")
    svcconn.execute(f"""
        CREATE FUNCTION public.{hide}() RETURNS text LANGUAGE plpgsql AS $$
        BEGIN
            EXECUTE 'PREPARE hidden_leak AS SELECT 1';
            CREATE TEMP VIEW pg_prepared_statements AS SELECT NULL::boolean AS from_sql WHERE false;
            RETURN 'hidden';
        END $$""")
    try:
        client = await make_client(pool_size=1)
        hider = await services.create(client, "RAW", f"SELECT public.{hide}()")
        leak = await services.create(client, "JSON", "EXECUTE hidden_leak")
        assert await (await client.get(f"/{hider}")).text() == "hidden"
        resp = await client.get(f"/{leak}")
        assert resp.status == 500
        assert (await resp.json())["code"] == "26000"  # no such prepared statement
    finally:
        svcconn.execute(f"DROP FUNCTION public.{hide}()")


async def test_the_reset_does_not_run_under_the_requests_statement_timeout(
        make_client, services: ServiceMaker, table: str, svcconn: psycopg.Connection) -> None:
    # dropping many temp tables takes longer than the 1 ms the statement leaves as its timeout;
    # the request's work is done by then, and is committed
    many = unique("many_temps")
    svcconn.execute(f"""
        CREATE FUNCTION public.{many}() RETURNS text LANGUAGE plpgsql AS $$
        BEGIN
            FOR i IN 1..300 LOOP
                EXECUTE format('CREATE TEMP TABLE many_%s (x int PRIMARY KEY, y text)', i);
            END LOOP;
            INSERT INTO public.{table} (v) VALUES ('1');
            PERFORM set_config('statement_timeout', '1', true);
            RETURN 'done';
        END $$""")
    try:
        client = await make_client(pool_size=1)
        name = await services.create(client, "RAW", f"SELECT public.{many}()")
        for _ in range(2):
            resp = await client.get(f"/{name}")
            assert (resp.status, await resp.text()) == (200, "done")
        assert svcconn.execute(f"SELECT count(*) FROM public.{table}").fetchone() == (2,)
    finally:
        svcconn.execute(f"DROP FUNCTION public.{many}()")


async def test_a_statement_that_begins_a_transaction_is_committed_all_the_same(
        make_client, services: ServiceMaker, table: str, svcconn: psycopg.Connection) -> None:
    client = await make_client(pool_size=1)
    begin = await services.create(client, "RAW", "BEGIN")
    write = await services.create(client, "JSON", f"INSERT INTO public.{table} (v) VALUES ('kept') RETURNING v")
    assert (await client.get(f"/{begin}")).status == 200
    assert await (await client.get(f"/{write}")).json() == [{"v": "kept"}]
    assert svcconn.execute(f"SELECT v FROM public.{table}").fetchall() == [("kept",)]
    idle_in_transaction = svcconn.execute(
        "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'sessdb' AND state LIKE 'idle in%'")
    assert idle_in_transaction.fetchone() == (0,)


# --- cancellation -----------------------------------------------------------------------------------


async def test_client_disconnect_cancels_the_statement(client, services: ServiceMaker, table: str,
                                                       svcconn: psycopg.Connection) -> None:
    marker = unique("sleep_")
    name = await services.create(client, "RAW", f"INSERT INTO public.{table} (v) SELECT '{marker}' "
                                                "FROM pg_sleep(30) RETURNING v")
    reader, writer = await asyncio.open_connection(client.server.host, client.server.port)
    writer.write(f"GET /{name} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    await writer.drain()
    pid = await until(lambda: _backend_running(svcconn, marker))
    writer.close()
    await writer.wait_closed()
    # a hang guard under the statement's 30 s: uncancelled, it would still be running then
    await until(lambda: not _is_busy(svcconn, pid, marker), timeout=20.0)
    assert svcconn.execute(f"SELECT count(*) FROM {table}").fetchone() == (0,)  # rolled back
    ok = await services.create(client, "RAW", "SELECT 'served'")
    assert await (await client.get(f"/{ok}")).text() == "served"


async def test_request_timeout_answers_504_and_cancels(make_client, services: ServiceMaker,
                                                       svcconn: psycopg.Connection) -> None:
    client = await make_client(request_timeout=0.3)
    marker = unique("slow_")
    name = await services.create(client, "JSON", f"SELECT '{marker}' AS m FROM pg_sleep(20)")
    started = time.monotonic()
    resp = await client.get(f"/{name}")
    assert resp.status == 504
    assert time.monotonic() - started < 5
    assert (await resp.json())["code"] == "57014"
    assert _backend_running(svcconn, marker) is None
    fast = await services.create(client, "RAW", "SELECT 'fast'")
    assert await (await client.get(f"/{fast}")).text() == "fast"


async def test_request_timeout_zero_means_no_limit(make_client, services: ServiceMaker) -> None:
    client = await make_client(request_timeout=0)
    name = await services.create(client, "RAW", "SELECT current_setting('statement_timeout') FROM pg_sleep(0.05)")
    assert await (await client.get(f"/{name}")).text() == "0"


async def test_request_timeout_html_for_raw_service(make_client, services: ServiceMaker) -> None:
    client = await make_client(request_timeout=0.2)
    name = await services.create(client, "RAW", "SELECT 'x' FROM pg_sleep(20)")
    resp = await client.get(f"/{name}")
    assert resp.status == 504
    assert resp.headers["Content-Type"] == "text/html; charset=utf-8"


# --- size limits ------------------------------------------------------------------------------------


async def test_max_request_size_413(make_client, services: ServiceMaker, table: str,
                                    svcconn: psycopg.Connection) -> None:
    client = await make_client(max_request_size=1024)
    name = await services.create(client, "RAW", f"INSERT INTO public.{table} (v) VALUES (http_body()) RETURNING 'ok'",
                                 methods="POST")
    resp = await client.post(f"/{name}", data=b"x" * 2048, headers={"Content-Type": "application/octet-stream"})
    assert resp.status == 413
    assert svcconn.execute(f"SELECT count(*) FROM {table}").fetchone() == (0,)
    resp = await client.post(f"/{name}", data=b"y" * 1000, headers={"Content-Type": "application/octet-stream"})
    assert (resp.status, await resp.text()) == (200, "ok")


async def test_max_request_size_413_for_a_form(make_client, services: ServiceMaker) -> None:
    client = await make_client(max_request_size=512)
    name = await services.create(client, "RAW", "SELECT :f")
    resp = await client.post(f"/{name}", data={"f": "z" * 600})
    assert resp.status == 413


async def test_a_post_that_expects_100_continue_gets_it_and_is_served(client, services: ServiceMaker) -> None:
    # curl sends "Expect: 100-continue" for bodies over 1 KiB and waits for the interim answer
    name = await services.create(client, "RAW", "SELECT length(:v)", methods="POST")
    body = b"v=" + b"x" * 2000
    reader, writer = await asyncio.open_connection(client.server.host, client.server.port)
    try:
        writer.write(f"POST /{name} HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nConnection: close\r\n"
                     "Content-Type: application/x-www-form-urlencoded\r\n"
                     f"Content-Length: {len(body)}\r\n\r\n".encode())
        await writer.drain()
        async with asyncio.timeout(5):
            assert (await reader.readline()).startswith(b"HTTP/1.1 100 Continue")
            writer.write(body)
            await writer.drain()
            response = await reader.read()
    finally:
        writer.close()
        await writer.wait_closed()
    assert status_of(response) == 200
    assert response.endswith(b"\r\n\r\n2000")


async def test_request_line_over_8k_is_414(client, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="sessdb.web")
    response = await raw_http(client, b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n")
    assert status_of(response) == 414  # and raw_http returned: the server closed the connection
    assert any("414" in r.getMessage() for r in caplog.records)


async def test_request_line_just_under_8k_is_routed(client) -> None:
    path = b"/" + b"a" * 8000
    response = await raw_http(client, b"GET " + path + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert status_of(response) == 404


async def test_oversized_header_is_431(client) -> None:
    response = await raw_http(client, b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"b" * 9000 + b"\r\n\r\n")
    assert status_of(response) == 431


# --- malformed HTTP and idle clients ------------------------------------------------------------------


@pytest.mark.parametrize("data", [
    b"NOT A REQUEST\r\n\r\n",
    b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03\r\n\r\n",  # a TLS hello on the plain port
    b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n",
    b"GET / HTTP/1.1\r\nBad Header Line\r\n\r\n",
    b"GET / HTTP/9.9\r\nHost: x\r\n\r\n",
])
async def test_malformed_http_is_400_and_closes(client, data: bytes, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="sessdb.web")
    response = await raw_http(client, data)  # reads until the server closes the connection
    assert status_of(response) == 400
    assert any("answered 400" in r.getMessage() for r in caplog.records)


async def test_make_client_read_timeout_reaches_the_server(make_client) -> None:
    client = await make_client(read_timeout=0.5)
    assert client.server.runner.server._kwargs.get("read_timeout", 30.0) == 0.5


async def test_unknown_method_raw_is_501(client) -> None:
    response = await raw_http(client, b"BREW /pot HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert status_of(response) == 501


@pytest.mark.timing
async def test_silent_client_gets_408(make_client, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="sessdb.web")
    client = await make_client(read_timeout=0.5)
    started = time.monotonic()
    response = await raw_http(client, b"", timeout=5)
    assert status_of(response) == 408
    assert 0.4 < time.monotonic() - started < 4
    assert any("408" in r.getMessage() for r in caplog.records)


@pytest.mark.timing
async def test_half_sent_request_gets_408(make_client) -> None:
    client = await make_client(read_timeout=0.5)
    response = await raw_http(client, b"GET / HTTP/1.1\r\nHost: x\r\n", timeout=5)
    assert status_of(response) == 408


@pytest.mark.timing
async def test_slow_but_steady_client_is_not_timed_out(make_client, services: ServiceMaker) -> None:
    client = await make_client(read_timeout=0.5)
    name = await services.create(client, "RAW", "SELECT 'patient'")
    reader, writer = await asyncio.open_connection(client.server.host, client.server.port)
    try:
        for chunk in (f"GET /{name} HTTP/1.1\r\n", "Host: x\r\n", "Connection: close\r\n", "\r\n"):
            writer.write(chunk.encode())
            await writer.drain()
            await asyncio.sleep(0.3)  # pacing the client below the timeout is the point of this test
        async with asyncio.timeout(5):
            response = await reader.read()
    finally:
        writer.close()
        await writer.wait_closed()
    assert status_of(response) == 200
    assert response.endswith(b"patient")


@pytest.mark.timing
async def test_long_running_statement_is_not_a_408(make_client, services: ServiceMaker) -> None:
    client = await make_client(read_timeout=0.3)
    name = await services.create(client, "RAW", "SELECT 'done' FROM pg_sleep(0.8)")
    resp = await client.get(f"/{name}")
    assert (resp.status, await resp.text()) == (200, "done")
