"""The request and response functions of contract section 4, and PostgREST's request context.

Each test mounts a service whose statement calls the functions, then looks at the HTTP
response (scenarios 40 and 41 among them).
"""

from __future__ import annotations

import json

import psycopg
import pytest

from tests.web_helpers import ServiceMaker, raw_http, services, status_of  # noqa: F401  (fixtures)

# --- request functions ----------------------------------------------------------------------------


async def test_http_header_is_case_insensitive(client, services: ServiceMaker) -> None:
    name = await services.create(client, "JSON", "SELECT http_header('x-custom') AS a, http_header('X-CUSTOM') AS b, "
                                                 "http_header('absent') AS c")
    resp = await client.get(f"/{name}", headers={"X-Custom": "héllo <b>"})
    assert await resp.json() == [{"a": "héllo <b>", "b": "héllo <b>", "c": None}]


async def test_pseudo_headers(client, services: ServiceMaker) -> None:
    name = await services.create(client, "JSON", """
        SELECT http_header('@HttpMethod') AS method, http_header('@HttpURI') AS uri,
               http_header('@HttpVersion') AS version, http_header('@HttpQueryString') AS query,
               http_header('@httpmethod') AS lower_case
    """, url="ON")
    resp = await client.post(f"/{name}/sub%20path?a=1&b=%C3%A9")
    assert await resp.json() == [{"method": "POST", "uri": f"/{name}/sub%20path?a=1&b=%C3%A9", "version": "HTTP/1.1",
                                  "query": "a=1&b=%C3%A9", "lower_case": "POST"}]


async def test_query_string_pseudo_header_absent_without_query(client, services: ServiceMaker) -> None:
    name = await services.create(client, "JSON", "SELECT http_header('@HttpQueryString') AS q")
    assert await (await client.get(f"/{name}")).json() == [{"q": None}]


async def test_http_version_of_an_http_1_0_request(client, services: ServiceMaker) -> None:
    name = await services.create(client, "RAW", "SELECT http_header('@HttpVersion')")
    response = await raw_http(client, f"GET /{name} HTTP/1.0\r\nHost: x\r\n\r\n".encode())
    assert status_of(response) == 200
    assert response.endswith(b"HTTP/1.0")


async def test_next_http_header_iterates_pseudo_and_real_headers(client, services: ServiceMaker) -> None:
    name = await services.create(client, "RAW", """
        WITH RECURSIVE h(n, depth) AS (
            SELECT next_http_header(NULL), 1
            UNION ALL SELECT next_http_header(n), depth + 1 FROM h WHERE n IS NOT NULL AND depth < 100
        )
        SELECT string_agg(n, '|' ORDER BY depth) FROM h WHERE n IS NOT NULL
    """)
    resp = await client.get(f"/{name}?q=1", headers={"X-One": "1", "X-Two": "2"})
    names = (await resp.text()).split("|")
    assert names[:4] == ["@HttpMethod", "@HttpURI", "@HttpVersion", "@HttpQueryString"]
    lowered = [n.lower() for n in names]
    assert "x-one" in lowered and "x-two" in lowered and "host" in lowered
    assert len(lowered) == len(set(lowered))


async def test_http_body_and_bytes(client, services: ServiceMaker) -> None:
    name = await services.create(client, "JSON", "SELECT http_body() AS body, encode(http_body_bytes(), 'hex') AS hex, "
                                                 "octet_length(http_body_bytes()) AS n", methods="POST,PUT")
    resp = await client.put(f"/{name}", data="{\"a\": \"ü\"}".encode(), headers={"Content-Type": "application/json"})
    assert await resp.json() == [{"body": "{\"a\": \"ü\"}", "hex": "7b2261223a2022c3bc227d", "n": 11}]


async def test_http_body_bytes_keeps_binary_exactly(client, services: ServiceMaker) -> None:
    name = await services.create(client, "RAW", "SELECT http_body_bytes()", methods="POST")
    payload = bytes(range(256))
    resp = await client.post(f"/{name}", data=payload, headers={"Content-Type": "application/octet-stream"})
    assert resp.status == 200
    assert await resp.read() == payload


async def test_http_body_is_null_without_a_body(client, services: ServiceMaker) -> None:
    name = await services.create(client, "JSON", "SELECT http_body() AS b, http_body_bytes() AS bb")
    assert await (await client.get(f"/{name}")).json() == [{"b": None, "bb": None}]


def test_request_functions_outside_a_request_return_null(svcconn: psycopg.Connection) -> None:
    row = svcconn.execute("SELECT sessdb.http_variable('a'), sessdb.next_http_variable(NULL), sessdb.http_header('Host'),"
                          " sessdb.next_http_header(NULL), sessdb.http_body(), sessdb.http_body_bytes(),"
                          " sessdb.http_response_header('Content-Type')").fetchone()
    assert row == (None,) * 7


# --- response functions ----------------------------------------------------------------------------


async def test_sa_set_http_header_sets_and_overwrites(client, services: ServiceMaker) -> None:
    # RAW sends column 1 of every row: the calls go in a subquery
    name = await services.create(client, "RAW", """
        SELECT '<p>hi</p>' FROM (SELECT sa_set_http_header('X-Out', 'one'), sa_set_http_header('x-out', 'two'),
               sa_set_http_header('Content-Type', 'text/html; charset=utf-8')) s
    """)
    resp = await client.get(f"/{name}")
    assert resp.status == 200
    assert resp.headers.getall("X-Out") == ["two"]
    assert resp.headers["Content-Type"] == "text/html; charset=utf-8"
    assert await resp.text() == "<p>hi</p>"


@pytest.mark.parametrize(("value", "status", "reason"), [("418", 418, "I'm a Teapot"), ("418:Teapot", 418, "Teapot"),
                                                          ("404", 404, "Not Found"), ("299:Fine", 299, "Fine")])
async def test_scenario_40_status_override(client, services: ServiceMaker, value: str, status: int,
                                           reason: str) -> None:
    name = await services.create(client, "RAW", "SELECT 'body' FROM (SELECT sa_set_http_header('@HttpStatus', :s)) x")
    resp = await client.get(f"/{name}", params={"s": value})
    assert resp.status == status
    assert resp.reason.lower() == reason.lower()
    assert await resp.text() == "body"


@pytest.mark.parametrize("value", ["99", "abc", "1000", "4040", "", "099", "418 Teapot"])
async def test_scenario_40_invalid_status_raises(client, services: ServiceMaker, value: str) -> None:
    name = await services.create(client, "JSON", "SELECT 'body' AS b FROM (SELECT sa_set_http_header('@HttpStatus', :s)) x")
    resp = await client.get(f"/{name}", params={"s": value})
    assert resp.status == 500
    body = await resp.json()
    assert body["code"] == "SD100"
    assert "invalid HTTP status" in body["message"]


async def test_scenario_40_status_with_sql_error_keeps_the_chosen_status(client, services: ServiceMaker) -> None:
    name = await services.create(client, "JSON", "SELECT 1 / (count(*) - count(*)) AS boom FROM (SELECT sa_set_http_header('@HttpStatus', '409')) s")
    resp = await client.get(f"/{name}")
    assert resp.status == 409


async def test_scenario_41_header_removal(client, services: ServiceMaker) -> None:
    name = await services.create(client, "RAW", """
        SELECT 'x' FROM (SELECT sa_set_http_header('Expires', 'Thu, 01 Jan 1970 00:00:00 GMT'),
                                sa_set_http_header('Expires', NULL),
                                sa_set_http_header('X-Keep', 'kept')) s
    """)
    resp = await client.get(f"/{name}")
    assert resp.status == 200
    assert "Expires" not in resp.headers
    assert resp.headers["X-Keep"] == "kept"


async def test_removing_content_type_falls_back_to_the_type_default(client, services: ServiceMaker) -> None:
    name = await services.create(client, "XML", "SELECT 1 AS a FROM (SELECT sa_set_http_header('Content-Type', NULL)) s")
    resp = await client.get(f"/{name}")
    assert resp.headers["Content-Type"] == "text/xml; charset=utf-8"


@pytest.mark.parametrize(("header", "value"), [("Bad Name", "v"), ("X-Ok", "line\r\nInjected: yes"), (None, "v")])
async def test_sa_set_http_header_refuses_header_injection(client, services: ServiceMaker, header, value) -> None:
    name = await services.create(client, "JSON", "SELECT 1 AS a FROM (SELECT sa_set_http_header(:h, :v)) s")
    params = {"v": value} if header is None else {"h": header, "v": value}
    resp = await client.get(f"/{name}", params=params)
    assert resp.status == 500
    assert "Injected" not in resp.headers
    assert (await resp.json())["code"] == "SD100"


async def test_http_response_header_sees_defaults_and_changes(client, services: ServiceMaker) -> None:
    name = await services.create(client, "JSON", """
        SELECT http_response_header('content-type') AS before,
               (SELECT http_response_header('X-New') FROM (SELECT sa_set_http_header('X-New', 'v')) s) AS after
    """)
    resp = await client.get(f"/{name}")
    assert await resp.json() == [{"before": "application/json; charset=utf-8", "after": "v"}]


async def test_next_http_response_header_iterates(client, services: ServiceMaker) -> None:
    name = await services.create(client, "RAW", """
        WITH setup AS MATERIALIZED (SELECT sa_set_http_header('X-A', '1'), sa_set_http_header('X-B', '2')),
        names AS (
            SELECT next_http_response_header(NULL) AS a FROM setup
        )
        SELECT concat_ws('|', a, next_http_response_header(a), next_http_response_header(next_http_response_header(a)),
                         coalesce(next_http_response_header('X-B'), 'END'))
        FROM names
    """)
    assert await (await client.get(f"/{name}")).text() == "Content-Type|X-A|X-B|END"


# --- sa_set_http_option --------------------------------------------------------------------------


@pytest.mark.parametrize(("option", "value"), [("CharsetConversion", "ON"), ("charsetconversion", "off"),
                                               ("AcceptCharset", "utf-8, iso-8859-1;q=0.5"), ("AcceptCharset", "+,*")])
async def test_sa_set_http_option_accepts_valid_values(client, services: ServiceMaker, option: str, value: str) -> None:
    name = await services.create(client, "RAW", "SELECT 'ok' FROM (SELECT sa_set_http_option(:o, :v)) s")
    resp = await client.get(f"/{name}", params={"o": option, "v": value})
    assert (resp.status, await resp.text()) == (200, "ok")


@pytest.mark.parametrize(("option", "value"), [("NoSuchOption", "x"), ("CharsetConversion", "maybe"),
                                               ("AcceptCharset", "utf-8;;q"), ("AcceptCharset", None)])
async def test_sa_set_http_option_sd939(client, services: ServiceMaker, option: str, value: str | None) -> None:
    name = await services.create(client, "JSON", "SELECT 1 AS a FROM (SELECT sa_set_http_option(:o, :v)) s")
    params = {"o": option} if value is None else {"o": option, "v": value}
    resp = await client.get(f"/{name}", params=params)
    assert resp.status == 500
    assert (await resp.json())["code"] == "SD939"


def test_sa_set_http_option_sd939_outside_a_request(svcconn: psycopg.Connection) -> None:
    with pytest.raises(psycopg.Error) as info:
        svcconn.execute("SELECT sessdb.sa_set_http_option('Bogus', 'x')")
    assert info.value.sqlstate == "SD939"


# --- PostgREST's request context -------------------------------------------------------------------


async def test_postgrest_request_settings(client, services: ServiceMaker) -> None:
    name = await services.create(client, "JSON", """
        SELECT current_setting('request.method') AS method, current_setting('request.path') AS path,
               current_setting('request.headers')::json ->> 'x-token' AS token,
               current_setting('request.cookies')::json ->> 'flavour' AS cookie
    """, url="ON")
    resp = await client.post(f"/{name}/deep", headers={"X-Token": "t0k", "Cookie": "flavour=mint; other=1"})
    assert await resp.json() == [{"method": "POST", "path": f"/{name}/deep", "token": "t0k", "cookie": "mint"}]


async def test_postgrest_settings_are_transaction_local(client, services: ServiceMaker) -> None:
    name = await services.create(client, "JSON", "SELECT current_setting('request.method', true) AS m")
    assert await (await client.get(f"/{name}")).json() == [{"m": "GET"}]


async def test_postgrest_response_headers_and_status(client, services: ServiceMaker) -> None:
    name = await services.create(client, "RAW", """
        SELECT 'made' FROM (SELECT set_config('response.headers', '[{"Location": "/things/1"}, {"X-Extra": "yes"}]', true),
                                   set_config('response.status', '201', true)) s
    """)
    resp = await client.post(f"/{name}")
    assert resp.status == 201
    assert resp.headers["Location"] == "/things/1"
    assert resp.headers["X-Extra"] == "yes"
    assert await resp.text() == "made"


async def test_postgrest_invalid_response_settings_are_ignored(client, services: ServiceMaker) -> None:
    name = await services.create(client, "RAW", """
        SELECT 'ok' FROM (SELECT set_config('response.headers', 'not json', true),
                                 set_config('response.status', 'teapot', true)) s
    """)
    resp = await client.get(f"/{name}")
    assert (resp.status, await resp.text()) == (200, "ok")


async def test_postgrest_settings_from_a_function(client, services: ServiceMaker, svcconn: psycopg.Connection) -> None:
    # SQL written for PostgREST: a function that reads the request and shapes the response
    fn = f"pgrst_{services.conn.info.backend_pid}_fn"
    svcconn.execute(f"""CREATE OR REPLACE FUNCTION public.{fn}() RETURNS json LANGUAGE plpgsql AS $$
        BEGIN
            PERFORM set_config('response.status', '202', true);
            PERFORM set_config('response.headers', json_build_array(json_build_object('X-Method',
                                current_setting('request.method')))::text, true);
            RETURN json_build_object('cookies', current_setting('request.cookies')::json);
        END $$""")
    try:
        name = await services.create(client, "JSON", f"SELECT public.{fn}() AS r")
        resp = await client.get(f"/{name}", headers={"Cookie": "a=1"})
        assert resp.status == 202
        assert resp.headers["X-Method"] == "GET"
        assert json.loads(await resp.text()) == [{"r": {"cookies": {"a": "1"}}}]
    finally:
        svcconn.execute(f"DROP FUNCTION public.{fn}()")


async def test_server_generated_headers_can_be_removed(client, svcconn) -> None:  # type: ignore[no-untyped-def]
    import asyncio

    from tests.fix_app import engine_of

    svcconn.execute("SELECT sessdb.create_service(name => 'nohdr', type => 'RAW', replace => true, statement => "
                    "'SELECT sa_set_http_header(''Server'', NULL)::text || sa_set_http_header(''Date'', NULL)::text')")
    while "nohdr" not in engine_of(client).catalog.services:
        await asyncio.sleep(0.01)
    resp = await client.get("/nohdr")
    assert resp.status == 200
    assert "Server" not in resp.headers and "Date" not in resp.headers


@pytest.mark.parametrize("value", ["100", "101", "199"])
async def test_interim_statuses_are_refused(client, svcconn, value: str) -> None:  # type: ignore[no-untyped-def]
    import psycopg

    with pytest.raises(psycopg.Error) as info:
        svcconn.execute("SELECT sessdb.sa_set_http_header('@HttpStatus', %s)", [value])
    assert info.value.sqlstate == "SD100"


async def test_httpstatus_in_any_letter_case(client, svcconn) -> None:  # type: ignore[no-untyped-def]
    import asyncio

    from tests.fix_app import engine_of

    svcconn.execute("SELECT sessdb.create_service(name => 'lcstatus', type => 'RAW', replace => true, statement => "
                    "'SELECT sa_set_http_header(''@httpstatus'', ''418'')::text')")
    while "lcstatus" not in engine_of(client).catalog.services:
        await asyncio.sleep(0.01)
    assert (await client.get("/lcstatus")).status == 418
