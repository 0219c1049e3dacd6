"""Output by service type through HTTP: RAW, HTML, XML and JSON with awkward data, and SQL errors.

One statement returns NULLs, Unicode, numbers, booleans, bytea and markup characters; each
type must carry them faithfully with the right ``Content-Type``. Bodies are parsed with real
parsers (json, ElementTree, html.parser), not compared as strings.
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from html.parser import HTMLParser

import pytest

from tests.web_helpers import ServiceMaker, services  # noqa: F401  (fixtures)

AWKWARD = """
SELECT * FROM (VALUES
    (1, 'plain', NULL::text, 1.5::numeric, true, '\\x00ff3c'::bytea, '<a href="x">&amp;</a>'),
    (2, 'Ünïcødé ✓ 𝄞 日本', 'x', 12345678901234567890.000001::numeric, false, ''::bytea, 'it''s "quoted" & <tag/>'),
    (3, NULL, '', -0.25::numeric, NULL, NULL, ']]> <!-- -->')
) AS t(id, txt, maybe, num, flag, bin, markup)
ORDER BY id
"""


class _Table(HTMLParser):
    """Collects the header and the cells of the first table."""

    def __init__(self) -> None:
        super().__init__()
        self.header: list[str] = []
        self.rows: list[list[str]] = []
        self._cell: list[str] | None = None
        self._in_head = False

    def handle_starttag(self, tag: str, attrs) -> None:  # type: ignore[no-untyped-def]
        if tag == "thead":
            self._in_head = True
        elif tag == "tr" and not self._in_head:
            self.rows.append([])
        elif tag in ("td", "th"):
            self._cell = []

    def handle_endtag(self, tag: str) -> None:
        if tag == "thead":
            self._in_head = False
        elif tag in ("td", "th") and self._cell is not None:
            text = "".join(self._cell)
            (self.header if tag == "th" else self.rows[-1]).append(text)
            self._cell = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)


async def test_json_output(client, services: ServiceMaker) -> None:
    name = await services.create(client, "JSON", AWKWARD)
    resp = await client.get(f"/{name}")
    assert resp.status == 200
    assert resp.headers["Content-Type"] == "application/json; charset=utf-8"
    text = await resp.text()
    assert "<" not in text and ">" not in text  # markup is escaped as \u003c, still the same JSON
    rows = json.loads(text)
    assert rows[0] == {"id": 1, "txt": "plain", "maybe": None, "num": 1.5, "flag": True, "bin": "\\x00ff3c",
                       "markup": '<a href="x">&amp;</a>'}
    assert rows[1]["txt"] == "Ünïcødé ✓ 𝄞 日本"
    assert rows[1]["flag"] is False and rows[1]["bin"] == "\\x"
    assert rows[1]["markup"] == "it's \"quoted\" & <tag/>"
    assert '12345678901234567890.000001' in text  # numeric keeps every digit
    assert rows[2] == {"id": 3, "txt": None, "maybe": "", "num": -0.25, "flag": None, "bin": None,
                       "markup": "]]> <!-- -->"}


async def test_json_numbers_json_and_special_values(client, services: ServiceMaker) -> None:
    name = await services.create(client, "JSON", """
        SELECT 42::int8 AS big, 2.5::float8 AS f, 'NaN'::float8 AS nan, '{"k": [1, null]}'::jsonb AS j,
               ARRAY[1, 2] AS arr, DATE '2024-02-29' AS d
    """)
    rows = await (await client.get(f"/{name}")).json()
    assert rows == [{"big": 42, "f": 2.5, "nan": "NaN", "j": {"k": [1, None]}, "arr": [1, 2], "d": "2024-02-29"}]


async def test_json_empty_result_is_an_empty_array(client, services: ServiceMaker) -> None:
    name = await services.create(client, "JSON", "SELECT 1 AS a WHERE false")
    assert await (await client.get(f"/{name}")).json() == []


async def test_json_statement_without_result_set(client, services: ServiceMaker) -> None:
    name = await services.create(client, "JSON", "DO $$ BEGIN NULL; END $$")
    resp = await client.get(f"/{name}")
    assert resp.status == 200
    assert await resp.json() == []


async def test_xml_output(client, services: ServiceMaker) -> None:
    name = await services.create(client, "XML", AWKWARD)
    resp = await client.get(f"/{name}")
    assert resp.status == 200
    assert resp.headers["Content-Type"] == "text/xml; charset=utf-8"
    root = ET.fromstring(await resp.read())
    assert root.tag == "root"
    rows = [row.attrib for row in root.findall("row")]
    assert len(rows) == 3
    assert rows[0] == {"id": "1", "txt": "plain", "num": "1.5", "flag": "true", "bin": "AP88",
                       "markup": '<a href="x">&amp;</a>'}  # NULL attributes are left out; bytea is base64
    assert rows[1]["txt"] == "Ünïcødé ✓ 𝄞 日本"
    assert rows[1]["num"] == "12345678901234567890.000001"
    assert rows[1]["markup"] == "it's \"quoted\" & <tag/>"
    assert rows[2] == {"id": "3", "maybe": "", "num": "-0.25", "markup": "]]> <!-- -->"}


async def test_xml_passes_an_xml_document_through(client, services: ServiceMaker) -> None:
    name = await services.create(client, "XML", "SELECT '<doc><item n=\"1\"/></doc>'")
    assert await (await client.get(f"/{name}")).text() == '<doc><item n="1"/></doc>'


async def test_xml_column_names_that_are_not_xml_names(client, services: ServiceMaker) -> None:
    name = await services.create(client, "XML", 'SELECT 1 AS "two words", 2 AS "1st", 3 AS ok')
    root = ET.fromstring(await (await client.get(f"/{name}")).read())
    assert root.find("row").attrib == {"two_x0020_words": "1", "_x0031_st": "2", "ok": "3"}  # type: ignore[union-attr]


async def test_html_output(client, services: ServiceMaker) -> None:
    name = await services.create(client, "HTML", AWKWARD)
    resp = await client.get(f"/{name}")
    assert resp.status == 200
    assert resp.headers["Content-Type"] == "text/html; charset=utf-8"
    text = await resp.text()
    assert text.startswith("<!DOCTYPE html>") and "</html>" in text
    assert "<tag/>" not in text and '<a href="x">' not in text  # data is escaped, never markup
    table = _Table()
    table.feed(text)
    assert table.header == ["id", "txt", "maybe", "num", "flag", "bin", "markup"]
    assert table.rows[0] == ["1", "plain", "", "1.5", "true", "\\x00ff3c", '<a href="x">&amp;</a>']
    assert table.rows[1][1] == "Ünïcødé ✓ 𝄞 日本"
    assert table.rows[2] == ["3", "", "", "-0.25", "", "", "]]> <!-- -->"]


async def test_raw_output_concatenates_first_column(client, services: ServiceMaker) -> None:
    name = await services.create(client, "RAW", AWKWARD.replace("SELECT *", "SELECT txt, id"))
    resp = await client.get(f"/{name}")
    assert resp.headers["Content-Type"] == "text/plain; charset=utf-8"
    assert await resp.text() == "plainÜnïcødé ✓ 𝄞 日本"  # NULL adds nothing


async def test_raw_output_values_as_text(client, services: ServiceMaker) -> None:
    name = await services.create(client, "RAW", "SELECT v FROM (VALUES (1, '1.50'::numeric::text), (2, true::text), "
                                                "(3, '<&>')) t(i, v) ORDER BY i")
    assert await (await client.get(f"/{name}")).text() == "1.50true<&>"


async def test_raw_bytea_goes_out_as_bytes(client, services: ServiceMaker) -> None:
    name = await services.create(client, "RAW", "SELECT b FROM (VALUES (1, '\\x00ff'::bytea), (2, '\\x0a0d'::bytea)) t(i, b) "
                                                "ORDER BY i")
    assert await (await client.get(f"/{name}")).read() == b"\x00\xff\x0a\x0d"


async def test_raw_with_application_content_type(client, services: ServiceMaker) -> None:
    name = await services.create(client, "RAW", "SELECT convert_to('<svg/>', 'UTF8') "
                                                "FROM (SELECT sa_set_http_header('Content-Type', 'image/svg+xml')) s")
    resp = await client.get(f"/{name}")
    assert resp.headers["Content-Type"] == "image/svg+xml"
    assert await resp.read() == b"<svg/>"


async def test_head_request_has_headers_and_no_body(client, services: ServiceMaker) -> None:
    name = await services.create(client, "JSON", "SELECT 1 AS a")
    resp = await client.head(f"/{name}")
    assert resp.status == 200
    assert resp.headers["Content-Type"] == "application/json; charset=utf-8"
    assert await resp.read() == b""


# --- SQL errors ------------------------------------------------------------------------------------

BOOM = "SELECT 1 / (count(*) - count(*)) AS boom FROM (SELECT '<b>&') s"


async def test_json_error_is_a_json_object(client, services: ServiceMaker) -> None:
    name = await services.create(client, "JSON", BOOM)
    resp = await client.get(f"/{name}")
    assert resp.status == 500
    assert resp.headers["Content-Type"] == "application/json; charset=utf-8"
    body = await resp.json()
    assert body["code"] == "22012"
    assert body["message"] == "division by zero"
    assert set(body) == {"code", "message", "detail", "hint"}


async def test_json_error_carries_detail_and_hint(client, services: ServiceMaker) -> None:
    name = await services.create(client, "JSON", "DO $$ BEGIN RAISE EXCEPTION USING ERRCODE = 'P0001', "
                                                 "MESSAGE = 'bad <thing>', DETAIL = 'the detail', HINT = 'a hint'; END $$")
    body = await (await client.get(f"/{name}")).json()
    assert body == {"code": "P0001", "message": "bad <thing>", "detail": "the detail", "hint": "a hint"}


@pytest.mark.parametrize("kind", ["RAW", "HTML", "XML"])
async def test_other_types_answer_errors_in_html(client, services: ServiceMaker, kind: str) -> None:
    name = await services.create(client, kind, "DO $$ BEGIN RAISE EXCEPTION USING ERRCODE = 'P0001', "
                                               "MESSAGE = 'bad <script>x</script>'; END $$")
    resp = await client.get(f"/{name}")
    assert resp.status == 500
    assert resp.headers["Content-Type"] == "text/html; charset=utf-8"
    text = await resp.text()
    assert "P0001" in text
    assert "bad &lt;script&gt;x&lt;/script&gt;" in text and "<script>" not in text


async def test_error_discards_headers_the_statement_set(client, services: ServiceMaker) -> None:
    name = await services.create(client, "JSON", "SELECT 1 / (count(*) - count(*)) AS boom "
                                                 "FROM (SELECT sa_set_http_header('Content-Type', 'image/png')) s")
    resp = await client.get(f"/{name}")
    assert resp.status == 500
    assert resp.headers["Content-Type"] == "application/json; charset=utf-8"


async def test_undefined_table_is_500_with_sqlstate(client, services: ServiceMaker) -> None:
    name = await services.create(client, "JSON", "SELECT * FROM no_such_table_here")
    resp = await client.get(f"/{name}")
    assert resp.status == 500
    assert (await resp.json())["code"] == "42P01"
