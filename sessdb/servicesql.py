"""SQL Anywhere's service statements, as ``sessdb sql`` accepts them on top of PostgreSQL.

``split_script`` cuts a script into statements at top-level semicolons, with the lexer of
``sessdb.query``. ``parse_command`` recognises ``CREATE [OR REPLACE] SERVICE``,
``ALTER SERVICE``, ``DROP SERVICE`` and ``DROP CONNECTION n`` and returns their arguments under
the keyword names of the SQL API (``sessdb.create_service(name => ..., type => ...)``);
anything else is plain PostgreSQL and gets None.

Names follow the identifier rules of the side that uses them. A service name is a URL path, so
a bare one is kept as written; a role named by ``USER`` follows PostgreSQL, so a bare one is
folded to lower case; a ``"quoted"`` name is always taken as written. Whether a service name
is allowed (characters, slashes, ``_sessdb``) is left to ``sessdb.create_service``.

Clauses sessdb has no use for are still parsed, so that SQL Anywhere scripts run: ``SECURE
OFF`` and ``DATATYPE`` leave nothing in the arguments. ``SECURE ON`` is refused, since sessdb
has no HTTPS listener and would otherwise serve the service in clear.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal

from sessdb.query import Token, parse_statement, tokenize

__all__ = ["Command", "CommandKind", "ServiceSyntaxError", "parse_command", "split_script"]

CommandKind = Literal["create_service", "alter_service", "drop_service", "drop_connection"]

SERVICE_TYPES = ("RAW", "HTML", "XML", "JSON", "SOAP", "DISH")
URL_MODES = ("ON", "OFF", "ELEMENTS")
SESSION_MODES = ("optional", "required", "required-url")
FORMATS = ("DNET", "CONCRETE", "XML")
DATATYPES = ("ON", "OFF", "IN", "OUT")

_INSIGNIFICANT = frozenset(["space", "comment"])


class ServiceSyntaxError(ValueError):
    """A statement that starts like a service statement but does not parse.

    ``token`` is the offending token's text, or None when the statement ended too early.
    """

    def __init__(self, message: str, token: str | None = None) -> None:
        super().__init__(message)
        self.token = token


@dataclass(frozen=True)
class Command:
    """A parsed service statement: which SQL function it calls, and the arguments by keyword.

    Only clauses present in the statement appear in ``args``, so an ``ALTER SERVICE`` leaves
    the others as they are and a ``CREATE SERVICE`` gets the SQL function's defaults.
    """

    kind: CommandKind
    args: dict[str, object] = field(default_factory=dict)


def split_script(text: str) -> list[str]:
    """Split a SQL script at top-level semicolons; drop statements that are empty or comments.

    Semicolons inside quotes, dollar-quoted bodies and comments do not split, and neither do
    those inside the ``BEGIN ATOMIC ... END`` body of ``CREATE [OR REPLACE] FUNCTION`` or
    ``PROCEDURE`` (psql's rule). Each statement comes back without its semicolon, stripped.
    psql backslash commands are not understood: they stay in the statement text.

    Raises ``SqlLexError`` (a ``ValueError``) for an unclosed quote or comment.
    """
    statements: list[str] = []
    current: list[Token] = []
    depth = _BlockDepth()
    for token in tokenize(text):
        if token.kind == "semicolon" and depth.level == 0:
            _flush(current, statements)
            current, depth = [], _BlockDepth()
        else:
            current.append(token)
            depth.feed(token)
    _flush(current, statements)
    return statements


def parse_command(stmt: str) -> Command | None:
    """Parse one of SQL Anywhere's service statements, or return None for any other statement.

    Raises ``ServiceSyntaxError`` when the statement begins like ``CREATE SERVICE``, ``ALTER
    SERVICE``, ``DROP SERVICE`` or ``DROP CONNECTION`` but is malformed; the message names the
    offending token. An ``AS`` statement that ``sessdb.query`` would refuse (a ``$1``
    parameter, an unclosed quote) is refused here too.
    """
    tokens = _significant(tokenize(stmt))
    cursor = _Cursor(stmt, tokens)
    head = [t.text.upper() if t.kind == "word" else "" for t in tokens[:4]]
    if head[:2] == ["CREATE", "SERVICE"] or head[:4] == ["CREATE", "OR", "REPLACE", "SERVICE"]:
        return _create_service(cursor, replace=head[1] == "OR")
    if head[:2] == ["ALTER", "SERVICE"]:
        return _alter_service(cursor)
    if head[:2] == ["DROP", "SERVICE"]:
        return _drop_service(cursor)
    if head[:2] == ["DROP", "CONNECTION"]:
        return _drop_connection(cursor)
    return None


# --- splitting -------------------------------------------------------------------------------


def _flush(tokens: list[Token], statements: list[str]) -> None:
    """Append the statement made of ``tokens`` unless it holds only spaces and comments."""
    if any(t.kind not in _INSIGNIFICANT for t in tokens):
        statements.append("".join(t.text for t in tokens).strip())


class _BlockDepth:
    """Tracks ``BEGIN ... END`` nesting in a function body, where ``;`` does not split.

    Only statements that start ``CREATE [OR REPLACE] FUNCTION|PROCEDURE`` are tracked, and
    only outside parentheses. ``CASE`` also ends with ``END``, so it counts inside a block.
    """

    def __init__(self) -> None:
        self.level = 0
        self._words: list[str] = []
        self._parens = 0

    def feed(self, token: Token) -> None:
        """Account for the next token of the statement."""
        if token.kind == "op" and token.text in "()":
            self._parens += 1 if token.text == "(" else -1
        elif token.kind == "word":
            word = token.text.lower()
            if len(self._words) < 4:
                self._words.append(word)
            if self._parens == 0 and self._is_routine():
                self._count(word)

    def _is_routine(self) -> bool:
        words = self._words
        if words[:3] == ["create", "or", "replace"]:
            words = words[3:]
        elif words[:1] == ["create"]:
            words = words[1:]
        else:
            return False
        return words[:1] in (["function"], ["procedure"])

    def _count(self, word: str) -> None:
        if word == "begin" or (word == "case" and self.level > 0):
            self.level += 1
        elif word == "end" and self.level > 0:
            self.level -= 1


# --- parsing ---------------------------------------------------------------------------------


def _significant(tokens: list[Token]) -> list[Token]:
    """Drop spaces and comments, and semicolons at the very end."""
    kept = [t for t in tokens if t.kind not in _INSIGNIFICANT]
    while kept and kept[-1].kind == "semicolon":
        kept.pop()
    return kept


class _Cursor:
    """Walks the significant tokens of one statement."""

    def __init__(self, source: str, tokens: list[Token]) -> None:
        self.source = source
        self.tokens = tokens
        self.index = 0

    def at_end(self) -> bool:
        return self.index >= len(self.tokens)

    def peek(self) -> Token | None:
        return None if self.at_end() else self.tokens[self.index]

    def take(self, what: str) -> Token:
        """The next token; ``what`` describes what was expected if there is none."""
        token = self.peek()
        if token is None:
            raise ServiceSyntaxError(f"expected {what}, found the end of the statement")
        self.index += 1
        return token

    def skip(self, count: int) -> None:
        self.index += count

    def take_word(self, what: str, choices: tuple[str, ...]) -> str:
        """The next token as one of ``choices`` (upper case), matched case-insensitively."""
        token = self.take(what)
        word = token.text.upper()
        if token.kind != "word" or word not in choices:
            raise _unexpected(token, what)
        return word

    def take_string(self, what: str) -> str:
        """The value of the next token, which must be a plain ``'...'`` literal."""
        token = self.take(what)
        if token.kind != "string" or not token.text.startswith("'"):
            raise _unexpected(token, what)
        return token.text[1:-1].replace("''", "'")

    def take_keyword(self, keyword: str) -> bool:
        """Whether the next token is ``keyword`` (any case); if so, consume it."""
        token = self.peek()
        if token is not None and token.kind == "word" and token.text.upper() == keyword:
            self.index += 1
            return True
        return False

    def expect_end(self, after: str) -> None:
        token = self.peek()
        if token is not None:
            raise ServiceSyntaxError(f"unexpected {token.text!r} after {after}", token.text)


def _unexpected(token: Token, what: str) -> ServiceSyntaxError:
    return ServiceSyntaxError(f"expected {what}, found {token.text!r}", token.text)


def _identifier(token: Token, what: str, *, fold: bool) -> str:
    """A bare word (lower-cased when ``fold``) or a ``"quoted"`` name taken as written."""
    if token.kind == "word":
        return token.text.lower() if fold else token.text
    if token.kind == "ident" and token.text.startswith('"') and len(token.text) > 2:
        return token.text[1:-1].replace('""', '"')
    raise _unexpected(token, what)


def _service_name(cursor: _Cursor) -> str:
    return _identifier(cursor.take("a service name"), "a service name", fold=False)


def _create_service(cursor: _Cursor, *, replace: bool) -> Command:
    cursor.skip(4 if replace else 2)
    args: dict[str, object] = {"name": _service_name(cursor)}
    _clauses(cursor, args, "CREATE SERVICE")
    if "type" not in args:
        raise ServiceSyntaxError("CREATE SERVICE needs a TYPE clause, such as TYPE 'JSON'")
    if replace:
        args["replace"] = True
    return Command("create_service", args)


def _alter_service(cursor: _Cursor) -> Command:
    cursor.skip(2)
    args: dict[str, object] = {"name": _service_name(cursor)}
    _clauses(cursor, args, "ALTER SERVICE")
    return Command("alter_service", args)


def _drop_service(cursor: _Cursor) -> Command:
    cursor.skip(2)
    name = _service_name(cursor)
    cursor.expect_end("DROP SERVICE name")
    return Command("drop_service", {"name": name})


def _drop_connection(cursor: _Cursor) -> Command:
    cursor.skip(2)
    token = cursor.take("a connection number")
    if token.kind != "number" or not token.text.isdigit():
        raise _unexpected(token, "a connection number")
    cursor.expect_end("DROP CONNECTION n")
    return Command("drop_connection", {"conn_id": int(token.text)})


# --- service clauses -------------------------------------------------------------------------

_ClauseParser = Callable[[_Cursor, str, dict[str, object]], None]


def _clauses(cursor: _Cursor, args: dict[str, object], statement: str) -> None:
    """Parse clauses, in any order and each at most once, into ``args``."""
    seen: set[str] = set()
    while not cursor.at_end():
        token = cursor.take("a clause")
        keyword = token.text.upper() if token.kind == "word" else ""
        clause = _CLAUSE_OF.get(keyword)
        if clause is None:
            expected = f"a {statement} clause ({', '.join(_CLAUSES)})"
            raise _unexpected(token, expected)
        if clause in seen:
            name = _CLAUSE_NAMES.get(clause, clause)
            message = f"duplicate {token.text!r}: {statement} already has a {name} clause"
            raise ServiceSyntaxError(message, token.text)
        seen.add(clause)
        _CLAUSES[clause](cursor, keyword, args)
    if not seen and statement == "ALTER SERVICE":
        raise ServiceSyntaxError("ALTER SERVICE needs at least one clause to change")


def _take_choice(what: str, choices: Sequence[str], value: str) -> str:
    """``value`` (a quoted string just taken) when it is one of ``choices``; else a syntax error."""
    if value not in choices:
        raise ServiceSyntaxError(f"unknown {what} {value!r}; expected one of {', '.join(choices)}", value)
    return value


def _type_clause(cursor: _Cursor, keyword: str, args: dict[str, object]) -> None:
    value = cursor.take_string("a quoted service type after TYPE").upper()
    args["type"] = _take_choice("service type", SERVICE_TYPES, value)


def _url_clause(cursor: _Cursor, keyword: str, args: dict[str, object]) -> None:
    cursor.take_keyword("PATH")
    args["url"] = cursor.take_word("ON, OFF or ELEMENTS after URL", URL_MODES)


def _authorization_clause(cursor: _Cursor, keyword: str, args: dict[str, object]) -> None:
    args["authorization"] = cursor.take_word("ON or OFF after AUTHORIZATION", ("ON", "OFF")) == "ON"


def _enable_clause(cursor: _Cursor, keyword: str, args: dict[str, object]) -> None:
    args["enabled"] = keyword == "ENABLE"


def _methods_clause(cursor: _Cursor, keyword: str, args: dict[str, object]) -> None:
    value = cursor.take_string("a quoted method list after METHODS, such as 'GET,POST'")
    methods = [part.strip().upper() for part in value.split(",")]
    if not all(methods):
        raise ServiceSyntaxError(f"METHODS {value!r} has an empty entry", value)
    args["methods"] = ",".join(methods)


def _secure_clause(cursor: _Cursor, keyword: str, args: dict[str, object]) -> None:
    if cursor.take_word("ON or OFF after SECURE", ("ON", "OFF")) == "ON":
        raise ServiceSyntaxError("SECURE ON is not supported: sessdb has no HTTPS listener", "ON")


def _user_clause(cursor: _Cursor, keyword: str, args: dict[str, object]) -> None:
    what = "a role or NULL after USER"
    if cursor.take_keyword("NULL"):
        args["user_name"] = None
    else:
        args["user_name"] = _identifier(cursor.take(what), what, fold=True)


def _group_clause(cursor: _Cursor, keyword: str, args: dict[str, object]) -> None:
    what = "a group or NULL after GROUP"
    if cursor.take_keyword("NULL"):
        args["group_name"] = None
    else:
        args["group_name"] = _identifier(cursor.take(what), what, fold=False)


def _format_clause(cursor: _Cursor, keyword: str, args: dict[str, object]) -> None:
    if cursor.take_keyword("NULL"):
        args["format"] = None
        return
    value = cursor.take_string("a quoted format or NULL after FORMAT").upper()
    if value not in FORMATS:
        expected = ", ".join(FORMATS)
        raise ServiceSyntaxError(f"unknown FORMAT {value!r}; expected one of {expected}", value)
    if value == "CONCRETE" and cursor.take_keyword("EXPLICIT"):
        value += " EXPLICIT " + cursor.take_word("ON or OFF after EXPLICIT", ("ON", "OFF"))
    args["format"] = value


def _datatype_clause(cursor: _Cursor, keyword: str, args: dict[str, object]) -> None:
    cursor.take_word("ON, OFF, IN or OUT after DATATYPE", DATATYPES)


def _session_clause(cursor: _Cursor, keyword: str, args: dict[str, object]) -> None:
    value = cursor.take_string("a quoted session mode after SESSION").lower()
    args["session"] = _take_choice("SESSION mode", SESSION_MODES, value)


def _as_clause(cursor: _Cursor, keyword: str, args: dict[str, object]) -> None:
    """``AS NULL``, or ``AS`` and the rest of the statement: one statement, trimmed.

    Comments after its last token are dropped, so that nothing can hide what follows if the
    engine wraps the statement.
    """
    start = cursor.tokens[cursor.index - 1].end
    rest = cursor.tokens[cursor.index :]
    cursor.skip(len(rest))
    if len(rest) == 1 and rest[0].kind == "word" and rest[0].text.upper() == "NULL":
        args["statement"] = None
        return
    if not rest:
        raise ServiceSyntaxError("expected a statement or NULL after AS, found the end")
    stray = next((t for t in rest if t.kind == "semicolon"), None)
    if stray is not None:
        message = f"unexpected {stray.text!r} after AS: a service runs one statement"
        raise ServiceSyntaxError(message, stray.text)
    statement = cursor.source[start : rest[-1].end].strip()
    try:
        parse_statement(statement)
    except ValueError as exc:
        raise ServiceSyntaxError(f"AS statement: {exc}") from None
    args["statement"] = statement


_CLAUSES: dict[str, _ClauseParser] = {
    "TYPE": _type_clause,
    "URL": _url_clause,
    "AUTHORIZATION": _authorization_clause,
    "ENABLE": _enable_clause,
    "METHODS": _methods_clause,
    "SECURE": _secure_clause,
    "USER": _user_clause,
    "GROUP": _group_clause,
    "FORMAT": _format_clause,
    "DATATYPE": _datatype_clause,
    "SESSION": _session_clause,
    "AS": _as_clause,
}

# The keyword that opens each clause; ENABLE and DISABLE are one clause.
_CLAUSE_OF: dict[str, str] = {keyword: keyword for keyword in _CLAUSES} | {"DISABLE": "ENABLE"}
_CLAUSE_NAMES = {"ENABLE": "ENABLE/DISABLE"}
