"""Service statements: SQL Anywhere ``:name`` placeholders turned into PostgreSQL ``$n`` ones.

A service's statement names HTTP variables as ``:name``. ``parse_statement`` rewrites each
placeholder as ``$1``, ``$2``, ... for psycopg's raw cursor and records which name each number
stands for; ``bind`` then builds the parameter list from a lookup. Values only ever travel in
that list, never in the statement text, which depends on the service's SQL alone.

Telling a placeholder from a colon that belongs to PostgreSQL needs a lexer that knows
PostgreSQL's quoting rules. ``tokenize`` is that lexer; ``sessdb.servicesql`` reuses it to
split scripts. It assumes ``standard_conforming_strings = on`` (the default since 9.1), so a
backslash escapes nothing in a plain ``'...'`` literal, only in ``E'...'``.

Lexing rules, as PostgreSQL's scanner has them:

- ``'...'`` with ``''`` for a quote; the prefixed forms ``E'...'`` (backslash escapes),
  ``U&'...'``, ``B'...'``, ``X'...'`` and ``N'...'``; ``"..."`` identifiers with ``""``;
  ``$$...$$`` and ``$tag$...$tag$`` bodies.
- ``-- ...`` comments up to the end of the line and ``/* ... */`` comments, which nest.
- An identifier may contain ``$`` after its first character (``a$1`` is one identifier),
  and any non-ASCII character counts as a letter.

A placeholder is ``:`` followed by a name (``[A-Za-z_][A-Za-z0-9_]*``). These are not:
``::type`` casts (``:a::int`` is the placeholder ``a`` and a cast), ``:=``, a ``:`` followed
by a digit (``arr[1:2]``), and a ``:`` written directly after an identifier or number
character, which is how PostgreSQL spells slices such as ``arr[lo:hi]``. So ``arr[:hi]``
takes the variable ``hi`` as an index; to use a variable as the upper bound of a slice, write
``arr[1 : :hi]``.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

__all__ = [
    "SqlLexError",
    "Statement",
    "Token",
    "TokenKind",
    "bind",
    "parse_statement",
    "tokenize",
]

TokenKind = Literal[
    "space",  # whitespace
    "comment",  # -- line or /* block */ comment
    "string",  # '...' and its prefixed forms E'', U&'', B'', X'', N''
    "ident",  # "quoted identifier" or U&"..."
    "dollar",  # $$...$$ or $tag$...$tag$
    "word",  # bare identifier or keyword
    "number",  # numeric literal
    "param",  # :name placeholder
    "positional",  # $1 style parameter
    "semicolon",  # ;
    "op",  # anything else: operators, punctuation, ::, :=
]

_SPACE = frozenset(" \t\n\r\f\v")
_LETTER = r"A-Za-z_\x80-\U0010ffff"
_WORD_RE = re.compile(rf"[{_LETTER}][{_LETTER}0-9$]*")
_NUMBER_RE = re.compile(
    r"0[xX][0-9A-Fa-f_]+|0[oO][0-7_]+|0[bB][01_]+"
    r"|[0-9][0-9_]*(?:\.[0-9_]*)?(?:[eE][+-]?[0-9]+)?"
)
_DOLLAR_TAG_RE = re.compile(rf"\$(?:[{_LETTER}][{_LETTER}0-9]*)?\$")
_POSITIONAL_RE = re.compile(r"\$[0-9]+")
_LINE_COMMENT_RE = re.compile(r"--[^\n\r]*")
_COMMENT_MARK_RE = re.compile(r"/\*|\*/")
_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_STRING_PREFIXES = frozenset("eEbBxXnN")
# A colon right after one of these is PostgreSQL's slice syntax (arr[lo:hi]), not a placeholder.
_GLUE_KINDS = frozenset(["word", "number", "positional"])


class SqlLexError(ValueError):
    """A quoted string, quoted identifier, dollar-quoted body or comment never ends."""

    def __init__(self, message: str, position: int) -> None:
        super().__init__(f"{message} (starting at offset {position})")
        self.position = position


@dataclass(frozen=True)
class Token:
    """One lexical token: its kind, its exact source text and where it starts."""

    kind: TokenKind
    text: str
    start: int

    @property
    def end(self) -> int:
        """The offset just past the token."""
        return self.start + len(self.text)


@dataclass(frozen=True)
class Statement:
    """A statement ready for psycopg's raw cursor.

    ``text`` holds ``$1 .. $n`` placeholders; ``names[i]`` is the variable bound to ``$(i+1)``,
    spelled as it was first written in the service statement.
    """

    text: str
    names: tuple[str, ...]


def tokenize(sql: str) -> list[Token]:
    """Split ``sql`` into tokens whose texts, joined, give back ``sql`` exactly.

    Raises ``SqlLexError`` (a ``ValueError``) when a quoted string, quoted identifier,
    dollar-quoted body or block comment is not closed.
    """
    tokens: list[Token] = []
    pos = 0
    while pos < len(sql):
        kind, end = _scan(sql, pos, tokens[-1].kind if tokens else None)
        tokens.append(Token(kind, sql[pos:end], pos))
        pos = end
    return tokens


def parse_statement(sql: str) -> Statement:
    """Rewrite the ``:name`` placeholders of a service statement as ``$1 .. $n``.

    Every use of one name (compared case-insensitively, as HTTP variables are) gets the same
    number, in order of first appearance. Everything else is copied unchanged.

    Raises ``ValueError`` for a ``$n`` parameter written in the statement itself (services
    name their variables as ``:name``), for a placeholder name that is not
    ``[A-Za-z_][A-Za-z0-9_]*``, and (``SqlLexError``) for an unclosed quote or comment.
    """
    parts: list[str] = []
    names: list[str] = []
    numbers: dict[str, int] = {}
    for token in tokenize(sql):
        if token.kind == "positional":
            raise ValueError(
                f"parameter {token.text} at offset {token.start}: "
                "service statements name their variables as :name, not $n"
            )
        if token.kind == "param":
            parts.append(f"${_number_for(token, names, numbers)}")
        else:
            parts.append(token.text)
    return Statement("".join(parts), tuple(names))


def bind(stmt: Statement, lookup: Callable[[str], str | None]) -> list[str | None]:
    """Return the parameters for ``stmt``: ``lookup(name)`` for each of its names, in order.

    ``lookup`` answers None for an absent variable, which binds SQL NULL.
    """
    return [lookup(name) for name in stmt.names]


def _number_for(token: Token, names: list[str], numbers: dict[str, int]) -> int:
    """The ``$n`` number for a placeholder token, allocating a new one for a new name."""
    name = token.text[1:]
    if not _NAME_RE.fullmatch(name):
        raise ValueError(
            f"placeholder {token.text!r} at offset {token.start}: "
            "variable names are ASCII letters, digits and _, not starting with a digit"
        )
    key = name.lower()
    if key not in numbers:
        names.append(name)
        numbers[key] = len(names)
    return numbers[key]


def _scan(sql: str, pos: int, previous: TokenKind | None) -> tuple[TokenKind, int]:
    """The kind and end offset of the token starting at ``pos``, after a ``previous`` one."""
    char = sql[pos]
    pair = sql[pos : pos + 2]
    if char in _SPACE:
        return "space", _skip_space(sql, pos)
    if pair == "--":
        return "comment", _LINE_COMMENT_RE.match(sql, pos).end()  # type: ignore[union-attr]
    if pair == "/*":
        return "comment", _block_comment_end(sql, pos)
    if char == "'":
        return "string", _quoted_end(sql, pos, "'")
    if char == '"':
        return "ident", _quoted_end(sql, pos, '"')
    if char == "$":
        return _scan_dollar(sql, pos)
    if char == ":":
        return _scan_colon(sql, pos, glued=previous in _GLUE_KINDS)
    if char == ";":
        return "semicolon", pos + 1
    if _is_letter(char):
        return _scan_word(sql, pos)
    if "0" <= char <= "9":
        return "number", _NUMBER_RE.match(sql, pos).end()  # type: ignore[union-attr]
    return "op", pos + 1


def _is_letter(char: str) -> bool:
    """Whether ``char`` may start an identifier (PostgreSQL counts every non-ASCII byte)."""
    return char == "_" or not char.isascii() or char.isalpha()


def _is_ident_char(char: str) -> bool:
    """Whether ``char`` may continue an identifier."""
    return _is_letter(char) or "0" <= char <= "9" or char == "$"


def _skip_space(sql: str, pos: int) -> int:
    while pos < len(sql) and sql[pos] in _SPACE:
        pos += 1
    return pos


def _block_comment_end(sql: str, pos: int) -> int:
    """End of the ``/* */`` comment at ``pos``; comments nest, as in PostgreSQL."""
    depth = 0
    for mark in _COMMENT_MARK_RE.finditer(sql, pos):
        depth += 1 if mark.group() == "/*" else -1
        if depth == 0:
            return mark.end()
    raise SqlLexError("unterminated /* comment", pos)


def _quoted_end(sql: str, pos: int, quote: str, *, backslash: bool = False) -> int:
    """End of the quoted text opening at ``pos``; a doubled quote stands for one quote.

    With ``backslash`` (E'' strings) a backslash also escapes the character after it.
    """
    i = pos + 1
    while i < len(sql):
        char = sql[i]
        if backslash and char == "\\":
            i += 2
        elif char != quote:
            i += 1
        elif sql[i + 1 : i + 2] == quote:
            i += 2
        else:
            return i + 1
    what = "quoted identifier" if quote == '"' else "quoted string"
    raise SqlLexError(f"unterminated {what}", pos)


def _scan_dollar(sql: str, pos: int) -> tuple[TokenKind, int]:
    """A ``$n`` parameter, a dollar-quoted body, or a lone ``$``."""
    positional = _POSITIONAL_RE.match(sql, pos)
    if positional:
        return "positional", positional.end()
    opening = _DOLLAR_TAG_RE.match(sql, pos)
    if not opening:
        return "op", pos + 1
    tag = opening.group()
    close = sql.find(tag, opening.end())
    if close < 0:
        raise SqlLexError(f"unterminated dollar-quoted string {tag}", pos)
    return "dollar", close + len(tag)


def _scan_colon(sql: str, pos: int, *, glued: bool) -> tuple[TokenKind, int]:
    """A ``::`` cast, ``:=``, a ``:name`` placeholder or a plain ``:``.

    ``glued``: the colon follows a word or number directly, as in the slice ``arr[lo:hi]``.
    """
    following = sql[pos + 1 : pos + 2]
    if following in (":", "="):
        return "op", pos + 2
    if following and _is_letter(following) and not glued:
        end = pos + 2
        while end < len(sql) and _is_ident_char(sql[end]):
            end += 1
        return "param", end
    return "op", pos + 1


def _scan_word(sql: str, pos: int) -> tuple[TokenKind, int]:
    """A bare word, or a string or identifier with a letter prefix (E'', U&'', U&"")."""
    end = _WORD_RE.match(sql, pos).end()  # type: ignore[union-attr]
    word = sql[pos:end]
    following = sql[end : end + 2]
    if word in _STRING_PREFIXES and following[:1] == "'":
        return "string", _quoted_end(sql, end, "'", backslash=word in "eE")
    if word in ("u", "U") and following == "&'":
        return "string", _quoted_end(sql, end + 1, "'")
    if word in ("u", "U") and following == '&"':
        return "ident", _quoted_end(sql, end + 1, '"')
    return "word", end
