"""The WSDL a DISH service publishes for the SOAP services of its group (pure).

Membership is SQL Anywhere's: ``GROUP 'xyz'`` takes the SOAP services named ``xyz/...``
(not ``xyzaaa``); a NULL group takes every SOAP service. A member's operation is its name
after the group's ``xyz/`` (its whole name for a NULL group), written as an XML name
(``render.xml_name``: a ``/`` becomes ``_x002F_``). Its parameters are the statement's
``:name`` placeholders, each an optional, nillable ``xsd:string`` (variables bind as text);
its response element holds one ``<Op>Result`` of type ``xsd:anyType`` whose ``xsi:type`` says
what came back (``sessdb.soap``).

The document is WSDL 1.1, SOAP 1.1, document/literal wrapped, with one port type, one binding
and one port, whose address is the DISH service's own URL: a WSDL port has a single address,
and SOAP clients (zeep among them) bind their default proxy to the first port, so the DISH
service is the endpoint of all its operations and hands each request to the member service
its operation element names, as SQL Anywhere's DISH services do.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from sessdb.query import parse_statement
from sessdb.routing import Service
from sessdb.soap import NAMESPACE, xml_text
from sessdb.web.render import xml_name

__all__ = ["Operation", "build_wsdl", "member_suffix", "operation_names", "operations"]

_WSDL_NS = "http://schemas.xmlsoap.org/wsdl/"
_WSDL_SOAP_NS = "http://schemas.xmlsoap.org/wsdl/soap/"
_XSD_NS = "http://www.w3.org/2001/XMLSchema"
_HTTP_TRANSPORT = "http://schemas.xmlsoap.org/soap/http"

_ROWSET_TYPES = """\
<xsd:complexType name="Rowset"><xsd:sequence>\
<xsd:element name="column" type="xsd:string" minOccurs="0" maxOccurs="unbounded"/>\
<xsd:element name="row" type="tns:Row" minOccurs="0" maxOccurs="unbounded"/>\
</xsd:sequence></xsd:complexType>
<xsd:complexType name="Row"><xsd:sequence>\
<xsd:element name="value" type="xsd:anyType" minOccurs="0" maxOccurs="unbounded" nillable="true"/>\
</xsd:sequence></xsd:complexType>
"""


@dataclass(frozen=True)
class Operation:
    """One operation of a DISH service: its XML name, its SOAP service, its parameter names."""

    name: str
    service: Service
    params: tuple[str, ...]


def member_suffix(service_name: str, group: str | None) -> str | None:
    """The operation name (before XML encoding) of a service in ``group``, or None if not a member."""
    if group is None:
        return service_name
    prefix = group.strip("/") + "/"
    if service_name.startswith(prefix) and len(service_name) > len(prefix):
        return service_name[len(prefix):]
    return None


def operation_names(service_name: str) -> frozenset[str]:
    """Every operation name a SOAP service answers to: its whole name and each ``/`` suffix."""
    names = {xml_name(service_name)}
    names.update(xml_name(service_name[i + 1:]) for i, char in enumerate(service_name) if char == "/")
    return frozenset(names)


def operations(services: Mapping[str, Service], group: str | None) -> list[Operation]:
    """The operations of a DISH service of ``group``: enabled SOAP members, sorted by name.

    A member whose statement does not parse is left out (it could not run either).
    """
    found = []
    for name in sorted(services):
        service = services[name]
        suffix = member_suffix(name, group)
        if service.type != "SOAP" or not service.enabled or suffix is None:
            continue
        try:
            params = parse_statement(service.statement or "").names
        except ValueError:
            continue
        found.append(Operation(xml_name(suffix), service, params))
    return found


def _schema(ops: Iterable[Operation]) -> str:
    lines = [f'<xsd:schema xmlns:xsd="{_XSD_NS}" xmlns:tns="{NAMESPACE}" targetNamespace="{NAMESPACE}" '
             'elementFormDefault="qualified">', _ROWSET_TYPES]
    for op in ops:
        params = "".join(f'<xsd:element name="{p}" type="xsd:string" minOccurs="0" nillable="true"/>'
                         for p in op.params)
        lines.append(f'<xsd:element name="{op.name}"><xsd:complexType><xsd:sequence>{params}'
                     "</xsd:sequence></xsd:complexType></xsd:element>")
        lines.append(f'<xsd:element name="{op.name}Response"><xsd:complexType><xsd:sequence>'
                     f'<xsd:element name="{op.name}Result" type="xsd:anyType" minOccurs="0" nillable="true"/>'
                     "</xsd:sequence></xsd:complexType></xsd:element>")
    lines.append("</xsd:schema>")
    return "\n".join(lines)


def _operation_parts(op: Operation) -> tuple[str, str, str]:
    """The messages, the port type operation and the binding operation of ``op``."""
    messages = (f'<wsdl:message name="{op.name}SoapIn"><wsdl:part name="parameters" element="tns:{op.name}"/>'
                f'</wsdl:message>\n<wsdl:message name="{op.name}SoapOut">'
                f'<wsdl:part name="parameters" element="tns:{op.name}Response"/></wsdl:message>')
    port_op = (f'<wsdl:operation name="{op.name}"><wsdl:input message="tns:{op.name}SoapIn"/>'
               f'<wsdl:output message="tns:{op.name}SoapOut"/></wsdl:operation>')
    body = '<soap:body use="literal"/>'
    binding_op = (f'<wsdl:operation name="{op.name}">'
                  f'<soap:operation soapAction="{NAMESPACE}/{op.name}" style="document"/>'
                  f"<wsdl:input>{body}</wsdl:input><wsdl:output>{body}</wsdl:output></wsdl:operation>")
    return messages, port_op, binding_op


def build_wsdl(dish_name: str, address: str, ops: list[Operation]) -> bytes:
    """The WSDL 1.1 document of a DISH service named ``dish_name`` answering at ``address``."""
    name = xml_name(dish_name)
    parts = [_operation_parts(op) for op in ops]
    lines = [
        '<?xml version="1.0" encoding="UTF-8"?>',
        f'<wsdl:definitions xmlns:wsdl="{_WSDL_NS}" xmlns:soap="{_WSDL_SOAP_NS}" xmlns:xsd="{_XSD_NS}" '
        f'xmlns:tns="{NAMESPACE}" targetNamespace="{NAMESPACE}" name="{name}">',
        f"<wsdl:types>\n{_schema(ops)}\n</wsdl:types>",
        *(messages for messages, _, _ in parts),
        f'<wsdl:portType name="{name}Soap">{"".join(p for _, p, _ in parts)}</wsdl:portType>',
        f'<wsdl:binding name="{name}Soap" type="tns:{name}Soap">'
        f'<soap:binding transport="{_HTTP_TRANSPORT}" style="document"/>{"".join(b for _, _, b in parts)}'
        "</wsdl:binding>",
        f'<wsdl:service name="{name}"><wsdl:port name="{name}Soap" binding="tns:{name}Soap">'
        f'<soap:address location="{xml_text(address)}"/></wsdl:port></wsdl:service>',
        "</wsdl:definitions>",
    ]
    return ("\n".join(lines) + "\n").encode("utf-8")
