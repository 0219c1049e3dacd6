"""Tests for sessdb.query: the lexer and the :name → $n rewriting of service statements."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sessdb.query import SqlLexError, Statement, bind, parse_statement, tokenize

FAST = settings(max_examples=200, deadline=None)


# --- unit tests -------------------------------------------------------------------------------


def test_simple_placeholder() -> None:
    assert parse_statement("SELECT :who AS greeting") == Statement("SELECT $1 AS greeting", ("who",))


def test_repeated_name_shares_a_number_case_insensitively() -> None:
    stmt = parse_statement("SELECT :a, :b, :A, :a")
    assert stmt == Statement("SELECT $1, $2, $1, $1", ("a", "b"))


def test_no_placeholders() -> None:
    assert parse_statement("SELECT 1") == Statement("SELECT 1", ())


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT ':x'",
        "SELECT 'it''s :x'",
        "SELECT E'\\' :x'",
        "SELECT e'\\\\', ':x'",
        "SELECT U&'d\\0061t :x'",
        "SELECT u&'x' UESCAPE '!'",
        "SELECT B'0101', X'FF', N':x'",
        'SELECT ":x"',
        'SELECT "a"":x"',
        'SELECT U&":x"',
        "SELECT $$ :x $$",
        "SELECT $tag$ :x $$ :y $tag$",
        "SELECT $q$ $1 $q$",
        "SELECT 1 -- :x",
        "SELECT 1 -- :x\r",
        "SELECT /* :x */ 1",
        "SELECT /* /* :x */ :y */ 1",
        "SELECT x::text",
        "SELECT arr[1:2]",
        "SELECT arr[lo:hi]",
        "DO $$ BEGIN v := 1; END $$",
        "SELECT a$b, a$1",
        "SELECT 1:=2",
    ],
)
def test_not_placeholders(sql: str) -> None:
    assert parse_statement(sql) == Statement(sql, ())


def test_placeholder_followed_by_cast() -> None:
    assert parse_statement("SELECT :a::int") == Statement("SELECT $1::int", ("a",))


def test_placeholder_after_punctuation() -> None:
    stmt = parse_statement("SELECT * FROM t WHERE id=:id AND x IN(:a,:b) AND y=(:c)")
    assert stmt.text == "SELECT * FROM t WHERE id=$1 AND x IN($2,$3) AND y=($4)"
    assert stmt.names == ("id", "a", "b", "c")


def test_placeholder_around_literals() -> None:
    stmt = parse_statement("SELECT ':x'||:x||$$:x$$||\":x\"")
    assert stmt.text == "SELECT ':x'||$1||$$:x$$||\":x\""
    assert stmt.names == ("x",)


def test_placeholder_as_slice_bound_needs_a_space() -> None:
    assert parse_statement("SELECT arr[1 : :hi], arr[:i]").text == "SELECT arr[1 : $1], arr[$2]"


def test_name_keeps_spelling_of_first_use() -> None:
    assert parse_statement("SELECT :Who, :WHO").names == ("Who",)


def test_underscore_and_digits_in_names() -> None:
    assert parse_statement("SELECT :_a1, :url10").names == ("_a1", "url10")


def test_placeholder_after_comment_and_newline() -> None:
    stmt = parse_statement("SELECT -- :no\n:yes /* :no */")
    assert stmt == Statement("SELECT -- :no\n$1 /* :no */", ("yes",))


def test_positional_parameter_is_rejected() -> None:
    with pytest.raises(ValueError, match=r"\$1.*:name"):
        parse_statement("SELECT $1")


def test_positional_inside_quotes_is_fine() -> None:
    assert parse_statement("SELECT '$1', \"$2\", $$ $3 $$").names == ()


def test_bad_placeholder_name_is_rejected() -> None:
    with pytest.raises(ValueError, match="variable names"):
        parse_statement("SELECT :nämlich")


@pytest.mark.parametrize(
    "sql",
    ["SELECT 'abc", "SELECT E'abc\\'", 'SELECT "abc', "SELECT $$ abc", "SELECT $a$ b $b$", "/* /* */"],
)
def test_unterminated_constructs_raise(sql: str) -> None:
    with pytest.raises(SqlLexError):
        parse_statement(sql)


def test_bind_uses_lookup_in_order_and_none_for_absent() -> None:
    stmt = parse_statement("SELECT :b, :a, :c")
    values = {"a": "1", "b": "2"}
    assert bind(stmt, values.get) == ["2", "1", None]


def test_tokens_cover_the_input() -> None:
    sql = "SELECT E'a\\'b', $t$x$t$, \"q\"\"\", :p::int; -- c\n/* /* */ */ 1.5e3"
    tokens = tokenize(sql)
    assert "".join(t.text for t in tokens) == sql
    kinds = [t.kind for t in tokens if t.kind != "space"]
    assert kinds == [
        "word", "string", "op", "dollar", "op", "ident", "op", "param", "op", "word",
        "semicolon", "comment", "comment", "number",
    ]  # fmt: skip


def test_token_end() -> None:
    token = tokenize("ab cd")[2]
    assert (token.text, token.start, token.end) == ("cd", 3, 5)


# --- properties -------------------------------------------------------------------------------

_PLAIN = st.text(alphabet="abc :;$-/*\"\\x1é\n", max_size=12)


@st.composite
def _plain_string(draw: st.DrawFn) -> str:
    atoms = draw(st.lists(st.sampled_from(["a", ":x", "''", '"', "$1", "--", "/*", ";", "\\", "é"])))
    prefix = draw(st.sampled_from(["", "N", "U&"]))
    return f"{prefix}'{''.join(atoms)}'"


@st.composite
def _e_string(draw: st.DrawFn) -> str:
    atoms = draw(st.lists(st.sampled_from(["a", ":x", "''", "\\'", "\\\\", "\\n", "$$", ";"])))
    return f"{draw(st.sampled_from(['E', 'e']))}'{''.join(atoms)}'"


@st.composite
def _quoted_ident(draw: st.DrawFn) -> str:
    atoms = draw(st.lists(st.sampled_from(["a", ":x", '""', "'", "$1", "/"])))
    return f'"{"".join(atoms)}"'


@st.composite
def _dollar_quoted(draw: st.DrawFn) -> str:
    tag = draw(st.sampled_from(["$$", "$q$", "$Tag_1$", "$é$"]))
    body = draw(_PLAIN.filter(lambda b: (b + tag).find(tag) == len(b)))
    return f"{tag}{body}{tag}"


@st.composite
def _line_comment(draw: st.DrawFn) -> str:
    body = draw(st.text(alphabet="ab :x'\"$;/*", max_size=10))
    return f"--{body}\n"


@st.composite
def _block_comment(draw: st.DrawFn) -> str:
    inner = draw(st.text(alphabet="ab :x'\"$;-", max_size=8))
    if draw(st.booleans()):
        inner = f"{inner}/* :y {inner} */{inner}"
    return f"/*{inner}*/"


_PROTECTED = st.one_of(
    _plain_string(),
    _e_string(),
    _quoted_ident(),
    _dollar_quoted(),
    _line_comment(),
    _block_comment(),
    st.sampled_from(["x::text", "::int", "::int[]", "arr[1:2]", "arr[lo:hi]", "v := 1", "B'01'"]),
    st.sampled_from(["SELECT", "FROM", "t", "1", "2.5", "(", ")", ",", "=", "||", ";"]),
)

_NAMES = st.sampled_from(["a", "A", "b", "who", "WHO", "url1", "_x"])


def _expected(fragments: list[tuple[str, str]]) -> tuple[str, tuple[str, ...]]:
    """Build the expected rewriting: protected fragments verbatim, placeholders numbered."""
    numbers: dict[str, int] = {}
    names: list[str] = []
    out: list[str] = []
    for kind, text in fragments:
        if kind == "name":
            if text.lower() not in numbers:
                names.append(text)
                numbers[text.lower()] = len(names)
            out.append(f"${numbers[text.lower()]}")
        else:
            out.append(text)
    return "".join(out), tuple(names)


@st.composite
def _statements(draw: st.DrawFn) -> list[tuple[str, str]]:
    pieces = draw(
        st.lists(
            st.one_of(
                _PROTECTED.map(lambda text: ("text", text)),
                _NAMES.map(lambda name: ("name", name)),
                _NAMES.map(lambda name: ("cast", name)),
            ),
            max_size=12,
        )
    )
    fragments: list[tuple[str, str]] = []
    for kind, text in pieces:
        separator = draw(st.sampled_from([" ", "\n", "\t", " (", " ,"]))
        if kind == "cast":  # :name::type — the placeholder then a cast left untouched
            fragments += [("text", separator), ("name", text), ("text", "::varchar(3)")]
        elif kind == "name":
            fragments += [("text", separator), ("name", text)]
        else:
            fragments += [("text", separator), ("text", text)]
    return fragments


def _source(fragments: list[tuple[str, str]]) -> str:
    return "".join(f":{text}" if kind == "name" else text for kind, text in fragments)


@FAST
@given(_statements())
def test_protected_text_is_unchanged_and_placeholders_numbered(
    fragments: list[tuple[str, str]],
) -> None:
    stmt = parse_statement(_source(fragments))
    assert (stmt.text, stmt.names) == _expected(fragments)


@FAST
@given(_statements(), st.dictionaries(_NAMES.map(str.lower), st.text(max_size=20) | st.none()))
def test_values_never_reach_the_text(
    fragments: list[tuple[str, str]], values: dict[str, str | None]
) -> None:
    sql = _source(fragments)
    stmt = parse_statement(sql)
    poisoned = {k: None if v is None else f"\x00{v}'; DROP TABLE t; --$1:x" for k, v in values.items()}
    params = bind(stmt, lambda name: poisoned.get(name.lower()))
    assert parse_statement(sql) == stmt  # the text is a function of the SQL alone
    assert params == [poisoned.get(name.lower()) for name in stmt.names]
    assert "\x00" not in stmt.text
    assert len(params) == len(stmt.names)


@FAST
@given(st.text(alphabet=st.sampled_from(list("ab:$'\"-/*;\\\n E&U1é")), max_size=40))
def test_tokenize_covers_any_input_or_reports_an_unclosed_quote(sql: str) -> None:
    try:
        tokens = tokenize(sql)
    except SqlLexError:
        return
    assert "".join(t.text for t in tokens) == sql
    assert all(t.text for t in tokens)
    assert all(sql[t.start : t.end] == t.text for t in tokens)
