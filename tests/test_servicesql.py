"""Tests for sessdb.servicesql: script splitting and SQL Anywhere's service statements."""

from __future__ import annotations

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from sessdb.query import SqlLexError
from sessdb.servicesql import Command, ServiceSyntaxError, parse_command, split_script

# --- split_script ----------------------------------------------------------------------------


def test_split_simple() -> None:
    assert split_script("SELECT 1; SELECT 2;") == ["SELECT 1", "SELECT 2"]


def test_split_keeps_last_statement_without_semicolon() -> None:
    assert split_script("SELECT 1;\n  SELECT 2  \n") == ["SELECT 1", "SELECT 2"]


def test_split_drops_empty_and_comment_only_statements() -> None:
    assert split_script(" ; ;\n-- only a comment\n; /* c */ ; SELECT 1; -- trailing") == ["SELECT 1"]
    assert split_script("") == []


@pytest.mark.parametrize(
    "body",
    [
        "'a;b'",
        "E'a\\';b'",
        '"a;b"',
        "$$a;b$$",
        "$f$ BEGIN x := 1; END $f$",
        "/* a; /* b; */ c; */ 1",
        "-- a;b\n 1",
    ],
)
def test_split_ignores_quoted_semicolons(body: str) -> None:
    assert split_script(f"SELECT {body}; SELECT 2") == [f"SELECT {body}", "SELECT 2"]


def test_split_keeps_begin_atomic_body_whole() -> None:
    function = (
        "CREATE OR REPLACE FUNCTION f(x int) RETURNS int LANGUAGE sql\n"
        "BEGIN ATOMIC\n  SELECT 1;\n  SELECT CASE WHEN x > 0 THEN x END;\nEND"
    )
    procedure = "create procedure p() begin atomic insert into t values (1); end"
    assert split_script(f"{function};\n{procedure};\nBEGIN; COMMIT;") == [
        function,
        procedure,
        "BEGIN",
        "COMMIT",
    ]


def test_split_begin_outside_functions_is_a_transaction() -> None:
    assert split_script("BEGIN; SELECT 1; END;") == ["BEGIN", "SELECT 1", "END"]


def test_split_a_service_script() -> None:
    script = "CREATE SERVICE s TYPE 'RAW' AS SELECT ';' || :x;\nDROP SERVICE s;"
    assert split_script(script) == ["CREATE SERVICE s TYPE 'RAW' AS SELECT ';' || :x", "DROP SERVICE s"]


def test_split_unterminated_string_raises() -> None:
    with pytest.raises(SqlLexError, match="unterminated"):
        split_script("SELECT 1; SELECT 'oops")


_PIECES = st.sampled_from(["SELECT 1", "'a;b'", '"c;d"', "$$e;f$$", "/* ;g */", "x::text", ":v", "E'\\';'"])


@settings(max_examples=200, deadline=None)
@given(st.lists(st.lists(_PIECES, min_size=1, max_size=4).map(" ".join), max_size=6))
@example(["/* ;g */ SELECT 1", "SELECT 1 /* ;g */"])
def test_split_round_trip(statements: list[str]) -> None:
    kept = [s for s in statements if s.replace("/* ;g */", "").strip()]  # comment-only ones go
    assert split_script(";\n".join(statements)) == kept


# --- parse_command: not ours -----------------------------------------------------------------


@pytest.mark.parametrize(
    "stmt",
    [
        "SELECT 1",
        "CREATE TABLE service (x int)",
        "CREATE SERVER s FOREIGN DATA WRAPPER w",
        "DROP SERVER s",
        "DROP TABLE connection",
        "CREATE OR REPLACE FUNCTION f() RETURNS int AS 'select 1' LANGUAGE sql",
        "ALTER TABLE service ADD c int",
        "-- CREATE SERVICE x\nSELECT 1",
        "",
    ],
)
def test_other_statements_are_none(stmt: str) -> None:
    assert parse_command(stmt) is None


# --- CREATE SERVICE --------------------------------------------------------------------------


def test_contract_example() -> None:
    stmt = (
        "CREATE SERVICE \"hello\" TYPE 'JSON' URL OFF AUTHORIZATION OFF USER app "
        "AS SELECT :who AS greeting;"
    )
    assert parse_command(stmt) == Command(
        "create_service",
        {
            "name": "hello",
            "type": "JSON",
            "url": "OFF",
            "authorization": False,
            "user_name": "app",
            "statement": "SELECT :who AS greeting",
        },
    )


def test_minimal_create_leaves_defaults_to_the_sql_function() -> None:
    expected = Command("create_service", {"name": "s", "type": "RAW"})
    assert parse_command("create service s type 'raw'") == expected


def test_create_or_replace() -> None:
    command = parse_command("CREATE OR REPLACE SERVICE s TYPE 'HTML' AS SELECT 1")
    assert command is not None
    assert command.args == {"name": "s", "type": "HTML", "statement": "SELECT 1", "replace": True}


def test_all_clauses_in_any_order_and_case() -> None:
    stmt = (
        "create service \"alice/files\" session 'Required-URL' Methods 'get, Post,HEAD' disable "
        "secure off url path elements authorization on user \"Web User\" type 'xml' "
        "as  select * from files where path = :url1  "
    )
    command = parse_command(stmt)
    assert command == Command(
        "create_service",
        {
            "name": "alice/files",
            "session": "required-url",
            "methods": "GET,POST,HEAD",
            "enabled": False,
            "url": "ELEMENTS",
            "authorization": True,
            "user_name": "Web User",
            "type": "XML",
            "statement": "select * from files where path = :url1",
        },
    )


@pytest.mark.parametrize("service_type", ["RAW", "HTML", "XML", "JSON", "SOAP", "DISH"])
def test_every_type(service_type: str) -> None:
    command = parse_command(f"CREATE SERVICE s TYPE '{service_type.lower()}'")
    assert command is not None and command.args["type"] == service_type


@pytest.mark.parametrize(
    ("clause", "value"), [("URL ON", "ON"), ("URL PATH OFF", "OFF"), ("url elements", "ELEMENTS")]
)
def test_url_clause(clause: str, value: str) -> None:
    command = parse_command(f"CREATE SERVICE s TYPE 'RAW' {clause}")
    assert command is not None and command.args["url"] == value


def test_enable_and_authorization_values() -> None:
    command = parse_command("CREATE SERVICE s TYPE 'RAW' ENABLE AUTHORIZATION ON")
    assert command is not None
    assert command.args["enabled"] is True and command.args["authorization"] is True


def test_user_names_follow_postgresql_identifier_rules() -> None:
    cases = {
        "USER App": "app",
        'USER "App"': "App",
        "USER NULL": None,
        'USER "NULL"': "NULL",
        'USER "a""b"': 'a"b',
    }
    for clause, expected in cases.items():
        command = parse_command(f"CREATE SERVICE s TYPE 'RAW' {clause}")
        assert command is not None and command.args["user_name"] == expected, clause


def test_bare_service_name_keeps_its_case() -> None:
    command = parse_command("DROP SERVICE Hello")
    assert command == Command("drop_service", {"name": "Hello"})


def test_soap_and_dish_clauses() -> None:
    command = parse_command(
        "CREATE SERVICE s TYPE 'SOAP' FORMAT 'concrete' EXPLICIT ON DATATYPE OUT GROUP Dishes AS CALL p()"
    )
    assert command is not None
    assert command.args == {
        "name": "s",
        "type": "SOAP",
        "format": "CONCRETE EXPLICIT ON",
        "group_name": "Dishes",
        "statement": "CALL p()",
    }
    command = parse_command("CREATE SERVICE d TYPE 'DISH' FORMAT NULL GROUP NULL")
    assert command is not None and command.args["format"] is None and command.args["group_name"] is None


def test_as_null() -> None:
    command = parse_command("CREATE SERVICE s TYPE 'RAW' AUTHORIZATION ON AS NULL")
    assert command is not None and command.args["statement"] is None


def test_as_takes_the_rest_verbatim() -> None:
    command = parse_command(
        "CREATE SERVICE s TYPE 'RAW' AS\n  SELECT 'URL OFF', \"TYPE\" -- AS\n  FROM t /* ; */ ;  -- after\n"
    )
    assert command is not None
    # Comments after the last token are dropped; those inside are kept.
    assert command.args["statement"] == "SELECT 'URL OFF', \"TYPE\" -- AS\n  FROM t"


def test_as_null_inside_a_statement_is_a_statement() -> None:
    command = parse_command("CREATE SERVICE s TYPE 'RAW' AS NULL::text")
    assert command is not None and command.args["statement"] == "NULL::text"


def test_leading_comment_is_ignored() -> None:
    command = parse_command("/* setup */ -- services\nDROP SERVICE s")
    assert command == Command("drop_service", {"name": "s"})


# --- ALTER / DROP ----------------------------------------------------------------------------


def test_alter_service_keeps_only_given_clauses() -> None:
    command = parse_command("ALTER SERVICE hello AS SELECT :who || '!'")
    assert command == Command("alter_service", {"name": "hello", "statement": "SELECT :who || '!'"})


def test_alter_service_several_clauses() -> None:
    command = parse_command("alter service \"a/b\" disable methods '*' session 'optional'")
    assert command == Command(
        "alter_service", {"name": "a/b", "enabled": False, "methods": "*", "session": "optional"}
    )


def test_drop_service_quoted() -> None:
    assert parse_command('DROP SERVICE "alice/files";') == Command("drop_service", {"name": "alice/files"})


def test_drop_connection() -> None:
    assert parse_command("drop connection 12345") == Command("drop_connection", {"conn_id": 12345})


# --- errors ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("stmt", "token"),
    [
        ("CREATE SERVICE s TYPE 'CSV'", "CSV"),
        ("CREATE SERVICE s TYPE RAW", "RAW"),
        ("CREATE SERVICE s TYPE 'RAW' URL MAYBE", "MAYBE"),
        ("CREATE SERVICE s TYPE 'RAW' AUTHORIZATION YES", "YES"),
        ("CREATE SERVICE s TYPE 'RAW' BOGUS", "BOGUS"),
        ("CREATE SERVICE s TYPE 'RAW' TYPE 'JSON'", "TYPE"),
        ("CREATE SERVICE s TYPE 'RAW' ENABLE DISABLE", "DISABLE"),
        ("CREATE SERVICE s TYPE 'RAW' SESSION 'sometimes'", "sometimes"),
        ("CREATE SERVICE s TYPE 'RAW' SECURE ON", "ON"),
        ("CREATE SERVICE s TYPE 'RAW' METHODS 'GET,,POST'", "GET,,POST"),
        ("CREATE SERVICE s TYPE 'RAW' FORMAT 'YAML'", "YAML"),
        ("CREATE SERVICE s TYPE 'RAW' DATATYPE MAYBE", "MAYBE"),
        ("CREATE SERVICE s TYPE 'RAW' USER 'app'", "'app'"),
        ("CREATE SERVICE 'quoted' TYPE 'RAW'", "'quoted'"),
        ("CREATE SERVICE s TYPE 'RAW' AS SELECT 1; SELECT 2", ";"),
        ("DROP SERVICE a b", "b"),
        ("DROP CONNECTION x", "x"),
        ("DROP CONNECTION 1.5", "1.5"),
        ("DROP CONNECTION 1 2", "2"),
        ("CREATE SERVICE s TYPE 'RAW' METHODS GET", "GET"),
    ],
)
def test_malformed_statements_name_the_token(stmt: str, token: str) -> None:
    with pytest.raises(ServiceSyntaxError) as caught:
        parse_command(stmt)
    assert caught.value.token == token
    assert token in str(caught.value)


@pytest.mark.parametrize(
    "stmt",
    [
        "CREATE SERVICE",
        "CREATE SERVICE s",
        "CREATE SERVICE s URL ON",
        "CREATE SERVICE s TYPE",
        "CREATE SERVICE s TYPE 'RAW' AS",
        "ALTER SERVICE s",
        "DROP SERVICE",
        "DROP CONNECTION",
        "CREATE SERVICE s TYPE 'RAW' URL",
    ],
)
def test_incomplete_statements(stmt: str) -> None:
    with pytest.raises(ServiceSyntaxError):
        parse_command(stmt)


def test_as_statement_with_positional_parameter_is_refused() -> None:
    with pytest.raises(ServiceSyntaxError, match=r"\$1"):
        parse_command("CREATE SERVICE s TYPE 'RAW' AS SELECT $1")


def test_service_syntax_error_is_a_value_error() -> None:
    assert issubclass(ServiceSyntaxError, ValueError)
