"""Tests for sessdb.web.render: result and error bodies for RAW, HTML, XML and JSON services."""

from __future__ import annotations

import base64
import json
import xml.etree.ElementTree as ET
from datetime import date, datetime, time, timedelta, timezone
from decimal import Decimal
from html.parser import HTMLParser
from typing import Any
from uuid import UUID

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sessdb.web.render import CONTENT_TYPES, render_error, render_result, text_value

MARKUP = "<b a=\"1\" c='2'>&amp;</b>"
UID = UUID("12345678-1234-5678-1234-567812345678")
WHEN = datetime(2024, 5, 1, 12, 30, 0, 123000, tzinfo=timezone(timedelta(hours=2)))


class _Table(HTMLParser):
    """Collects the cells of the one table of an HTML document."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.rows: list[list[str]] = []
        self._cell: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "tr":
            self.rows.append([])
        elif tag in ("td", "th"):
            self._cell = []

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self._cell is not None:
            self.rows[-1].append("".join(self._cell))
            self._cell = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)


def _html_table(body: bytes) -> list[list[str]]:
    parser = _Table()
    parser.feed(body.decode("utf-8"))
    parser.close()
    return parser.rows


def _xml_rows(body: bytes) -> list[dict[str, str]]:
    root = ET.fromstring(body)
    assert root.tag == "root"
    assert all(row.tag == "row" for row in root)
    return [dict(row.attrib) for row in root]


def _json(body: bytes) -> Any:
    return json.loads(body.decode("utf-8"))


# --- text_value ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (None, ""),
        ("héllo ✓", "héllo ✓"),
        (True, "true"),
        (False, "false"),
        (42, "42"),
        (-7, "-7"),
        (1.0, "1"),
        (0.1, "0.1"),
        (1e20, "1e+20"),
        (float("nan"), "NaN"),
        (float("inf"), "Infinity"),
        (float("-inf"), "-Infinity"),
        (Decimal("12345678901234567890.123456789"), "12345678901234567890.123456789"),
        (Decimal("0.0000001"), "0.0000001"),
        (Decimal("1.50"), "1.50"),
        (Decimal("NaN"), "NaN"),
        (Decimal("-Infinity"), "-Infinity"),
        (b"\x00\xffA", "\\x00ff41"),
        (memoryview(b"ab"), "\\x6162"),
        (date(2024, 5, 1), "2024-05-01"),
        (WHEN, "2024-05-01 12:30:00.123000+02:00"),
        (datetime(2024, 5, 1, 8, 0), "2024-05-01 08:00:00"),
        (time(8, 5, 3), "08:05:03"),
        (timedelta(0), "00:00:00"),
        (timedelta(days=1), "1 day"),
        (timedelta(days=3, hours=2, minutes=3, seconds=4), "3 days 02:03:04"),
        (timedelta(seconds=1, microseconds=500000), "00:00:01.5"),
        (timedelta(hours=-2), "-1 days +22:00:00"),
        (UID, "12345678-1234-5678-1234-567812345678"),
        ({"a": [1, None, True]}, '{"a": [1, null, true]}'),
        ([1, 2], "[1, 2]"),
        ([Decimal("1.10"), date(2020, 1, 2)], '[1.10, "2020-01-02"]'),
    ],
)
def test_text_value(value: object, text: str) -> None:
    assert text_value(value) == text


# --- RAW -------------------------------------------------------------------------------------


def test_raw_concatenates_first_column() -> None:
    body, ctype = render_result("RAW", ["a", "b"], [("x", 1), (None, 2), ("é", 3), (4, 4)])
    assert (body, ctype) == ("xé4".encode(), "text/plain; charset=utf-8")


def test_raw_bytea_is_sent_as_bytes() -> None:
    body, _ = render_result("raw", ["data"], [(b"\x00\xff",), (memoryview(b"\x01"),), (bytearray(b"\x02"),)])
    assert body == b"\x00\xff\x01\x02"


def test_raw_markup_and_scalars_unchanged() -> None:
    rows = [(MARKUP,), (True,), (Decimal("1.5"),), (WHEN,)]
    body, _ = render_result("RAW", ["v"], rows)
    assert body.decode() == MARKUP + "true1.52024-05-01 12:30:00.123000+02:00"


def test_raw_empty() -> None:
    assert render_result("RAW", ["a"], []) == (b"", "text/plain; charset=utf-8")
    assert render_result("RAW", [], [])[0] == b""


# --- HTML ------------------------------------------------------------------------------------


def test_html_document_with_one_table() -> None:
    body, ctype = render_result("HTML", ["id", "name"], [(1, "ann"), (2, None)])
    assert ctype == "text/html; charset=utf-8"
    text = body.decode()
    assert text.startswith("<!DOCTYPE html>")
    assert text.count("<table>") == 1
    assert _html_table(body) == [["id", "name"], ["1", "ann"], ["2", ""]]


def test_html_escapes_markup_in_names_and_values() -> None:
    body, _ = render_result("HTML", [MARKUP], [(MARKUP,)])
    assert "<b a=" not in body.decode()
    assert _html_table(body) == [[MARKUP], [MARKUP]]


def test_html_values() -> None:
    rows = [(True, False, b"\x01", Decimal("2.50"), "ü ✓ 😀", 3.5, UID)]
    body, _ = render_result("HTML", list("abcdefg"), rows)
    assert _html_table(body)[1] == ["true", "false", "\\x01", "2.50", "ü ✓ 😀", "3.5", str(UID)]


def test_html_no_rows() -> None:
    body, _ = render_result("HTML", ["a"], [])
    assert _html_table(body) == [["a"]]


# --- XML -------------------------------------------------------------------------------------


def test_xml_rows_as_attributes() -> None:
    body, ctype = render_result("XML", ["id", "name"], [(1, "ann"), (2, None)])
    assert ctype == "text/xml; charset=utf-8"
    assert body.startswith(b'<?xml version="1.0" encoding="UTF-8"?>')
    assert b'<root><row id="1" name="ann"/><row id="2"/></root>' in body
    assert _xml_rows(body) == [{"id": "1", "name": "ann"}, {"id": "2"}]


def test_xml_escapes_markup_quotes_and_whitespace() -> None:
    value = MARKUP + "\ttab\nnewline\r\n"
    body, _ = render_result("XML", ["v"], [(value,)])
    assert _xml_rows(body) == [{"v": value}]


def test_xml_replaces_characters_xml_cannot_carry() -> None:
    body, _ = render_result("XML", ["v"], [("a\x00b\x01c\x1fd\ufffe",)])
    assert _xml_rows(body) == [{"v": "a\ufffdb\ufffdc\ufffdd\ufffd"}]


def test_xml_values() -> None:
    rows = [(True, False, b"\x00\xff", Decimal("1e-7"), "ü ✓ 😀", 2.0, WHEN, [1, "<"])]
    body, _ = render_result("XML", list("abcdefgh"), rows)
    assert _xml_rows(body) == [
        {
            "a": "true",
            "b": "false",
            "c": base64.b64encode(b"\x00\xff").decode(),
            "d": "0.0000001",
            "e": "ü ✓ 😀",
            "f": "2",
            "g": "2024-05-01 12:30:00.123000+02:00",
            "h": '[1, "<"]',
        }
    ]


def test_xml_column_names_that_are_not_xml_names() -> None:
    columns = ["?column?", "a b", "1st", "x:y", MARKUP, "_x0041_", "é", "ok-1.2"]
    body, _ = render_result("XML", columns, [tuple(range(len(columns)))])
    (row,) = _xml_rows(body)
    assert list(row) == [
        "_x003F_column_x003F_",
        "a_x0020_b",
        "_x0031_st",
        "x_x003A_y",
        "_x003C_b_x0020_a_x003D__x0022_1_x0022__x0020_c_x003D__x0027_2_x0027__x003E__x0026_amp_x003B__x003C__x002F_b_x003E_",
        "_x005F_x0041_",
        "é",
        "ok-1.2",
    ]


def test_xml_duplicate_column_names_are_made_unique() -> None:
    body, _ = render_result("XML", ["a", "a", "a_2", "a"], [(1, 2, 3, 4)])
    assert _xml_rows(body) == [{"a": "1", "a_3": "2", "a_2": "3", "a_4": "4"}]


def test_xml_no_rows() -> None:
    body, _ = render_result("XML", ["a"], [])
    assert _xml_rows(body) == []


def test_xml_document_passes_through() -> None:
    document = '<?xml version="1.0"?>\n<feed><entry id="1">x &amp; y</entry></feed>'
    body, ctype = render_result("XML", ["doc"], [(document,)])
    assert (body, ctype) == (document.encode(), "text/xml; charset=utf-8")


def test_xml_text_that_only_looks_like_a_document_is_escaped() -> None:
    body, _ = render_result("XML", ["doc"], [("<b>unclosed",)])
    assert _xml_rows(body) == [{"doc": "<b>unclosed"}]


def test_xml_document_needs_one_row_one_column() -> None:
    body, _ = render_result("XML", ["a", "b"], [("<x/>", "<y/>")])
    assert _xml_rows(body) == [{"a": "<x/>", "b": "<y/>"}]


# --- JSON ------------------------------------------------------------------------------------


def test_json_array_of_objects() -> None:
    body, ctype = render_result("JSON", ["id", "name"], [(1, "ann"), (2, None)])
    assert ctype == "application/json; charset=utf-8"
    assert _json(body) == [{"id": 1, "name": "ann"}, {"id": 2, "name": None}]


def test_json_types() -> None:
    columns = ["b", "i", "f", "d", "big", "nan", "inf", "bytes", "ts", "day", "t", "u", "j", "arr", "iv"]
    row = (
        True,
        2**70,
        0.5,
        Decimal("0.1000000000000000000000000001"),
        Decimal("12345678901234567890.5"),
        float("nan"),
        Decimal("-Infinity"),
        b"\xde\xad",
        WHEN,
        date(2024, 5, 1),
        time(1, 2, 3),
        UID,
        {"k": [1, {"n": None}], "s": MARKUP},
        [[1, 2], [3, None]],
        timedelta(days=1, hours=1),
    )
    body, _ = render_result("JSON", columns, [row])
    (obj,) = json.loads(body, parse_float=Decimal)
    assert obj == {
        "b": True,
        "i": 2**70,
        "f": Decimal("0.5"),
        "d": Decimal("0.1000000000000000000000000001"),
        "big": Decimal("12345678901234567890.5"),
        "nan": "NaN",
        "inf": "-Infinity",
        "bytes": "\\xdead",
        "ts": "2024-05-01T12:30:00.123000+02:00",
        "day": "2024-05-01",
        "t": "01:02:03",
        "u": str(UID),
        "j": {"k": [1, {"n": None}], "s": MARKUP},
        "arr": [[1, 2], [3, None]],
        "iv": "1 day 01:00:00",
    }


def test_json_escapes_markup_but_keeps_values() -> None:
    body, _ = render_result("JSON", [MARKUP], [(MARKUP + "\u2028",)])
    assert b"<" not in body and b">" not in body and b"&" not in body
    assert _json(body) == [{MARKUP: MARKUP + "\u2028"}]


def test_json_unicode_is_utf8() -> None:
    body, _ = render_result("JSON", ["v"], [("ü ✓ 😀",)])
    assert "ü ✓ 😀".encode() in body
    assert _json(body) == [{"v": "ü ✓ 😀"}]


def test_json_duplicate_column_names_are_made_unique() -> None:
    body, _ = render_result("JSON", ["?column?", "?column?", "x"], [(1, 2, 3)])
    assert _json(body) == [{"?column?": 1, "?column?_2": 2, "x": 3}]


def test_json_no_rows() -> None:
    assert render_result("JSON", ["a"], []) == (b"[]", "application/json; charset=utf-8")


# --- kinds and errors ------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["SOAP", "DISH", "CSV"])
def test_unknown_kind(kind: str) -> None:
    with pytest.raises(ValueError, match=kind):
        render_result(kind, ["a"], [(1,)])


def test_content_types() -> None:
    for kind in ("raw", "Html", "XML", "json"):
        assert render_result(kind, ["a"], [])[1] == CONTENT_TYPES[kind.upper()]


def test_json_error() -> None:
    body, ctype = render_error("JSON", 500, "22012", "division by zero", hint="check <x> & y")
    assert ctype == "application/json; charset=utf-8"
    expected = {"code": "22012", "message": "division by zero", "detail": None, "hint": "check <x> & y"}
    assert _json(body) == expected


@pytest.mark.parametrize("kind", ["RAW", "HTML", "XML", "SOAP"])
def test_html_error(kind: str) -> None:
    body, ctype = render_error(kind, 500, "P0001", MARKUP, detail="d<1>", hint="h&2")
    text = body.decode()
    assert ctype == "text/html; charset=utf-8"
    assert text.startswith("<!DOCTYPE html>")
    assert "500 Internal Server Error" in text and "P0001" in text
    assert "<b a=" not in text and "&lt;b a=&quot;1&quot; c=&#x27;2&#x27;&gt;&amp;amp;&lt;/b&gt;" in text
    assert "d&lt;1&gt;" in text and "h&amp;2" in text


def test_html_error_without_sqlstate_or_known_status() -> None:
    text = render_error("HTML", 599, None, "odd")[0].decode()
    assert "<title>599</title>" in text and "SQLSTATE" not in text and "odd" in text


# --- properties ------------------------------------------------------------------------------

_VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(),
    st.decimals(),
    st.text(),
    st.binary(max_size=8),
    st.datetimes(timezones=st.none() | st.just(timezone.utc)),
    st.timedeltas(),
    st.lists(st.integers() | st.none(), max_size=3),
)
_COLUMNS = st.lists(st.text(min_size=1, max_size=6), min_size=1, max_size=4)


@settings(max_examples=200, deadline=None)
@given(_COLUMNS, st.data())
def test_xml_and_json_always_parse(columns: list[str], data: st.DataObject) -> None:
    rows = data.draw(st.lists(st.tuples(*[_VALUES] * len(columns)), max_size=3))
    xml_body, _ = render_result("XML", columns, rows)
    root = ET.fromstring(xml_body)
    if root.tag == "root":  # else a single value that was itself a document
        assert len(root) == len(rows)
        for element, row in zip(root, rows, strict=True):
            assert len(element.attrib) == sum(value is not None for value in row)
    parsed = _json(render_result("JSON", columns, rows)[0])
    assert len(parsed) == len(rows)
    assert all(len(obj) == len(columns) for obj in parsed)
    table = _html_table(render_result("HTML", columns, rows)[0])
    assert [len(cells) for cells in table] == [len(columns)] * (len(rows) + 1)
