"""Web services through real HTTP on the real database: catalog, routing, variables, transactions.

Covers contract section 3 and SQL Anywhere's section 3 (scenarios 35 to 39): the catalog API
and the SA statements of ``sessdb sql``, pickup of changes without a restart, routing,
methods, HTTP variables, placeholders bound as parameters, and one transaction per request.
"""

from __future__ import annotations

import asyncio
import time

import aiohttp
import psycopg
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from sessdb.web.app import make_app
from tests.fix_app import SessdbTestServer, app_settings, engine_of
from tests.fix_server import run_cli
from tests.web_helpers import (  # noqa: F401  (fixtures)
    PICKUP_SECONDS,
    ServiceMaker,
    catalog_row,
    services,
    table,
    unique,
    wait_catalog,
)

# --- the catalog API ----------------------------------------------------------------------------


async def test_create_service_serves_at_once(client, services: ServiceMaker) -> None:
    name = await services.create(client, "RAW", "SELECT 'hello ' || :who")
    resp = await client.get(f"/{name}?who=world")
    assert resp.status == 200
    assert await resp.text() == "hello world"


def test_create_service_defaults(svcconn: psycopg.Connection, services: ServiceMaker) -> None:
    name = unique()
    svcconn.execute("SELECT sessdb.create_service(name => %s, type => 'json', statement => 'SELECT 1')", [name])
    services.created.add(name)
    row = svcconn.execute(
        'SELECT type, url, methods, "authorization", user_name, session, enabled FROM sessdb.services WHERE name = %s',
        [name]).fetchone()
    assert row == ("JSON", "OFF", "GET,HEAD,POST", False, None, "optional", True)


@pytest.mark.parametrize("bad", ["/lead", "trail/", "dou//ble", "sp ace", "_sessdb", "_sessdb/x", "ü"])
def test_create_service_rejects_bad_names(svcconn: psycopg.Connection, bad: str) -> None:
    with pytest.raises(psycopg.Error) as info:
        svcconn.execute("SELECT sessdb.create_service(name => %s, type => 'RAW', statement => 'SELECT 1')", [bad])
    assert info.value.sqlstate == "SD100"


def test_create_service_accepts_every_allowed_character(svcconn: psycopg.Connection, services: ServiceMaker) -> None:
    name = unique() + "/a-b_c.d!e~f*g'h(i)9"
    svcconn.execute("SELECT sessdb.create_service(name => %s, type => 'RAW', statement => 'SELECT 1')", [name])
    services.created.add(name)
    assert catalog_row(svcconn, name) is not None


def test_create_service_twice_is_refused_unless_replace(svcconn: psycopg.Connection, services: ServiceMaker) -> None:
    name = unique()
    call = "SELECT sessdb.create_service(name => %s, type => 'RAW', statement => %s, replace => %s)"
    svcconn.execute(call, [name, "SELECT 1", False])
    services.created.add(name)
    with pytest.raises(psycopg.Error) as info:
        svcconn.execute(call, [name, "SELECT 2", False])
    assert info.value.sqlstate == "SD101"
    svcconn.execute(call, [name, "SELECT 2", True])
    assert catalog_row(svcconn, name).statement == "SELECT 2"  # type: ignore[union-attr]


@pytest.mark.parametrize(("args", "sqlstate"), [
    ({"type": "TEXT"}, "SD100"),
    ({"url": "MAYBE"}, "SD100"),
    ({"methods": "PATCH"}, "SD100"),
    ({"session": "sometimes"}, "SD100"),
    ({"user_name": "no_such_role_anywhere"}, "SD100"),
    ({"statement": "  "}, "SD100"),
])
def test_create_service_rejects_bad_attributes(svcconn: psycopg.Connection, args: dict, sqlstate: str) -> None:
    full = {"name": unique(), "type": "RAW", "statement": "SELECT 1", **args}
    placeholders = ", ".join(f'"{k}" => %s' for k in full)
    with pytest.raises(psycopg.Error) as info:
        svcconn.execute(f"SELECT sessdb.create_service({placeholders})", list(full.values()))
    assert info.value.sqlstate == sqlstate


def test_alter_keeps_what_it_does_not_name(svcconn: psycopg.Connection, services: ServiceMaker) -> None:
    name = unique()
    svcconn.execute("SELECT sessdb.create_service(name => %s, type => 'XML', statement => 'SELECT 1', url => 'ON',"
                    " methods => 'GET,PUT')", [name])
    services.created.add(name)
    svcconn.execute("SELECT sessdb.alter_service(name => %s, statement => 'SELECT 2')", [name])
    service = catalog_row(svcconn, name)
    assert service is not None
    assert (service.type, service.statement, service.url, service.methods) == ("XML", "SELECT 2", "ON", ("GET", "PUT"))


def test_alter_and_drop_unknown_service_raise(svcconn: psycopg.Connection) -> None:
    for call in ("SELECT sessdb.alter_service(name => %s, statement => 'SELECT 1')", "SELECT sessdb.drop_service(%s)"):
        with pytest.raises(psycopg.Error) as info:
            svcconn.execute(call, [unique()])
        assert info.value.sqlstate == "SD102"


# --- pickup without restart ---------------------------------------------------------------------


async def test_created_altered_dropped_are_served_within_a_second(client, services: ServiceMaker,
                                                                   svcconn: psycopg.Connection) -> None:
    name = unique()
    url = f"/{name}"
    assert (await client.get(url)).status == 404
    started = time.monotonic()
    svcconn.execute("SELECT sessdb.create_service(name => %s, type => 'RAW', statement => 'SELECT ''v1''')", [name])
    services.created.add(name)
    await services.sync(client, name)
    assert time.monotonic() - started < PICKUP_SECONDS
    assert await (await client.get(url)).text() == "v1"

    started = time.monotonic()
    svcconn.execute("SELECT sessdb.alter_service(name => %s, statement => 'SELECT ''v2''')", [name])
    await services.sync(client, name)
    assert time.monotonic() - started < PICKUP_SECONDS
    assert await (await client.get(url)).text() == "v2"

    started = time.monotonic()
    svcconn.execute("SELECT sessdb.drop_service(%s)", [name])
    await services.sync(client, name)
    assert time.monotonic() - started < PICKUP_SECONDS
    assert (await client.get(url)).status == 404


async def test_change_in_an_uncommitted_transaction_is_not_served(client, services: ServiceMaker, dsn: str) -> None:
    name = unique()
    services.created.add(name)
    with psycopg.connect(dsn) as conn:  # one open transaction
        conn.execute("SELECT sessdb.create_service(name => %s, type => 'RAW', statement => 'SELECT 1')", [name])
        assert (await client.get(f"/{name}")).status == 404
        conn.commit()
    await services.sync(client, name)
    assert (await client.get(f"/{name}")).status == 200


async def test_two_engines_both_pick_up_a_change(make_client, services: ServiceMaker) -> None:
    first, second = await make_client(), await make_client()
    name = await services.create(first, "RAW", "SELECT 'both'")
    await services.sync(second, name)
    for client in (first, second):
        assert await (await client.get(f"/{name}")).text() == "both"


# --- the SQL Anywhere statements through `sessdb sql` -------------------------------------------


def _cli_sql(dsn: str, *args: str, stdin: str | None = None):  # type: ignore[no-untyped-def]
    return run_cli("sql", *args, env={"SESSDB_DSN": dsn}, stdin=stdin, timeout=60)


async def test_sa_create_alter_drop_service_via_cli(client, dsn: str, services: ServiceMaker,
                                                    svcconn: psycopg.Connection) -> None:
    name = unique()
    services.created.add(name)
    svcconn.execute("DO $$ BEGIN CREATE ROLE web_app_user; EXCEPTION WHEN duplicate_object THEN NULL; END $$")
    svcconn.execute("GRANT USAGE ON SCHEMA sessdb TO web_app_user")
    script = (
        f'CREATE SERVICE "{name}" TYPE \'JSON\' URL OFF AUTHORIZATION OFF USER web_app_user '
        "AS SELECT :who AS greeting, current_user AS who_ran;\n"
    )
    result = _cli_sql(dsn, "-f", "-", stdin=script)
    assert result.returncode == 0, result.stderr
    await services.sync(client, name)
    resp = await client.get(f"/{name}?who=sa")
    assert resp.status == 200
    assert await resp.json() == [{"greeting": "sa", "who_ran": "web_app_user"}]

    result = _cli_sql(dsn, f"ALTER SERVICE \"{name}\" TYPE 'RAW' URL ON METHODS 'GET,PUT' AS SELECT :url")
    assert result.returncode == 0, result.stderr
    await services.sync(client, name)
    resp = await client.put(f"/{name}/x/y")
    assert (resp.status, await resp.text()) == (200, "x/y")

    result = _cli_sql(dsn, f'DROP SERVICE "{name}"')
    assert result.returncode == 0, result.stderr
    await services.sync(client, name)
    assert (await client.get(f"/{name}/x")).status == 404


def test_sa_create_or_replace_and_plain_sql_in_one_script(dsn: str, services: ServiceMaker,
                                                         svcconn: psycopg.Connection) -> None:
    name = unique()
    services.created.add(name)
    script = (
        f"CREATE SERVICE \"{name}\" TYPE 'RAW' AUTHORIZATION OFF AS SELECT 1;\n"
        f"CREATE OR REPLACE SERVICE \"{name}\" TYPE 'HTML' URL ELEMENTS DISABLE AS SELECT 'a;b';\n"
        "SELECT 40 + 2 AS answer;\n"
    )
    result = _cli_sql(dsn, "-f", "-", stdin=script)
    assert result.returncode == 0, result.stderr
    assert "answer" in result.stdout and "42" in result.stdout
    service = catalog_row(svcconn, name)
    assert service is not None
    assert (service.type, service.url, service.enabled, service.statement) == ("HTML", "ELEMENTS", False, "SELECT 'a;b'")


def test_sa_create_service_error_exits_1_with_sqlstate(dsn: str) -> None:
    result = _cli_sql(dsn, "CREATE SERVICE \"bad//name\" TYPE 'RAW' AS SELECT 1")
    assert result.returncode == 1
    assert "SD100" in result.stderr


# --- routing ------------------------------------------------------------------------------------


async def test_exact_name_and_url_off_refuses_deeper_paths(client, services: ServiceMaker) -> None:
    name = await services.create(client, "RAW", "SELECT 'exact'")
    assert await (await client.get(f"/{name}")).text() == "exact"
    assert await (await client.get(f"/{name}/")).text() == "exact"
    assert (await client.get(f"/{name}/extra")).status == 404


async def test_scenario_35_url_on(client, services: ServiceMaker) -> None:
    name = await services.create(client, "RAW", "SELECT coalesce(:url, '<null>')", url="ON")
    assert await (await client.get(f"/{name}/a/b")).text() == "a/b"
    assert await (await client.get(f"/{name}")).text() == ""
    assert await (await client.get(f"/{name}/a%20b/c?x=1")).text() == "a b/c"


async def test_scenario_36_url_elements(client, services: ServiceMaker) -> None:
    statement = "SELECT concat_ws(',', " + ", ".join(f"coalesce(:url{i}, 'NULL')" for i in range(1, 11)) + ")"
    name = await services.create(client, "RAW", statement, url="ELEMENTS")
    assert await (await client.get(f"/{name}/a/b")).text() == "a,b," + ",".join(["NULL"] * 8)
    ten = "/".join(str(i) for i in range(1, 11))
    assert await (await client.get(f"/{name}/{ten}")).text() == ",".join(str(i) for i in range(1, 11))
    assert (await client.get(f"/{name}/{ten}/11")).status == 404


async def test_scenario_36_url_elements_are_http_variables(client, services: ServiceMaker) -> None:
    name = await services.create(client, "RAW", "SELECT http_variable('url2') || '|' || coalesce(http_variable('url3'), 'NULL')",
                                 url="ELEMENTS")
    assert await (await client.get(f"/{name}/a/b")).text() == "b|NULL"


async def test_scenario_37_url_off_and_root(client, services: ServiceMaker) -> None:
    name = await services.create(client, "RAW", "SELECT 'svc'")
    assert (await client.get(f"/{name}/extra")).status == 404
    await services.create(client, "RAW", "SELECT 'root:' || coalesce(:url, '')", name="root", url="ON")
    try:
        resp = await client.get(f"/{name}/extra")
        assert (resp.status, await resp.text()) == (200, f"root:{name}/extra")
        assert await (await client.get(f"/{name}")).text() == "svc"
        assert (await (await client.get("/")).text()) == "root:"
    finally:
        await services.drop(client, "root")
    assert (await client.get(f"/{name}/extra")).status == 404


async def test_scenario_38_longest_prefix(client, services: ServiceMaker) -> None:
    base = unique()
    await services.create(client, "RAW", "SELECT 'alice:' || :url", name=base, url="ON")
    await services.create(client, "RAW", "SELECT 'files:' || :url", name=f"{base}/files", url="ON")
    assert await (await client.get(f"/{base}/files/x")).text() == "files:x"
    assert await (await client.get(f"/{base}/other/x")).text() == "alice:other/x"
    assert await (await client.get(f"/{base}/filesx")).text() == "alice:filesx"


async def test_prefix_with_url_off_falls_back_to_shorter_prefix(client, services: ServiceMaker) -> None:
    base = unique()
    await services.create(client, "RAW", "SELECT 'outer:' || :url", name=base, url="ON")
    await services.create(client, "RAW", "SELECT 'inner'", name=f"{base}/in")
    assert await (await client.get(f"/{base}/in")).text() == "inner"
    assert await (await client.get(f"/{base}/in/deeper")).text() == "outer:in/deeper"


async def test_database_name_prefix_is_accepted(client, services: ServiceMaker, svcconn: psycopg.Connection) -> None:
    name = await services.create(client, "RAW", "SELECT 'via db'")
    dbname = svcconn.execute("SELECT current_database()").fetchone()[0]  # type: ignore[index]
    assert await (await client.get(f"/{dbname}/{name}")).text() == "via db"


async def test_scenario_39_disabled_and_dropped_are_404(client, services: ServiceMaker) -> None:
    name = await services.create(client, "RAW", "SELECT 'on'")
    assert (await client.get(f"/{name}")).status == 200
    await services.alter(client, name, enabled=False)
    assert (await client.get(f"/{name}")).status == 404
    await services.alter(client, name, enabled=True)
    assert (await client.get(f"/{name}")).status == 200
    await services.drop(client, name)
    assert (await client.get(f"/{name}")).status == 404


async def test_disabled_prefix_service_is_404_not_root(client, services: ServiceMaker) -> None:
    name = await services.create(client, "RAW", "SELECT 1", url="ON", enabled=False)
    assert (await client.get(f"/{name}/x")).status == 404


async def test_unknown_service_is_404(client) -> None:
    resp = await client.get(f"/{unique()}")
    assert resp.status == 404


async def test_405_with_allow_for_a_method_not_taken(client, services: ServiceMaker) -> None:
    name = await services.create(client, "RAW", "SELECT 1", methods="GET,POST")
    resp = await client.delete(f"/{name}")
    assert resp.status == 405
    assert resp.headers["Allow"] == "GET, POST"
    assert (await client.put(f"/{name}")).status == 405
    assert (await client.post(f"/{name}")).status == 200


async def test_methods_star_is_get_head_post(client, services: ServiceMaker) -> None:
    name = await services.create(client, "RAW", "SELECT 'x'")
    assert (await client.head(f"/{name}")).status == 200
    assert (await client.get(f"/{name}")).status == 200
    assert (await client.post(f"/{name}")).status == 200
    assert (await client.put(f"/{name}")).status == 405


async def test_put_and_delete_when_listed(client, services: ServiceMaker) -> None:
    name = await services.create(client, "RAW", "SELECT http_header('@HttpMethod')", methods="PUT,DELETE")
    assert await (await client.put(f"/{name}")).text() == "PUT"
    assert await (await client.delete(f"/{name}")).text() == "DELETE"
    assert (await client.get(f"/{name}")).status == 405


async def test_methods_none_disables_every_method(client, services: ServiceMaker) -> None:
    name = await services.create(client, "RAW", "SELECT 1", methods="NONE")
    assert (await client.get(f"/{name}")).status == 405


@pytest.mark.parametrize("method", ["PATCH", "BREW", "PROPFIND"])
async def test_501_for_an_unknown_method(client, services: ServiceMaker, method: str) -> None:
    name = await services.create(client, "RAW", "SELECT 1")
    assert (await client.request(method, f"/{name}")).status == 501
    assert (await client.request(method, f"/{unique()}")).status == 501


# --- HTTP variables -----------------------------------------------------------------------------


async def test_query_variables_and_percent_decoding(client, services: ServiceMaker) -> None:
    name = await services.create(client, "JSON", "SELECT :a AS a, :b AS b, :missing AS missing")
    resp = await client.get(f"/{name}?a=1%2B1%3D2&b=caf%C3%A9+au+lait")
    assert await resp.json() == [{"a": "1+1=2", "b": "café au lait", "missing": None}]


async def test_urlencoded_form_variables(client, services: ServiceMaker) -> None:
    name = await services.create(client, "JSON", "SELECT :q AS q, :f AS f, :g AS g")
    resp = await client.post(f"/{name}?q=query", data={"f": "form value", "g": "ü&="})
    assert await resp.json() == [{"q": "query", "f": "form value", "g": "ü&="}]


async def test_query_variable_comes_before_form_variable(client, services: ServiceMaker) -> None:
    name = await services.create(client, "JSON", "SELECT :v AS v, http_variable('v', 2) AS second")
    resp = await client.post(f"/{name}?v=from-query", data={"v": "from-form"})
    assert await resp.json() == [{"v": "from-query", "second": "from-form"}]


async def test_multipart_variables_with_part_headers(client, services: ServiceMaker) -> None:
    name = await services.create(client, "JSON", """
        SELECT :title AS title,
               http_variable('upload') AS upload,
               http_variable('upload', 1, 'Content-Type') AS upload_type,
               http_variable('upload', NULL, 'Content-Disposition') AS disposition,
               http_variable('title', 1, 'Content-Type') AS title_type
    """)
    form = aiohttp.FormData()
    form.add_field("title", "Ünïcode title")
    form.add_field("upload", b"file <content>", filename="notes.txt", content_type="text/x-notes")
    resp = await client.post(f"/{name}", data=form)
    assert resp.status == 200, await resp.text()
    (row,) = await resp.json()
    assert row["title"] == "Ünïcode title"
    assert row["upload"] == "file <content>"
    assert row["upload_type"] == "text/x-notes"
    assert 'name="upload"' in row["disposition"] and 'filename="notes.txt"' in row["disposition"]
    assert row["title_type"] is None or row["title_type"].startswith("text/plain")


async def test_repeated_names_and_instances(client, services: ServiceMaker) -> None:
    name = await services.create(client, "JSON", """
        SELECT :x AS first_by_placeholder, http_variable('x') AS first, http_variable('x', 1) AS one,
               http_variable('x', 2) AS two, http_variable('x', 3) AS three, http_variable('x', 4) AS four
    """)
    resp = await client.get(f"/{name}?x=a&y=0&x=b&x=c")
    assert await resp.json() == [{"first_by_placeholder": "a", "first": "a", "one": "a", "two": "b",
                                  "three": "c", "four": None}]


async def test_next_http_variable_iterates_every_name_once(client, services: ServiceMaker) -> None:
    statement = """
        WITH RECURSIVE names(n, depth) AS (
            SELECT next_http_variable(NULL), 1
            UNION ALL SELECT next_http_variable(n), depth + 1 FROM names WHERE n IS NOT NULL AND depth < 50
        )
        SELECT coalesce(string_agg(n, ',' ORDER BY depth), '') FROM names WHERE n IS NOT NULL
    """
    name = await services.create(client, "RAW", statement, url="ELEMENTS")
    text = await (await client.post(f"/{name}/p/q?a=1&b=2&a=3", data={"c": "4"})).text()
    assert sorted(text.split(",")) == ["a", "b", "c", "url1", "url2"]
    assert await (await client.get(f"/{name}")).text() == ""


async def test_variable_name_case_exact_first_then_any(client, services: ServiceMaker) -> None:
    name = await services.create(client, "JSON", "SELECT :Name AS exact, http_variable('NAME') AS folded")
    resp = await client.get(f"/{name}?name=lower&Name=Exact")
    assert await resp.json() == [{"exact": "Exact", "folded": "lower"}]


async def test_binary_variable_attribute(client, services: ServiceMaker) -> None:
    name = await services.create(client, "JSON", "SELECT http_variable('b', NULL, '@BINARY') AS b, "
                                                 "http_variable('t', NULL, '@TRANSPORT') AS t")
    resp = await client.get(f"/{name}?b=%FF%00&t=a%20b")
    (row,) = await resp.json()
    assert row["b"] == "\\xff00"
    assert row["t"] == "a%20b"


# --- placeholders are parameters -----------------------------------------------------------------

INJECTIONS = ["'; DROP TABLE {t}; --", "1); DELETE FROM {t}; --", "$1", ":x", "\\'; SELECT 1; --", "$$; DROP TABLE {t}; $$"]


@pytest.mark.parametrize("attack", INJECTIONS)
async def test_placeholder_values_are_data(client, services: ServiceMaker, table: str,
                                           svcconn: psycopg.Connection, attack: str) -> None:
    value = attack.format(t=table)
    svcconn.execute(f"INSERT INTO {table} (v) VALUES ('keep')")
    name = await services.create(client, "JSON",
                                 f"INSERT INTO {table} (v) VALUES (:v) RETURNING v, ':v' AS literal, /* :v */ 1 AS n")
    resp = await client.post(f"/{name}", data={"v": value})
    assert resp.status == 200, await resp.text()
    assert await resp.json() == [{"v": value, "literal": ":v", "n": 1}]
    rows = svcconn.execute(f"SELECT v FROM {table} ORDER BY id").fetchall()
    assert rows == [("keep",), (value,)]


async def test_placeholders_not_in_literals_idents_comments_casts(client, services: ServiceMaker) -> None:
    statement = """SELECT ':a' AS "lit:a", $$:a$$ AS dollar, :a::int + 1 AS cast, -- :a
                   /* :a */ E'\\':a' AS escaped, :b AS plain"""
    name = await services.create(client, "JSON", statement)
    resp = await client.get(f"/{name}?a=41&b=x")
    assert await resp.json() == [{"lit:a": ":a", "dollar": ":a", "cast": 42, "escaped": "':a", "plain": "x"}]


async def test_placeholders_are_bound_as_text(client, services: ServiceMaker) -> None:
    name = await services.create(client, "JSON", "SELECT :a AS plain, :a::int AS n")
    assert await (await client.get(f"/{name}?a=41")).json() == [{"plain": "41", "n": 41}]


async def test_missing_variables_bind_null(client, services: ServiceMaker) -> None:
    name = await services.create(client, "JSON", "SELECT :nothing AS v, coalesce(:nothing, 'absent') AS w")
    assert await (await client.get(f"/{name}")).json() == [{"v": None, "w": "absent"}]


async def test_placeholder_in_is_null_test(client, services: ServiceMaker) -> None:
    name = await services.create(client, "JSON", "SELECT :v IS NULL AS absent, pg_typeof(:v)::text AS type")
    assert await (await client.get(f"/{name}")).json() == [{"absent": True, "type": "text"}]


async def test_broken_statement_answers_500(client, services: ServiceMaker) -> None:
    name = await services.create(client, "JSON", "SELECT 'unterminated")
    resp = await client.get(f"/{name}")
    assert resp.status == 500


# --- one transaction per request ----------------------------------------------------------------


async def test_commit_on_success(client, services: ServiceMaker, table: str, svcconn: psycopg.Connection) -> None:
    name = await services.create(client, "RAW", f"INSERT INTO {table} (v) VALUES (:v) RETURNING 'ok'")
    assert (await client.post(f"/{name}", data={"v": "saved"})).status == 200
    assert svcconn.execute(f"SELECT v FROM {table}").fetchall() == [("saved",)]


async def test_rollback_on_error(client, services: ServiceMaker, table: str, svcconn: psycopg.Connection) -> None:
    # the insert runs, then the statement fails: nothing of it may stay
    svcconn.execute(f"""CREATE FUNCTION public.{table}_fail(v text) RETURNS text LANGUAGE plpgsql AS $$
        BEGIN INSERT INTO public.{table} (v) VALUES (v); RETURN 1 / 0; END $$""")
    try:
        name = await services.create(client, "RAW", f"SELECT public.{table}_fail(:v)")
        resp = await client.post(f"/{name}", data={"v": "lost"})
        assert resp.status == 500
        assert "22012" in await resp.text()
        assert svcconn.execute(f"SELECT count(*) FROM {table}").fetchone() == (0,)
    finally:
        svcconn.execute(f"DROP FUNCTION public.{table}_fail(text)")


async def test_after_an_error_the_next_request_works(client, services: ServiceMaker) -> None:
    failing = await services.create(client, "RAW", "SELECT 1/0")
    ok = await services.create(client, "RAW", "SELECT 'fine'")
    for _ in range(6):  # more than the pool size: every connection went through a failure
        assert (await client.get(f"/{failing}")).status == 500
    for _ in range(6):
        resp = await client.get(f"/{ok}")
        assert (resp.status, await resp.text()) == (200, "fine")


async def test_statement_that_commits_itself_is_refused(client, services: ServiceMaker) -> None:
    name = await services.create(client, "RAW", "COMMIT")
    resp = await client.get(f"/{name}")
    assert resp.status in (200, 500)  # whatever PostgreSQL says, the engine keeps serving
    ok = await services.create(client, "RAW", "SELECT 'still fine'")
    assert await (await client.get(f"/{ok}")).text() == "still fine"


async def test_concurrent_requests_share_the_pool(make_client, services: ServiceMaker) -> None:
    client = await make_client(pool_size=8)
    name = await services.create(client, "RAW", "SELECT :n")
    results = await asyncio.gather(*(client.get(f"/{name}?n={i}") for i in range(24)))
    assert [await r.text() for r in results] == [str(i) for i in range(24)]
    assert len(engine_of(client).pool.backends) == 8


async def test_a_pooled_connection_serves_many_requests(make_client, services: ServiceMaker) -> None:
    client = await make_client(pool_size=1)
    name = await services.create(client, "RAW", "SELECT :n")
    for i in range(12):
        resp = await client.get(f"/{name}?n={i}")
        assert (resp.status, await resp.text()) == (200, str(i))


async def test_wait_catalog_helper_times_out(client) -> None:
    with pytest.raises(TimeoutError):
        await wait_catalog(client, lambda services: False, timeout=0.05)


def test_alter_service_user_null_clears_it_and_left_out_keeps_it(svcconn, dsn: str) -> None:  # type: ignore[no-untyped-def]
    from tests.fix_server import run_cli

    svcconn.execute("SELECT sessdb.create_service(name => 'alt_user', type => 'RAW', statement => 'SELECT 1', "
                    "user_name => 'postgres', group_name => 'g', replace => true)")
    svcconn.execute("SELECT sessdb.alter_service(name => 'alt_user', statement => 'SELECT 2')")
    row = svcconn.execute("SELECT user_name, group_name FROM sessdb.services WHERE name = 'alt_user'").fetchone()
    assert row == ("postgres", "g"), "arguments left out stay as they are"
    proc = run_cli("sql", "--dsn", dsn, "ALTER SERVICE alt_user USER NULL")
    assert proc.returncode == 0, proc.stderr
    row = svcconn.execute("SELECT user_name, group_name FROM sessdb.services WHERE name = 'alt_user'").fetchone()
    assert row == (None, "g")
    svcconn.execute("SELECT sessdb.drop_service('alt_user')")


async def test_a_middleware_added_to_the_application_applies_to_services(dsn: str, services: ServiceMaker) -> None:
    # service requests skip aiohttp's router when the application has only sessdb's own
    # middleware; an embedding application that adds one gets it on every request
    @web.middleware
    async def stamp(request: web.Request, handler):  # type: ignore[no-untyped-def]
        response = await handler(request)
        response.headers["X-Stamped"] = "yes"
        return response

    app = make_app(app_settings(dsn), dsn)
    app.middlewares.append(stamp)
    client = TestClient(SessdbTestServer(app, host="127.0.0.1"))
    await client.start_server()
    try:
        name = await services.create(client, "RAW", "SELECT 'served'")
        resp = await client.get(f"/{name}")
        assert await resp.text() == "served"
        assert resp.headers.get("X-Stamped") == "yes"
    finally:
        await client.close()
