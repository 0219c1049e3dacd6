"""Response bodies: a service's result, or its error, in the shape of the service's type.

Pure functions from Python values, as psycopg returns them, to ``(body, content_type)``;
nothing here knows aiohttp. The shapes are those of contract section 3:

- RAW: the first column of every row, concatenated; ``bytea`` goes out as its bytes, NULL adds
  nothing, other values as ``text_value`` gives them.
- HTML: a complete document with one table, a header row of column names and one row per
  result row; NULL is an empty cell.
- XML: ``<root><row col="value" .../></root>`` as SQL Anywhere's ``FOR XML RAW``: NULL
  attributes are left out, ``bytea`` is base64, and a column name that is not an XML name has
  its offending characters written ``_xHHHH_``. A single value that is itself a well-formed XML
  document is sent as it is.
- JSON: an array with one object per row, keyed by column name (see ``render_result``).

Text that XML 1.0 cannot carry (control characters other than tab, newline and carriage
return, lone surrogates, U+FFFE and U+FFFF) is replaced by U+FFFD in HTML and XML output, so
both are always well-formed.
"""

from __future__ import annotations

import base64
import functools
import html
import json
import math
import re
import xml.etree.ElementTree as ET
import xml.parsers.expat
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from functools import lru_cache
from http import HTTPStatus
from typing import Any
from uuid import UUID

__all__ = ["CONTENT_TYPES", "render_error", "render_result", "text_value", "xml_name"]

CONTENT_TYPES = {
    "RAW": "text/plain; charset=utf-8",
    "HTML": "text/html; charset=utf-8",
    "XML": "text/xml; charset=utf-8",
    "JSON": "application/json; charset=utf-8",
}

_BINARY = (bytes, bytearray, memoryview)
# Characters XML 1.0 forbids even as character references.
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")
# Tab, newline and carriage return as references, or attribute normalisation would eat them.
_ATTRIBUTE_ESCAPES = {
    "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;",
    "\t": "&#9;", "\n": "&#10;", "\r": "&#13;",
}  # fmt: skip
_ATTRIBUTE_SPECIAL = re.compile('[&<>"\t\n\r]')
# JSON stays valid with these escaped, and cannot then be read as markup or break a script.
_JSON_SAFE = str.maketrans(
    {"<": "\\u003c", ">": "\\u003e", "&": "\\u0026", "\u2028": "\\u2028", "\u2029": "\\u2029"}
)

_NAME_START = (
    "A-Z_a-z\xc0-\xd6\xd8-\xf6\xf8-\u02ff\u0370-\u037d\u037f-\u1fff\u200c\u200d"
    "\u2070-\u218f\u2c00-\u2fef\u3001-\ud7ff\uf900-\ufdcf\ufdf0-\ufffd\U00010000-\U000effff"
)
_NAME_CHAR = _NAME_START + "\\-.0-9\xb7\u0300-\u036f\u203f\u2040"
_NAME_START_RE = re.compile(f"[{_NAME_START}]")
_NAME_CHAR_RE = re.compile(f"[{_NAME_CHAR}]")
_ESCAPE_LIKE = re.compile("_x[0-9A-Fa-f]{4}_")

Row = Sequence[Any]


def render_result(kind: str, columns: Sequence[str], rows: Sequence[Row]) -> tuple[bytes, str]:
    """The body and content type for a result, for a service of type ``kind`` (any case).

    ``columns`` are the result's column names and ``rows`` its rows, values as psycopg returns
    them. ``kind`` is RAW, HTML, XML or JSON; anything else (SOAP, DISH) raises ``ValueError``:
    SOAP envelopes and WSDL documents are ``sessdb.soap`` and ``sessdb.wsdl``.

    JSON specifics: numbers are JSON numbers (``numeric`` keeps every digit), NaN and the
    infinities are the strings ``"NaN"``, ``"Infinity"``, ``"-Infinity"``; ``json``/``jsonb``
    values are embedded as JSON; ``bytea`` is a ``"\\\\x..."`` hex string, as PostgreSQL's
    ``to_json`` writes it; dates and times are ISO 8601; ``<``, ``>`` and ``&`` are written
    as ``\\u`` escapes. JSON and XML need distinct keys, so a repeated column name gets a
    suffix: the second ``a`` becomes ``a_2``, the third ``a_3`` (skipping names in use); no
    value is lost.
    """
    renderer = _RENDERERS.get(kind.upper())
    if renderer is None:
        raise ValueError(f"no result rendering for service type {kind!r}")
    return renderer(list(columns), list(rows)), CONTENT_TYPES[kind.upper()]


def render_error(
    kind: str,
    status: int,
    sqlstate: str | None,
    message: str,
    detail: str | None = None,
    hint: str | None = None,
) -> tuple[bytes, str]:
    """The body and content type of an error answer for a service of type ``kind``.

    JSON services get ``{"code": sqlstate, "message", "detail", "hint"}`` (absent ones null);
    every other type gets a small HTML document with the status, the SQLSTATE (when there is
    one), the message, and the detail and hint when given.
    """
    if kind.upper() == "JSON":
        fields = {"code": sqlstate, "message": message, "detail": detail, "hint": hint}
        return _JSON.value(fields).encode("utf-8", "replace"), CONTENT_TYPES["JSON"]
    title = _html(f"{status} {_reason(status)}".strip())
    lines = [f"<h1>{title}</h1>"]
    if sqlstate:
        lines.append(f"<p>SQLSTATE: <code>{_html(sqlstate)}</code></p>")
    lines.append(f"<p>{_html(message)}</p>")
    for label, text in (("Detail", detail), ("Hint", hint)):
        if text:
            lines.append(f"<p>{label}: {_html(text)}</p>")
    return _document(title, lines), CONTENT_TYPES["HTML"]


def _reason(status: int) -> str:
    """The standard reason phrase of ``status``, or '' for a code HTTP does not define."""
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return ""


def text_value(value: object) -> str:
    """A value as text, for RAW bodies, HTML cells and XML attributes.

    The forms are PostgreSQL's text output where it is friendly: NULL ``''``; booleans
    ``true``/``false`` (as ``bool::text``); ``numeric`` in plain notation with all its digits;
    floats as the shortest text that reads back the same (``1``, ``0.1``, ``1e+20``,
    ``NaN``, ``Infinity``); ``bytea`` as ``\\x`` and hex; timestamps ISO 8601 with a space
    (``2024-05-01 12:30:00+02:00``), dates and times ISO 8601; intervals as PostgreSQL prints
    them (``1 day 02:03:04``); UUIDs in the usual form; ``json``/``jsonb`` values and arrays as
    JSON text (``[1, 2]``, ``{"a": 1}``); anything else as ``str()``.
    """
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, _BINARY):
        return "\\x" + bytes(value).hex()
    if isinstance(value, datetime):
        return value.isoformat(sep=" ")
    if isinstance(value, (dict, list, tuple)):
        return _JSON_TEXT.value(value)
    return _scalar_text(value)


def _scalar_text(value: object) -> str:
    """Text of a number, date, time, interval, UUID or other scalar."""
    if isinstance(value, float):
        return _float_text(value)
    if isinstance(value, Decimal):
        return _decimal_text(value)
    if isinstance(value, (date, time)):
        return value.isoformat()
    if isinstance(value, timedelta):
        return _interval_text(value)
    if isinstance(value, UUID):
        return str(value)
    return str(value)


def _float_text(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "Infinity" if value > 0 else "-Infinity"
    text = repr(value)
    return text[:-2] if text.endswith(".0") else text


def _decimal_text(value: Decimal) -> str:
    if value.is_nan():
        return "NaN"
    if value.is_infinite():
        return "Infinity" if value > 0 else "-Infinity"
    return format(value, "f")


def _interval_text(value: timedelta) -> str:
    """PostgreSQL's default interval output, e.g. ``1 day 02:03:04``, ``-2 days +22:00:00``."""
    hours, rest = divmod(value.seconds, 3600)
    clock = f"{hours:02}:{rest // 60:02}:{rest % 60:02}"
    if value.microseconds:
        clock += f".{value.microseconds:06}".rstrip("0")
    if not value.days:
        return clock
    days = f"{value.days} day{'' if value.days == 1 else 's'}"
    if not (value.seconds or value.microseconds):
        return days
    return f"{days} {'+' if value.days < 0 else ''}{clock}"


# --- RAW -------------------------------------------------------------------------------------


def _render_raw(columns: list[str], rows: list[Row]) -> bytes:
    if not columns:
        return b""
    return b"".join(_raw_bytes(row[0]) for row in rows)


def _raw_bytes(value: object) -> bytes:
    if isinstance(value, _BINARY):
        return bytes(value)
    return text_value(value).encode("utf-8", "replace")


# --- HTML ------------------------------------------------------------------------------------


def _html(text: str) -> str:
    """Escaped for HTML text and attribute values, with XML-forbidden characters replaced."""
    return html.escape(_NOT_XML.sub("\ufffd", text), quote=True)


def _document(title: str, body: list[str]) -> bytes:
    """An HTML document around ``body`` lines; ``title`` and ``body`` are already escaped."""
    head = ['<meta charset="utf-8">', f"<title>{title}</title>"]
    lines = ["<!DOCTYPE html>", "<html>", "<head>", *head, "</head>", "<body>", *body]
    lines += ["</body>", "</html>"]
    return ("\n".join(lines) + "\n").encode("utf-8", "replace")


def _render_html(columns: list[str], rows: list[Row]) -> bytes:
    header = "".join(f"<th>{_html(name)}</th>" for name in columns)
    lines = ["<table>", f"<thead><tr>{header}</tr></thead>", "<tbody>"]
    for row in rows:
        cells = "".join(f"<td>{_html(text_value(value))}</td>" for value in row)
        lines.append(f"<tr>{cells}</tr>")
    lines += ["</tbody>", "</table>"]
    return _document("Result", lines)


# --- XML -------------------------------------------------------------------------------------


def _render_xml(columns: list[str], rows: list[Row]) -> bytes:
    document = _xml_document(rows)
    if document is not None:
        return document.encode("utf-8", "replace")
    names = _unique([xml_name(name) for name in columns])
    parts = ['<?xml version="1.0" encoding="UTF-8"?>\n<root>']
    for row in rows:
        pairs = [(name, value) for name, value in zip(names, row, strict=False) if value is not None]
        attributes = "".join(f' {name}="{_xml_attribute(value)}"' for name, value in pairs)
        parts.append(f"<row{attributes}/>")
    parts.append("</root>\n")
    return "".join(parts).encode("utf-8")


def _xml_document(rows: list[Row]) -> str | None:
    """The single value of a one-row, one-column result, if it is a well-formed XML document."""
    if len(rows) != 1 or len(rows[0]) != 1:
        return None
    value = rows[0][0]
    if not isinstance(value, str) or not value.lstrip().startswith("<"):
        return None
    try:
        ET.fromstring(value)
    except ET.ParseError:
        return None
    return value


def _xml_attribute(value: object) -> str:
    """A value as the text of a double-quoted XML attribute; ``bytea`` as base64."""
    if isinstance(value, _BINARY):
        return base64.b64encode(bytes(value)).decode("ascii")
    text = _NOT_XML.sub("\ufffd", text_value(value))
    return _ATTRIBUTE_SPECIAL.sub(lambda m: _ATTRIBUTE_ESCAPES[m.group()], text)


def xml_name(name: str) -> str:
    """A column (or service) name as an XML name: characters not allowed there become ``_xHHHH_``.

    The colon is encoded too (it would mean a namespace), and so is an ``_`` that starts
    something looking like an escape, so that the encoding can be undone.
    """
    if not name:
        return "_"
    out: list[str] = []
    for index, char in enumerate(name):
        if _name_char_ok(char, index == 0) and not _ESCAPE_LIKE.match(name, index):
            out.append(char)
        else:
            code = ord(char)
            out.append(f"_x{code:04X}_" if code <= 0xFFFF else f"_x{code:08X}_")
    return "".join(out)


@lru_cache(maxsize=4096)
def _name_char_ok(char: str, first: bool) -> bool:
    """Whether ``char`` may stand in an XML name (first or later) for every XML 1.0 parser.

    The fifth edition of XML 1.0 allows more name characters than the fourth, which expat (so
    Python and Firefox) still implements; a character is kept only if both take it, and expat
    itself is asked rather than copying its tables.
    """
    if not (_NAME_START_RE if first else _NAME_CHAR_RE).fullmatch(char):
        return False
    if char.isascii():
        return True
    parser = xml.parsers.expat.ParserCreate()
    try:
        parser.Parse(f"<{char if first else 'a' + char}/>", True)
    except xml.parsers.expat.ExpatError:
        return False
    return True


def _unique(names: list[str]) -> list[str]:
    """``names`` with repeats renamed ``name_2``, ``name_3``..., avoiding every name in use."""
    taken = set(names)
    seen: set[str] = set()
    result: list[str] = []
    for name in names:
        unique, counter = name, 1
        while unique in seen or (unique != name and unique in taken):
            counter += 1
            unique = f"{name}_{counter}"
        seen.add(unique)
        result.append(unique)
    return result


# --- JSON ------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=256)
def _json_keys(columns: tuple[str, ...]) -> tuple[str, ...]:
    """The JSON member names of a result's columns (a service's columns rarely change)."""
    return tuple(_JSON.string(name) for name in _unique(list(columns)))


def _render_json(columns: list[str], rows: list[Row]) -> bytes:
    keys = _json_keys(tuple(columns))
    objects = []
    for row in rows:
        members = ",".join(f"{key}:{_JSON.value(value)}" for key, value in zip(keys, row, strict=False))
        objects.append("{" + members + "}")
    return ("[" + ",".join(objects) + "]").encode("utf-8", "replace")


@dataclass(frozen=True)
class _JsonWriter:
    """Writes Python values as JSON text.

    ``item`` and ``key`` are the separators; ``safe`` writes ``<``, ``>``, ``&``, U+2028 and
    U+2029 as ``\\u`` escapes.
    """

    item: str
    key: str
    safe: bool

    def string(self, text: str) -> str:
        encoded = json.dumps(text, ensure_ascii=False)
        return encoded.translate(_JSON_SAFE) if self.safe else encoded

    def member(self, key: object, value: object) -> str:
        return self.string(text_value(key)) + self.key + self.value(value)

    def value(self, value: object) -> str:
        if value is None:
            return "null"
        if isinstance(value, bool):
            return "true" if value else "false"
        if isinstance(value, int):
            return str(value)
        if isinstance(value, (float, Decimal)):
            text = _scalar_text(value)
            return f'"{text}"' if text in ("NaN", "Infinity", "-Infinity") else text
        if isinstance(value, dict):
            members = (self.member(k, v) for k, v in value.items())
            return "{" + self.item.join(members) + "}"
        if isinstance(value, (list, tuple)):
            return "[" + self.item.join(self.value(v) for v in value) + "]"
        if isinstance(value, datetime):
            return self.string(value.isoformat())
        return self.string(text_value(value))


# HTTP bodies: compact and markup-safe. Text forms: as PostgreSQL prints jsonb.
_JSON = _JsonWriter(",", ":", safe=True)
_JSON_TEXT = _JsonWriter(", ", ": ", safe=False)

_RENDERERS: dict[str, Callable[[list[str], list[Row]], bytes]] = {
    "RAW": _render_raw,
    "HTML": _render_html,
    "XML": _render_xml,
    "JSON": _render_json,
}
