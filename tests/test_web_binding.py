"""Properties: no HTTP variable can change the statement that runs (hypothesis).

``test_query.py`` shows that the ``:name`` rewriting leaves literals, comments, quoted
identifiers and casts alone and that ``bind`` only returns values. These properties go one
step further out, through ``plan_call`` (the request as the engine sees it: query, form and
``url*`` variables with any names and values) and then into PostgreSQL itself: whatever the
request carries, the SQL text is a function of the service's statement alone, and the values
come back from the database exactly as sent.
"""

from __future__ import annotations

from collections.abc import Iterator
from urllib.parse import quote

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sessdb.plan import placeholder_call, plan_call
from sessdb.query import parse_statement
from sessdb.routing import Route, Service
from sessdb.web.inputs import HttpInput, Variable, parse_urlencoded
from tests.test_query import _source, _statements

PROPS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

# PostgreSQL text holds any character but NUL; surrogates cannot be encoded at all.
_VALUES = st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=30)
_HOSTILE = st.sampled_from(["'; DROP TABLE x; --", "$1", ":a", "$$", "*/", "/*", "\\", "''", '"', "E'\\''", "::int"])
_VALUE = st.one_of(_VALUES, _HOSTILE, st.lists(_HOSTILE).map("".join))
_NAMES = st.sampled_from(["a", "A", "b", "who", "WHO", "url1", "_x", "c:a", "'", "a b", ""])


def _input(variables: list[tuple[str, str | None]], query_string: str = "") -> HttpInput:
    return HttpInput(method="GET", path="/s", uri="/s", version="HTTP/1.1", query_string=query_string,
                     variables=tuple(Variable(n, v) for n, v in variables), headers=(("Host", "x"),), body=b"")


def _first(variables: list[tuple[str, str | None]], name: str) -> str | None:
    """What ``:name`` must bind: the first variable of exactly that name, else of any case."""
    for n, v in variables:
        if n == name:
            return v
    for n, v in variables:
        if n.lower() == name.lower():
            return v
    return None


@PROPS
@given(_statements(), st.lists(st.tuples(_NAMES, st.none() | _VALUE), max_size=8),
       st.lists(_VALUE.filter(lambda v: "/" not in v), max_size=3))
def test_plan_call_text_depends_on_the_statement_only(fragments, variables, elements) -> None:  # type: ignore[no-untyped-def]
    statement = "SELECT 1 " + _source(fragments)
    service = Service(name="s", type="JSON", statement=statement, url="ELEMENTS")
    route = Route(service, tuple((f"url{i}", v) for i, v in enumerate(elements, 1)))
    call = plan_call(route, _input(variables), role=None)
    parsed = parse_statement(statement)
    assert call.sql == parsed.text
    every = list(route.url_vars) + variables
    assert list(call.params) == [_first(every, name) for name in parsed.names]


def test_a_placeholder_call_has_the_settings_of_every_call() -> None:
    # the engine's warm-up prepares the statements a first request will use: the same names
    call = plan_call(Route(Service(name="s", type="RAW", statement="SELECT 1"), ()), _input([]), role=None)
    assert [name for name, _ in placeholder_call("SELECT 1").settings] == [name for name, _ in call.settings]


@PROPS
@given(st.lists(st.tuples(_NAMES, _VALUE), max_size=6))
def test_query_string_values_reach_the_parameters_unchanged(pairs) -> None:  # type: ignore[no-untyped-def]
    query = "&".join(f"{quote(n, safe='')}={quote(v, safe='')}" for n, v in pairs)
    variables = parse_urlencoded(query.encode())
    statement = "SELECT :a, ':a', $$:b$$, /* :b */ :b::text -- :who"
    service = Service(name="s", type="RAW", statement=statement)
    call = plan_call(Route(service, ()), _input([(v.name, v.value) for v in variables], query), role=None)
    assert call.sql == "SELECT $1, ':a', $$:b$$, /* :b */ $2::text -- :who"
    named = [(n, v) for n, v in pairs if n]  # an empty name cannot be bound
    assert list(call.params) == [_first(named, "a"), _first(named, "b")]


# --- and the database agrees ---------------------------------------------------------------------------

DB_STATEMENT = """SELECT :a AS a, ':a' AS lit, $q$:b$q$ AS dollar, "c:a", :b::text AS b -- :a ; DROP TABLE x
FROM (SELECT 1 AS "c:a") AS s /* :b */"""


@pytest.fixture(scope="module")
def conn(dsn: str) -> Iterator[psycopg.Connection]:
    with psycopg.connect(dsn) as connection:
        yield connection


@PROPS
@given(st.lists(st.tuples(_NAMES, st.none() | _VALUE), max_size=6))
def test_the_database_runs_the_same_statement_for_any_values(conn: psycopg.Connection, variables) -> None:  # type: ignore[no-untyped-def]
    service = Service(name="s", type="JSON", statement=DB_STATEMENT)
    call = plan_call(Route(service, ()), _input(variables), role=None)
    try:
        cur = psycopg.RawCursor(conn)
        cur.execute(call.sql, list(call.params))
        rows = cur.fetchall()
        assert [c.name for c in cur.description or []] == ["a", "lit", "dollar", "c:a", "b"]
    finally:
        conn.rollback()
    assert rows == [(_first(variables, "a"), ":a", ":b", 1, _first(variables, "b"))]
