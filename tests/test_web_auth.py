"""HTTP Basic authorization against PostgreSQL roles, and services that run as a fixed USER.

Roles are created for the test with real passwords (the cluster uses SCRAM); a wrong password
must never run the statement, which a side-effect table proves.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator

import psycopg
import pytest

from tests.web_helpers import ServiceMaker, basic, services, table, unique  # noqa: F401  (fixtures)


@pytest.fixture
def roles(svcconn: psycopg.Connection) -> Iterator[dict[str, str]]:
    """Two login roles with passwords, a group the first belongs to, and a NOLOGIN role."""
    made = {"alice": unique("alice_"), "bob": unique("bob_"), "group": unique("grp_"), "nologin": unique("nolog_")}
    password = secrets.token_urlsafe(12)
    svcconn.execute(f"CREATE ROLE {made['group']} NOLOGIN")
    svcconn.execute(f"CREATE ROLE {made['alice']} LOGIN PASSWORD %s IN ROLE {made['group']}".replace("%s", f"'{password}'"))
    svcconn.execute(f"CREATE ROLE {made['bob']} LOGIN PASSWORD '{password}'")
    svcconn.execute(f"CREATE ROLE {made['nologin']} NOLOGIN PASSWORD '{password}'")
    for role in made.values():
        svcconn.execute(f"GRANT USAGE ON SCHEMA sessdb TO {role}")
    try:
        yield {**made, "password": password}
    finally:
        for role in ("alice", "bob", "nologin", "group"):
            svcconn.execute(f"DROP OWNED BY {made[role]}")
            svcconn.execute(f"DROP ROLE {made[role]}")


async def test_missing_credentials_401_with_www_authenticate(client, services: ServiceMaker, roles) -> None:
    name = await services.create(client, "JSON", "SELECT current_user AS u", authorization=True)
    resp = await client.get(f"/{name}")
    assert resp.status == 401
    assert resp.headers["WWW-Authenticate"].startswith("Basic realm=")


@pytest.mark.parametrize("header", ["Bearer abc", "Basic", "Basic bm9jb2xvbg==", "Digest x=1"])
async def test_unusable_credentials_401(client, services: ServiceMaker, roles, header: str) -> None:
    name = await services.create(client, "JSON", "SELECT current_user AS u", authorization=True)
    resp = await client.get(f"/{name}", headers={"Authorization": header})
    assert resp.status == 401
    assert "WWW-Authenticate" in resp.headers


async def test_right_password_runs_as_that_role(client, services: ServiceMaker, roles) -> None:
    name = await services.create(client, "JSON", "SELECT current_user AS u, session_user <> current_user AS switched",
                                 authorization=True)
    resp = await client.get(f"/{name}", headers=basic(roles["alice"], roles["password"]))
    assert resp.status == 200
    assert await resp.json() == [{"u": roles["alice"], "switched": True}]
    resp = await client.get(f"/{name}", headers=basic(roles["bob"], roles["password"]))
    assert await resp.json() == [{"u": roles["bob"], "switched": True}]


async def test_wrong_password_never_runs_anything(client, services: ServiceMaker, roles, table: str,
                                                  svcconn: psycopg.Connection) -> None:
    name = await services.create(client, "RAW", f"INSERT INTO public.{table} (v) VALUES (current_user) RETURNING v",
                                 authorization=True)
    for headers in (basic(roles["alice"], "wrong-" + roles["password"]), basic(unique("nobody_"), "x"),
                    basic(roles["nologin"], roles["password"])):
        resp = await client.post(f"/{name}", headers=headers)
        assert resp.status == 401
        assert "WWW-Authenticate" in resp.headers
    assert svcconn.execute(f"SELECT count(*) FROM {table}").fetchone() == (0,)
    resp = await client.post(f"/{name}", headers=basic(roles["alice"], roles["password"]))
    assert (resp.status, await resp.text()) == (200, roles["alice"])
    assert svcconn.execute(f"SELECT v FROM {table}").fetchall() == [(roles["alice"],)]


async def test_wrong_password_after_a_right_one_is_still_refused(client, services: ServiceMaker, roles) -> None:
    name = await services.create(client, "RAW", "SELECT current_user", authorization=True)
    assert (await client.get(f"/{name}", headers=basic(roles["alice"], roles["password"]))).status == 200
    assert (await client.get(f"/{name}", headers=basic(roles["alice"], "nope"))).status == 401


async def test_user_name_limits_who_may_call(client, services: ServiceMaker, roles, table: str,
                                             svcconn: psycopg.Connection) -> None:
    name = await services.create(client, "RAW", f"INSERT INTO public.{table} (v) VALUES (current_user) RETURNING v",
                                 authorization=True, user_name=roles["group"])
    resp = await client.post(f"/{name}", headers=basic(roles["bob"], roles["password"]))
    assert resp.status == 403
    assert svcconn.execute(f"SELECT count(*) FROM {table}").fetchone() == (0,)
    resp = await client.post(f"/{name}", headers=basic(roles["alice"], roles["password"]))  # a member of the group
    assert (resp.status, await resp.text()) == (200, roles["alice"])


async def test_user_name_matching_the_role_itself(client, services: ServiceMaker, roles) -> None:
    name = await services.create(client, "RAW", "SELECT current_user", authorization=True, user_name=roles["bob"])
    assert (await client.get(f"/{name}", headers=basic(roles["bob"], roles["password"]))).status == 200
    assert (await client.get(f"/{name}", headers=basic(roles["alice"], roles["password"]))).status == 403


async def test_wrong_password_with_user_name_is_401_not_403(client, services: ServiceMaker, roles) -> None:
    name = await services.create(client, "RAW", "SELECT 1", authorization=True, user_name=roles["group"])
    assert (await client.get(f"/{name}", headers=basic(roles["bob"], "wrong"))).status == 401


async def test_authorization_off_runs_as_user_name(client, services: ServiceMaker, roles) -> None:
    name = await services.create(client, "JSON", "SELECT current_user AS u", user_name=roles["bob"])
    resp = await client.get(f"/{name}")
    assert await resp.json() == [{"u": roles["bob"]}]


async def test_authorization_off_without_user_runs_as_the_engine(client, services: ServiceMaker, dsn: str) -> None:
    name = await services.create(client, "JSON", "SELECT current_user AS u")
    engine_role = psycopg.conninfo.conninfo_to_dict(dsn)["user"]
    assert await (await client.get(f"/{name}")).json() == [{"u": engine_role}]


async def test_role_without_privilege_gets_a_sql_error(client, services: ServiceMaker, roles, table: str,
                                                       svcconn: psycopg.Connection) -> None:
    svcconn.execute(f"REVOKE ALL ON public.{table} FROM PUBLIC")
    name = await services.create(client, "JSON", f"SELECT count(*) AS n FROM public.{table}", authorization=True)
    resp = await client.get(f"/{name}", headers=basic(roles["bob"], roles["password"]))
    assert resp.status == 500
    assert (await resp.json())["code"] == "42501"


async def test_user_role_without_sessdb_usage_runs_a_plain_statement(client, services: ServiceMaker,
                                                                     svcconn: psycopg.Connection) -> None:
    role = unique("plain_")
    svcconn.execute(f"CREATE ROLE {role}")
    try:
        name = await services.create(client, "RAW", "SELECT current_user", user_name=role)
        resp = await client.get(f"/{name}")
        assert (resp.status, await resp.text()) == (200, role)
    finally:
        services.cleanup()
        svcconn.execute(f"DROP ROLE {role}")
