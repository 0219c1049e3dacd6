"""SOAP 1.1 envelopes, document/literal (pure): requests in, results and faults out, and back.

A SOAP service is one operation. Its request is ``<Body><Op><a>..</a><b>..</b></Op></Body>``:
the children of the operation element are HTTP variables named by their local names (an
``xsi:nil`` child is a NULL; a child with element content gives its inner XML as text). The
answer is ``<OpResponse><OpResult>..</OpResult></OpResponse>`` in the operation's namespace,
where ``OpResult`` is declared ``xsd:anyType`` and carries an ``xsi:type`` for what it holds:

- a statement without a result set: ``xsi:nil``;
- one column and one row: that value, typed (``xsd:long``, ``xsd:decimal``, ``xsd:double``,
  ``xsd:boolean``, ``xsd:dateTime``, ``xsd:date``, ``xsd:time``, ``xsd:base64Binary``, else
  ``xsd:string`` with the text ``render.text_value`` gives); NULL is ``xsi:nil``;
- anything else: a ``sessdb:Rowset``, the column names then one ``row`` of typed ``value``
  elements per row.

The service's ``format`` changes that: ``'CONCRETE'`` always sends a Rowset, ``'XML'`` sends
the result as the XML service would render it, in one ``xsd:string``; NULL and ``'DNET'``
choose as above. SQL errors are ``soap:Server`` faults and malformed envelopes ``soap:Client``
ones; the fault's ``detail`` holds a ``sessdb:error`` with the SQLSTATE, detail and hint.

Parsing uses expat directly, refusing document type declarations and processing
instructions (SOAP 1.1 section 3 forbids both), so no entity is ever expanded.
"""

from __future__ import annotations

import base64
import math
import re
import xml.etree.ElementTree as ET
import xml.parsers.expat
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, time
from decimal import Decimal, InvalidOperation
from typing import Any

from sessdb.web.render import render_result, text_value

__all__ = [
    "CONTENT_TYPE",
    "ENVELOPE_NS",
    "NAMESPACE",
    "Rowset",
    "SoapFault",
    "SoapRequest",
    "fault_envelope",
    "parse_reply",
    "parse_request",
    "request_envelope",
    "result_envelope",
    "xml_text",
]

ENVELOPE_NS = "http://schemas.xmlsoap.org/soap/envelope/"
ENVELOPE12_NS = "http://www.w3.org/2003/05/soap-envelope"
XSD_NS = "http://www.w3.org/2001/XMLSchema"
XSI_NS = "http://www.w3.org/2001/XMLSchema-instance"
NAMESPACE = "urn:sessdb:soap"  # the target namespace of every WSDL and of the Rowset type
CONTENT_TYPE = "text/xml; charset=utf-8"

_NIL = f"{{{XSI_NS}}}nil"
_TYPE = f"{{{XSI_NS}}}type"
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")
_TEXT_ESCAPES = {"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "\r": "&#13;"}
_TEXT_SPECIAL = re.compile('[&<>"\r]')
_BINARY = (bytes, bytearray, memoryview)


class SoapFault(Exception):
    """A SOAP fault: ``code`` is ``Client``, ``Server``, ``VersionMismatch`` or ``MustUnderstand``.

    Faults from SQL errors carry the ``sqlstate`` and PostgreSQL's ``detail`` and ``hint``.
    On the client side ``status`` is the HTTP status the fault came with.
    """

    def __init__(self, code: str, message: str, *, sqlstate: str | None = None, detail: str | None = None,
                 hint: str | None = None, status: int | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.sqlstate = sqlstate
        self.detail = detail
        self.hint = hint
        self.status = status


@dataclass(frozen=True)
class SoapRequest:
    """A parsed request: the operation element's local name and namespace, and its parameters."""

    operation: str
    namespace: str | None
    params: tuple[tuple[str, str | None], ...]


@dataclass(frozen=True)
class Rowset:
    """A result set as the client reads it back: column names and rows of typed values."""

    columns: tuple[str, ...]
    rows: tuple[tuple[Any, ...], ...]


# --- XML in -------------------------------------------------------------------------------------


@dataclass
class _Document:
    root: ET.Element
    scopes: dict[ET.Element, dict[str, str]]  # element -> prefixes in scope (for xsi:type values)


def _qualify(name: str) -> str:
    namespace, sep, local = name.rpartition("}")
    return f"{{{namespace}}}{local}" if sep else name


def _refuse(what: str):  # type: ignore[no-untyped-def]
    def handler(*_: object) -> None:
        raise SoapFault("Client", f"a SOAP message may not contain {what}")

    return handler


def _parse_xml(body: bytes) -> _Document:
    """The element tree of ``body``; raises ``SoapFault`` (Client) when it is not plain XML."""
    builder = ET.TreeBuilder()
    parser = xml.parsers.expat.ParserCreate(namespace_separator="}")
    scopes: dict[ET.Element, dict[str, str]] = {}
    stack: list[dict[str, str]] = [{}]
    pending: dict[str, str] = {}

    def start(tag: str, attrs: dict[str, str]) -> None:
        element = builder.start(_qualify(tag), {_qualify(k): v for k, v in attrs.items()})
        stack.append({**stack[-1], **pending} if pending else stack[-1])
        pending.clear()
        scopes[element] = stack[-1]

    def end(tag: str) -> None:
        builder.end(_qualify(tag))
        stack.pop()

    parser.StartElementHandler = start
    parser.EndElementHandler = end
    parser.CharacterDataHandler = builder.data
    parser.StartNamespaceDeclHandler = lambda prefix, uri: pending.__setitem__(prefix or "", uri)
    parser.StartDoctypeDeclHandler = _refuse("a document type declaration")
    parser.ProcessingInstructionHandler = _refuse("processing instructions")
    parser.buffer_text = True
    try:
        parser.Parse(body, True)
    except xml.parsers.expat.ExpatError as exc:
        raise SoapFault("Client", f"the request is not well-formed XML: {exc}") from None
    return _Document(builder.close(), scopes)


def _split(tag: str) -> tuple[str | None, str]:
    if tag.startswith("{"):
        namespace, _, local = tag[1:].partition("}")
        return namespace, local
    return None, tag


def _is_nil(element: ET.Element) -> bool:
    return element.get(_NIL) in ("true", "1")


def _inner_text(element: ET.Element) -> str | None:
    """The value of a parameter element: its text, its inner XML when it has elements, or None."""
    if _is_nil(element):
        return None
    if len(element) == 0:
        return element.text or ""
    inner = [element.text or ""] + [ET.tostring(child, encoding="unicode") for child in element]
    return "".join(inner)


def _envelope_body(document: _Document) -> ET.Element:
    """The Body of a SOAP 1.1 envelope, after the version and mustUnderstand checks."""
    namespace, local = _split(document.root.tag)
    if local != "Envelope":
        raise SoapFault("Client", f"the request is not a SOAP envelope (its root is {local!r})")
    if namespace != ENVELOPE_NS:
        raise SoapFault("VersionMismatch", f"only SOAP 1.1 envelopes ({ENVELOPE_NS}) are served")
    header = document.root.find(f"{{{ENVELOPE_NS}}}Header")
    for entry in header if header is not None else ():
        if entry.get(f"{{{ENVELOPE_NS}}}mustUnderstand") == "1":
            raise SoapFault("MustUnderstand", f"header {_split(entry.tag)[1]!r} is not understood")
    body = document.root.find(f"{{{ENVELOPE_NS}}}Body")
    if body is None:
        raise SoapFault("Client", "the SOAP envelope has no Body")
    return body


def parse_request(body: bytes) -> SoapRequest:
    """The operation and parameters of a SOAP 1.1 request; raises ``SoapFault`` when malformed."""
    if not body.strip():
        raise SoapFault("Client", "the request has no SOAP envelope (POST one as text/xml)")
    soap_body = _envelope_body(_parse_xml(body))
    operations = list(soap_body)
    if len(operations) != 1:
        raise SoapFault("Client", f"the SOAP Body must hold one operation element, not {len(operations)}")
    namespace, operation = _split(operations[0].tag)
    params = tuple((_split(child.tag)[1], _inner_text(child)) for child in operations[0])
    return SoapRequest(operation, namespace, params)


# --- XML out ------------------------------------------------------------------------------------


def xml_text(value: str) -> str:
    """``value`` as XML character data (also safe in a double-quoted attribute)."""
    return _TEXT_SPECIAL.sub(lambda m: _TEXT_ESCAPES[m.group()], _NOT_XML.sub("\ufffd", value))


def _typed(value: object) -> tuple[str, str]:
    """The ``xsi:type`` (prefixed ``xsd:``) and the text of a non-NULL value."""
    if isinstance(value, bool):
        return "xsd:boolean", "true" if value else "false"
    if isinstance(value, int):
        return "xsd:long", str(value)
    if isinstance(value, float) or (isinstance(value, Decimal) and not value.is_finite()):
        return "xsd:double", _double_text(float(value))
    if isinstance(value, Decimal):
        return "xsd:decimal", format(value, "f")
    if isinstance(value, _BINARY):
        return "xsd:base64Binary", base64.b64encode(bytes(value)).decode("ascii")
    if isinstance(value, datetime):
        return "xsd:dateTime", value.isoformat()
    if isinstance(value, date):
        return "xsd:date", value.isoformat()
    if isinstance(value, time):
        return "xsd:time", value.isoformat()
    return "xsd:string", text_value(value)


def _double_text(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "INF" if value > 0 else "-INF"
    return repr(value)


def _value_element(tag: str, value: object) -> str:
    if value is None:
        return f'<{tag} xsi:nil="true"/>'
    xsi_type, text = _typed(value)
    return f'<{tag} xsi:type="{xsi_type}">{xml_text(text)}</{tag}>'


def _rowset_element(tag: str, columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    parts = [f'<{tag} xsi:type="sessdb:Rowset">']
    parts += [f"<sessdb:column>{xml_text(name)}</sessdb:column>" for name in columns]
    for row in rows:
        values = "".join(_value_element("sessdb:value", value) for value in row)
        parts.append(f"<sessdb:row>{values}</sessdb:row>")
    parts.append(f"</{tag}>")
    return "".join(parts)


def _result_element(tag: str, fmt: str | None, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    fmt = (fmt or "").upper()
    if fmt == "XML":
        body, _ = render_result("XML", columns, rows)
        return _value_element(tag, body.decode("utf-8"))
    if not columns and fmt != "CONCRETE":
        return f'<{tag} xsi:nil="true"/>'
    if fmt != "CONCRETE" and len(columns) == 1 and len(rows) == 1:
        return _value_element(tag, rows[0][0])
    return _rowset_element(tag, columns, rows)


def _envelope(body: str, namespace: str | None = None) -> bytes:
    declarations = (f'xmlns:soap="{ENVELOPE_NS}" xmlns:xsd="{XSD_NS}" xmlns:xsi="{XSI_NS}" '
                    f'xmlns:sessdb="{NAMESPACE}"')
    if namespace is not None:
        declarations += f' xmlns:op="{xml_text(namespace)}"'
    text = (f'<?xml version="1.0" encoding="UTF-8"?>\n<soap:Envelope {declarations}>'
            f"<soap:Body>{body}</soap:Body></soap:Envelope>\n")
    return text.encode("utf-8")


def result_envelope(request: SoapRequest, fmt: str | None, columns: Sequence[str],
                    rows: Sequence[Sequence[Any]]) -> bytes:
    """The response envelope for a statement's result (see the module docstring for its shape)."""
    namespace = request.namespace or NAMESPACE
    response, result = f"op:{request.operation}Response", f"op:{request.operation}Result"
    inner = _result_element(result, fmt, columns, rows)
    return _envelope(f"<{response}>{inner}</{response}>", namespace)


def fault_envelope(fault: SoapFault) -> bytes:
    """A SOAP 1.1 Fault envelope; SQL details go in ``detail/sessdb:error``."""
    parts = [f"<faultcode>soap:{fault.code}</faultcode>", f"<faultstring>{xml_text(fault.message)}</faultstring>"]
    fields = [("sqlstate", fault.sqlstate), ("message", fault.message), ("detail", fault.detail),
              ("hint", fault.hint)]
    if fault.sqlstate is not None or fault.detail or fault.hint:
        items = "".join(f"<sessdb:{name}>{xml_text(value)}</sessdb:{name}>" for name, value in fields if value)
        parts.append(f"<detail><sessdb:error>{items}</sessdb:error></detail>")
    return _envelope("<soap:Fault>" + "".join(parts) + "</soap:Fault>")


# --- the client side ----------------------------------------------------------------------------


def request_envelope(operation: str, params: Mapping[str, str | None] | None = None,
                     namespace: str = NAMESPACE) -> bytes:
    """A document/literal request for ``operation``; a None parameter is sent as ``xsi:nil``."""
    items = []
    for name, value in (params or {}).items():
        if value is None:
            items.append(f'<op:{name} xsi:nil="true"/>')
        else:
            items.append(f"<op:{name}>{xml_text(str(value))}</op:{name}>")
    return _envelope(f"<op:{operation}>{''.join(items)}</op:{operation}>", namespace)


def parse_reply(body: bytes, status: int | None = None) -> Any:
    """The value a response envelope carries (None, a Python value or a ``Rowset``).

    Raises ``SoapFault`` for a Fault (with ``status``), or a ``Client`` one for a body that
    is not a SOAP response.
    """
    document = _parse_xml(body)
    soap_body = _envelope_body(document)
    fault = soap_body.find(f"{{{ENVELOPE_NS}}}Fault")
    if fault is not None:
        raise _fault_from(fault, status)
    response = next(iter(soap_body), None)
    result = next(iter(response), None) if response is not None else None
    if result is None:
        return None
    return _decode(result, document.scopes)


def _fault_from(fault: ET.Element, status: int | None) -> SoapFault:
    code = (fault.findtext("faultcode") or "").rpartition(":")[2] or "Server"
    error = fault.find(f"detail/{{{NAMESPACE}}}error")

    def field(name: str) -> str | None:
        return error.findtext(f"{{{NAMESPACE}}}{name}") if error is not None else None

    return SoapFault(code, fault.findtext("faultstring") or "", sqlstate=field("sqlstate"),
                     detail=field("detail"), hint=field("hint"), status=status)


def _decode(element: ET.Element, scopes: dict[ET.Element, dict[str, str]]) -> Any:
    if _is_nil(element):
        return None
    prefix, _, local = (element.get(_TYPE) or "").rpartition(":")
    namespace = scopes.get(element, {}).get(prefix)
    if namespace == NAMESPACE and local == "Rowset":
        columns = tuple(c.text or "" for c in element.findall(f"{{{NAMESPACE}}}column"))
        rows = tuple(tuple(_decode(v, scopes) for v in row) for row in element.findall(f"{{{NAMESPACE}}}row"))
        return Rowset(columns, rows)
    text = element.text or ""
    if namespace != XSD_NS:
        return text
    return _from_xsd(local, text)


def _from_xsd(local: str, text: str) -> Any:
    """A Python value for the text of an ``xsd:`` typed element (the types ``_typed`` writes)."""
    try:
        if local in ("long", "int", "integer", "short"):
            return int(text)
        if local == "decimal":
            return Decimal(text)
        if local == "double":
            return float({"INF": "inf", "-INF": "-inf"}.get(text, text))
        if local == "boolean":
            return text in ("true", "1")
        if local == "base64Binary":
            return base64.b64decode(text)
        if local == "dateTime":
            return datetime.fromisoformat(text)
        if local == "date":
            return date.fromisoformat(text)
        if local == "time":
            return time.fromisoformat(text)
    except (ValueError, InvalidOperation):
        return text
    return text
