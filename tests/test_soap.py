"""SOAP and DISH services through real HTTP, with zeep as the SOAP client (seed 004).

The services are in tests/fixtures/30_soap.sql: ``cookies/IncrementSessionCounter`` (session
=> 'required') behind the DISH service ``CounterService``, ``cookieless/...`` (session =>
'required-url') behind ``CookielessCounterService``, and ``soaptest/*`` behind ``SoapTest``.
zeep is synchronous: every zeep call runs in a thread (``asyncio.to_thread``) against the real
loopback server of the test client.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import datetime, timezone
from decimal import Decimal

import pytest
import requests
import zeep
import zeep.exceptions
from lxml import etree
from zeep.transports import Transport

from sessdb import soap
from tests.fix_app import engine_of

ENV = soap.ENVELOPE_NS
WSDL_NS = "http://schemas.xmlsoap.org/wsdl/"
XSD_NS = "http://www.w3.org/2001/XMLSchema"


def url_of(client, path: str) -> str:  # type: ignore[no-untyped-def]
    return str(client.make_url(path))


def zeep_client(client, dish: str, transport: Transport | None = None) -> zeep.Client:  # type: ignore[no-untyped-def]
    """A zeep client built from the DISH service's URL alone (call it in a thread)."""
    return zeep.Client(url_of(client, f"/{dish}"), transport=transport or Transport(session=requests.Session()))


async def in_thread(function, *args, **kwargs):  # type: ignore[no-untyped-def]
    return await asyncio.to_thread(function, *args, **kwargs)


async def post_envelope(client, path: str, body: bytes | str, **headers: str):  # type: ignore[no-untyped-def]
    data = body.encode() if isinstance(body, str) else body
    resp = await client.post(path, data=data, headers={"Content-Type": "text/xml; charset=utf-8", **headers})
    return resp.status, await resp.read(), resp


def fault_of(body: bytes) -> soap.SoapFault:
    with pytest.raises(soap.SoapFault) as info:
        soap.parse_reply(body)
    return info.value


# -- the seed's example ----------------------------------------------------------------------------


async def test_one_zeep_client_with_cookies_counts_1_2_3(client) -> None:  # type: ignore[no-untyped-def]
    proxy = await in_thread(zeep_client, client, "CounterService")
    results = [await in_thread(proxy.service.IncrementSessionCounter) for _ in range(3)]
    assert results == [1, 2, 3]
    assert len(engine_of(client).sessions) == 1


async def test_fresh_transports_without_shared_cookies_count_1_every_time(client) -> None:  # type: ignore[no-untyped-def]
    results = []
    for _ in range(3):
        proxy = await in_thread(zeep_client, client, "CounterService")
        results.append(await in_thread(proxy.service.IncrementSessionCounter))
    assert results == [1, 1, 1]


async def test_transports_sharing_a_cookie_jar_share_the_session(client) -> None:  # type: ignore[no-untyped-def]
    shared = requests.Session()
    first = await in_thread(zeep_client, client, "CounterService", Transport(session=shared))
    second = await in_thread(zeep_client, client, "CounterService", Transport(session=shared))
    assert await in_thread(first.service.IncrementSessionCounter) == 1
    assert await in_thread(second.service.IncrementSessionCounter) == 2
    assert await in_thread(first.service.IncrementSessionCounter) == 3


class StickyRedirectTransport(Transport):
    """A zeep transport that keeps posting to where a redirect moved it (the seed's ``webServiceUrl``).

    requests follows a 307 itself, re-sending the POST and its body; this only remembers the URL.
    """

    def __init__(self, **kwargs) -> None:  # type: ignore[no-untyped-def]
        super().__init__(**kwargs)
        self.moved: dict[str, str] = {}

    def post(self, address, message, headers):  # type: ignore[no-untyped-def]
        response = super().post(self.moved.get(address, address), message, headers)
        if response.history:
            self.moved[address] = response.url
        return response


async def test_cookieless_session_kept_by_a_client_that_follows_the_redirect(client) -> None:  # type: ignore[no-untyped-def]
    http = requests.Session()
    proxy = await in_thread(zeep_client, client, "CookielessCounterService", StickyRedirectTransport(session=http))
    results = [await in_thread(proxy.service.IncrementSessionCounter) for _ in range(3)]
    assert results == [1, 2, 3]
    assert not http.cookies, "no cookie was needed"
    assert "/(S(" in proxy.transport.moved[url_of(client, "/CookielessCounterService")]


async def test_plain_zeep_follows_the_307_but_forgets_the_session_url(client) -> None:  # type: ignore[no-untyped-def]
    """requests re-posts after the 307, so each call works, but the next one starts over."""
    proxy = await in_thread(zeep_client, client, "CookielessCounterService")
    results = [await in_thread(proxy.service.IncrementSessionCounter) for _ in range(3)]
    assert results == [1, 1, 1]


async def test_concurrent_calls_in_one_session_are_serialized_and_none_is_lost(client) -> None:  # type: ignore[no-untyped-def]
    proxy = await in_thread(zeep_client, client, "CounterService")
    assert await in_thread(proxy.service.IncrementSessionCounter) == 1
    calls = 8
    answers = await asyncio.gather(*(in_thread(proxy.service.CounterStep, pause="0.05") for _ in range(calls)))
    steps = sorted((row.value for answer in answers for row in answer.row), key=lambda values: values[0])
    assert [n for n, _, _ in steps] == list(range(2, calls + 2)), "every call counted once"
    for (_, _, finished), (_, started, _) in zip(steps, steps[1:]):
        assert started >= finished, "one call at a time in the session"
    assert len(engine_of(client).sessions) == 1


# -- the WSDL --------------------------------------------------------------------------------------


async def test_wsdl_is_xml_with_a_valid_schema_and_the_dish_url_as_endpoint(client) -> None:  # type: ignore[no-untyped-def]
    resp = await client.get("/SoapTest")
    assert resp.status == 200 and resp.content_type == "text/xml"
    wsdl = etree.fromstring(await resp.read())
    assert wsdl.tag == f"{{{WSDL_NS}}}definitions"
    etree.XMLSchema(wsdl.find(f"{{{WSDL_NS}}}types/{{{XSD_NS}}}schema"))  # compiles
    operations = wsdl.xpath("//w:portType/w:operation/@name", namespaces={"w": WSDL_NS})
    assert operations == ["AsXml", "Command", "Concrete", "Echo", "Fail", "Refuse", "Rows", "Typed", "Value"]
    address = wsdl.xpath("//s:address/@location", namespaces={"s": "http://schemas.xmlsoap.org/wsdl/soap/"})
    assert address == [url_of(client, "/SoapTest")]
    params = wsdl.xpath("//x:element[@name='Echo']//x:element/@name", namespaces={"x": XSD_NS})
    assert params == ["a", "b"]


async def test_zeep_loads_the_wsdl_without_warnings(client, caplog) -> None:  # type: ignore[no-untyped-def]
    caplog.set_level(logging.WARNING, logger="zeep")
    proxy = await in_thread(zeep_client, client, "SoapTest")
    assert not [r for r in caplog.records if r.name.startswith("zeep")]
    assert await in_thread(proxy.service.Echo, a="x", b="y") == "x|y"


async def test_a_null_group_publishes_every_soap_service(client) -> None:  # type: ignore[no-untyped-def]
    wsdl = etree.fromstring(await (await client.get("/AllSoap")).read())
    operations = wsdl.xpath("//w:portType/w:operation/@name", namespaces={"w": WSDL_NS})
    assert "cookies_x002F_IncrementSessionCounter" in operations and "soaptestOther" in operations
    proxy = await in_thread(zeep_client, client, "AllSoap")
    assert await in_thread(getattr(proxy.service, "soaptest_x002F_Echo"), a="all") == "all|NULL"


async def test_a_group_takes_only_names_under_its_slash(client) -> None:  # type: ignore[no-untyped-def]
    wsdl = etree.fromstring(await (await client.get("/SoapTest")).read())
    assert "soaptestOther" not in wsdl.xpath("//w:portType/w:operation/@name", namespaces={"w": WSDL_NS})


@contextlib.asynccontextmanager
async def extra_service(client, svcconn, name: str, **args: str):  # type: ignore[no-untyped-def]
    """A service created for one test (and dropped after it), once the engine has loaded it."""
    engine = engine_of(client)
    generation = engine.catalog.generation
    names = ", ".join(f"{key} => %s" for key in args)
    svcconn.execute(f"SELECT sessdb.create_service(name => %s, {names}, replace => true)", [name, *args.values()])
    try:
        await engine.catalog.wait_for_generation(generation)
        yield
    finally:
        svcconn.execute("SELECT sessdb.drop_service(%s)", [name])


async def test_a_new_soap_service_appears_in_the_wsdl(client, svcconn) -> None:  # type: ignore[no-untyped-def]
    async with extra_service(client, svcconn, "soaptest/Late", type="SOAP", methods="POST",
                             statement="SELECT :x::int + 1"):
        proxy = await in_thread(zeep_client, client, "SoapTest")
        assert await in_thread(proxy.service.Late, x="41") == 42


# -- requests and results --------------------------------------------------------------------------


async def test_parameters_come_from_the_envelope_ahead_of_the_query(client) -> None:  # type: ignore[no-untyped-def]
    body = soap.request_envelope("Echo", {"a": "from envelope"})
    status, reply, _ = await post_envelope(client, "/SoapTest?a=from+query&b=query+b", body)
    assert status == 200 and soap.parse_reply(reply) == "from envelope|query b"


async def test_a_nil_parameter_binds_null_and_markup_travels_escaped(client) -> None:  # type: ignore[no-untyped-def]
    body = soap.request_envelope("Echo", {"a": "<&>\"'", "b": None})
    status, reply, _ = await post_envelope(client, "/SoapTest", body)
    assert status == 200 and soap.parse_reply(reply) == "<&>\"'|NULL"


async def test_a_soap_service_answers_at_its_own_url(client) -> None:  # type: ignore[no-untyped-def]
    for operation in ("Echo", "soaptest_x002F_Echo"):
        status, reply, _ = await post_envelope(client, "/soaptest/Echo", soap.request_envelope(operation, {"a": "1"}))
        assert status == 200 and soap.parse_reply(reply) == "1|NULL"


async def test_result_shapes_through_zeep(client) -> None:  # type: ignore[no-untyped-def]
    proxy = await in_thread(zeep_client, client, "SoapTest")
    assert await in_thread(proxy.service.Value, count="1") == 1
    empty = await in_thread(proxy.service.Value, count="0")
    assert empty.column == ["n"] and empty.row == []
    rows = await in_thread(proxy.service.Rows, count="2")
    assert rows.column == ["n", "label"]
    assert [row.value for row in rows.row] == [[1, "r1"], [2, "r2"]]
    assert await in_thread(proxy.service.Command) is None
    concrete = await in_thread(proxy.service.Concrete)
    assert concrete.column == ["seven"] and [r.value for r in concrete.row] == [[7]]
    as_xml = await in_thread(proxy.service.AsXml)
    assert etree.fromstring(as_xml.encode()).xpath("/root/row/@seven") == ["7"]


async def test_typed_values_through_zeep_and_sessdb(client) -> None:  # type: ignore[no-untyped-def]
    proxy = await in_thread(zeep_client, client, "SoapTest")
    typed = await in_thread(proxy.service.Typed)
    expected = [7, Decimal("2.50"), True, None, "x<&>", datetime(2024, 5, 1, 12, 30, tzinfo=timezone.utc),
                b"\xde\xad", float("inf")]
    values = typed.row[0].value
    assert values[:8] == expected
    assert str(values[8]) == "2024-05-01"
    status, reply, _ = await post_envelope(client, "/SoapTest", soap.request_envelope("Typed"))
    rowset = soap.parse_reply(reply)
    assert rowset.columns == ("i", "d", "b", "z", "s", "t", "by", "f", "day")
    assert list(rowset.rows[0][:8]) == expected and str(rowset.rows[0][8]) == "2024-05-01"


async def test_responses_validate_against_the_wsdl_schema(client) -> None:  # type: ignore[no-untyped-def]
    wsdl = etree.fromstring(await (await client.get("/SoapTest")).read())
    schema = etree.XMLSchema(wsdl.find(f"{{{WSDL_NS}}}types/{{{XSD_NS}}}schema"))
    for operation, params in [("Echo", {"a": "x"}), ("Typed", {}), ("Rows", {"count": "3"}), ("Command", {})]:
        status, reply, _ = await post_envelope(client, "/SoapTest", soap.request_envelope(operation, params))
        assert status == 200
        body = etree.fromstring(reply).find(f"{{{ENV}}}Body")
        schema.assertValid(etree.ElementTree(body[0]))


# -- faults ----------------------------------------------------------------------------------------


async def test_a_failing_statement_is_a_server_fault_with_its_sqlstate(client) -> None:  # type: ignore[no-untyped-def]
    status, reply, resp = await post_envelope(client, "/SoapTest", soap.request_envelope("Fail"))
    assert status == 500 and resp.content_type == "text/xml"
    fault = fault_of(reply)
    assert (fault.code, fault.sqlstate, fault.message) == ("Server", "22012", "division by zero")


async def test_zeep_raises_the_fault_with_sqlstate_detail_and_hint(client) -> None:  # type: ignore[no-untyped-def]
    proxy = await in_thread(zeep_client, client, "SoapTest")
    with pytest.raises(zeep.exceptions.Fault) as info:
        await in_thread(proxy.service.Refuse, why="no")
    fault = info.value
    assert fault.code.endswith("Server") and fault.message == "refused: no"
    ns = {"s": soap.NAMESPACE}
    assert fault.detail.xpath("s:error/s:sqlstate/text()", namespaces=ns) == ["SD999"]
    assert fault.detail.xpath("s:error/s:hint/text()", namespaces=ns) == ["ask nicely"]


@pytest.mark.parametrize(
    ("body", "code", "words"),
    [
        ("", "Client", "no SOAP envelope"),
        ("<not xml", "Client", "not well-formed"),
        ("<html/>", "Client", "not a SOAP envelope"),
        ("<Envelope/>", "VersionMismatch", "SOAP 1.1"),
        ('<e:Envelope xmlns:e="http://www.w3.org/2003/05/soap-envelope"><e:Body/></e:Envelope>',
         "VersionMismatch", "SOAP 1.1"),
        (f'<e:Envelope xmlns:e="{ENV}"/>', "Client", "no Body"),
        (f'<e:Envelope xmlns:e="{ENV}"><e:Body/></e:Envelope>', "Client", "one operation element"),
        (f'<e:Envelope xmlns:e="{ENV}"><e:Body><Nope/></e:Body></e:Envelope>', "Client", "no operation 'Nope'"),
        (f'<e:Envelope xmlns:e="{ENV}"><e:Header><h e:mustUnderstand="1"/></e:Header><e:Body><Echo/></e:Body>'
         "</e:Envelope>", "MustUnderstand", "'h'"),
        (f'<!DOCTYPE x [<!ENTITY a "b">]><e:Envelope xmlns:e="{ENV}"><e:Body><Echo/></e:Body></e:Envelope>',
         "Client", "document type declaration"),
    ],
)
async def test_malformed_envelopes_are_client_faults(client, body: str, code: str, words: str) -> None:  # type: ignore[no-untyped-def]
    status, reply, _ = await post_envelope(client, "/SoapTest", body)
    assert status == 500
    fault = fault_of(reply)
    assert fault.code == code and words in fault.message and fault.sqlstate is None


async def test_a_wrong_operation_at_a_soap_services_url_is_a_client_fault(client) -> None:  # type: ignore[no-untyped-def]
    status, reply, _ = await post_envelope(client, "/soaptest/Echo", soap.request_envelope("Fail"))
    assert status == 500 and fault_of(reply).code == "Client"


async def test_a_malformed_envelope_runs_nothing_and_creates_no_session(client) -> None:  # type: ignore[no-untyped-def]
    status, _, resp = await post_envelope(client, "/CounterService", "<oops/>")
    assert status == 500 and "Set-Cookie" not in resp.headers
    assert len(engine_of(client).sessions) == 0


async def test_sessdb_errors_reach_soap_clients_as_faults_with_their_status(client, svcconn) -> None:  # type: ignore[no-untyped-def]
    """A member service that does not take POST: 405 with Allow, as a soap:Client fault."""
    async with extra_service(client, svcconn, "soaptest/GetOnly", type="SOAP", methods="GET", statement="SELECT 1"):
        status, reply, resp = await post_envelope(client, "/SoapTest", soap.request_envelope("GetOnly"))
    assert status == 405 and resp.headers["Allow"] == "GET"
    assert fault_of(reply).code == "Client"


# -- sessions without zeep -------------------------------------------------------------------------


async def test_required_url_answers_a_soap_post_with_307_and_the_session_url(client) -> None:  # type: ignore[no-untyped-def]
    body = soap.request_envelope("IncrementSessionCounter")
    resp = await client.post("/CookielessCounterService", data=body, allow_redirects=False,
                             headers={"Content-Type": "text/xml"})
    assert resp.status == 307
    location = resp.headers["Location"]
    assert location.startswith("/(S(") and location.endswith("))/CookielessCounterService")
    for expected in (1, 2):
        status, reply, _ = await post_envelope(client, location, body)
        assert status == 200 and soap.parse_reply(reply) == expected


async def test_dish_get_does_not_create_a_session(client) -> None:  # type: ignore[no-untyped-def]
    resp = await client.get("/CounterService")
    assert resp.status == 200 and "Set-Cookie" not in resp.headers
    assert len(engine_of(client).sessions) == 0


# -- the pure envelope functions -------------------------------------------------------------------


def test_parameters_keep_repeats_nil_and_inner_xml() -> None:
    body = (f'<s:Envelope xmlns:s="{ENV}" xmlns:i="http://www.w3.org/2001/XMLSchema-instance"><s:Body>'
            '<o:Op xmlns:o="urn:x"><a>1</a><a>2</a><b i:nil="true"/><c>x<d k="v">y</d></c><e/></o:Op>'
            "</s:Body></s:Envelope>")
    request = soap.parse_request(body.encode())
    assert (request.operation, request.namespace) == ("Op", "urn:x")
    assert request.params == (("a", "1"), ("a", "2"), ("b", None), ("c", 'x<d k="v">y</d>'), ("e", ""))


def test_values_survive_the_round_trip() -> None:
    request = soap.SoapRequest("Op", None, ())
    values = [0, -(2**63), Decimal("-0.001"), 1.5, float("-inf"), False, b"\x00\xff", "\r\n<&>\"", None,
              datetime(2024, 1, 2, 3, 4, 5, 600000, tzinfo=timezone.utc)]
    for value in values:
        assert soap.parse_reply(soap.result_envelope(request, None, ["v"], [(value,)])) == value
    nan = soap.parse_reply(soap.result_envelope(request, None, ["v"], [(Decimal("NaN"),)]))
    assert nan != nan
    control = soap.parse_reply(soap.result_envelope(request, None, ["v"], [("a\x01b",)]))
    assert control == "a\ufffdb", "characters XML cannot carry are replaced, the envelope stays well-formed"


async def test_a_method_the_service_does_not_take_is_a_fault_with_allow(client) -> None:  # type: ignore[no-untyped-def]
    resp = await client.get("/soaptest/Echo")
    assert resp.status == 405 and resp.headers["Allow"] == "POST"
    assert fault_of(await resp.read()).code.endswith("Client")


async def test_soap_services_take_post_by_default(svcconn) -> None:  # type: ignore[no-untyped-def]
    svcconn.execute("SELECT sessdb.create_service(name => 'soapdefault/Op', type => 'SOAP', "
                    "statement => 'SELECT 1', replace => true)")
    try:
        assert svcconn.execute("SELECT methods FROM sessdb.services WHERE name = 'soapdefault/Op'").fetchone() == ("POST",)
    finally:
        svcconn.execute("SELECT sessdb.drop_service('soapdefault/Op')")


async def test_a_dish_with_authorization_on_needs_credentials(client, svcconn) -> None:  # type: ignore[no-untyped-def]
    from tests.fix_app import engine_of

    svcconn.execute("SELECT sessdb.create_service(name => 'SecureDish', type => 'DISH', group_name => 'soaptest', "
                    "\"authorization\" => true, replace => true)")
    try:
        while "SecureDish" not in engine_of(client).catalog.services:
            await asyncio.sleep(0.01)
        resp = await client.get("/SecureDish")
        assert resp.status == 401 and "WWW-Authenticate" in resp.headers
        assert fault_of(await resp.read()).code.endswith("Client")
        envelope = ('<soap:Envelope xmlns:soap="http://schemas.xmlsoap.org/soap/envelope/"><soap:Body>'
                    '<Echo xmlns="urn:sessdb:soap"><text>x</text></Echo></soap:Body></soap:Envelope>')
        status, _, _ = await post_envelope(client, "/SecureDish", envelope)
        assert status == 401
    finally:
        svcconn.execute("SELECT sessdb.drop_service('SecureDish')")
