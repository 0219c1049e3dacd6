"""sessdb.client.SessionClient against the real loopback server: cookies, cookieless URLs, 302 and 307.

Services from tests/fixtures/30_soap.sql: the SOAP counters behind ``CounterService``
(cookies) and ``CookielessCounterService`` (required-url), and RAW ones: ``client/count``
(the counter, in whatever session the request has), ``client/count_url`` (required-url),
``client/moved`` (ASP.NET's answer to a cookieless POST: a new session and a 302 to its URL)
and ``client/goto`` (any status and Location).
"""

from __future__ import annotations

import aiohttp
import pytest
from yarl import URL

from sessdb import soap
from sessdb.client import Redirect, RedirectRefused, SessionClient, TooManyRedirects
from tests.fix_app import engine_of


@pytest.fixture
async def base(client) -> str:  # type: ignore[no-untyped-def]
    return str(client.make_url("/"))


@pytest.fixture
async def clients():  # type: ignore[no-untyped-def]
    """A factory of SessionClients, all closed after the test."""
    made: list[SessionClient] = []

    def factory(base_url: str, **kwargs) -> SessionClient:  # type: ignore[no-untyped-def]
        made.append(SessionClient(base_url, **kwargs))
        return made[-1]

    yield factory
    for item in made:
        await item.close()


def cookies_in(jar: aiohttp.abc.AbstractCookieJar) -> dict[str, str]:
    return {cookie.key: cookie.value for cookie in jar}


# -- cookies ---------------------------------------------------------------------------------------


async def test_one_client_keeps_its_cookie_session(client, base, clients) -> None:  # type: ignore[no-untyped-def]
    session_client = clients(base)
    results = [await session_client.call_soap("CounterService", "IncrementSessionCounter") for _ in range(3)]
    assert results == [1, 2, 3]
    assert "sessionid" in cookies_in(session_client.cookie_jar) and session_client.url_session_id is None


async def test_clients_sharing_a_jar_share_the_session_and_others_do_not(client, base, clients) -> None:  # type: ignore[no-untyped-def]
    jar = aiohttp.CookieJar(unsafe=True)
    first, second = clients(base, cookie_jar=jar), clients(base, cookie_jar=jar)
    assert await first.call_soap("CounterService", "IncrementSessionCounter") == 1
    assert await second.call_soap("CounterService", "IncrementSessionCounter") == 2
    await first.close()  # closing a client leaves the shared jar usable
    assert await second.call_soap("/cookies/IncrementSessionCounter", "IncrementSessionCounter") == 3
    assert await clients(base).call_soap("CounterService", "IncrementSessionCounter") == 1


# -- cookieless ------------------------------------------------------------------------------------


async def test_cookieless_soap_session_follows_the_307_and_keeps_the_url(client, base, clients) -> None:  # type: ignore[no-untyped-def]
    session_client = clients(base)
    results = [await session_client.call_soap("CookielessCounterService", "IncrementSessionCounter")
               for _ in range(3)]
    assert results == [1, 2, 3]
    assert not cookies_in(session_client.cookie_jar)
    assert session_client.url_session_id in {s.id for s in engine_of(client).sessions}


async def test_cookieless_get_follows_the_302(client, base, clients) -> None:  # type: ignore[no-untyped-def]
    session_client = clients(base)
    first = await session_client.get("client/count_url")
    assert first.status == 200 and first.text() == "1"
    assert first.url.path.startswith(f"/(S({session_client.url_session_id}))/")
    assert (await session_client.get("client/count_url")).text() == "2"
    assert (await session_client.get("client/count")).text() == "3", "every path of the server is in the session"
    assert not cookies_in(session_client.cookie_jar)


async def test_a_post_is_resent_with_its_body_after_a_307(client, base, clients) -> None:  # type: ignore[no-untyped-def]
    asked: list[Redirect] = []
    session_client = clients(base, confirm_redirect=asked.append)
    assert (await session_client.post("client/count_url", data={"step": "5"})).text() == "5"
    assert (await session_client.post("client/count_url", data={"step": "2"})).text() == "7"
    assert asked == [], "a same-origin 307 needs no confirmation"


async def test_an_expired_url_session_is_replaced_by_the_next_redirect(client, base, clients) -> None:  # type: ignore[no-untyped-def]
    session_client = clients(base)
    assert (await session_client.get("client/count_url")).text() == "1"
    old = session_client.url_session_id
    session_client.url_session_id = "no-such-session"
    assert (await session_client.get("client/count_url")).text() == "1"
    assert session_client.url_session_id not in (old, "no-such-session")


# -- 302 after a POST ------------------------------------------------------------------------------


async def test_a_302_after_a_post_is_followed_when_the_callback_agrees(client, base, clients) -> None:  # type: ignore[no-untyped-def]
    asked: list[Redirect] = []

    async def agree(redirect: Redirect) -> bool:
        asked.append(redirect)
        return True

    session_client = clients(base, confirm_redirect=agree)
    reply = await session_client.post("client/moved", data={"target": "client/count", "step": "3"})
    assert reply.status == 200 and reply.text() == "3", "the POST and its body went to the new URL"
    [redirect] = asked
    assert redirect.status == 302 and redirect.method == "POST"
    assert redirect.location.path == f"/(S({session_client.url_session_id}))/client/count"
    assert (await session_client.post("client/count")).text() == "4"


@pytest.mark.parametrize("callback", [None, lambda redirect: False], ids=["no callback", "refusing callback"])
async def test_a_302_after_a_post_is_not_followed_when_refused(client, base, clients, callback) -> None:  # type: ignore[no-untyped-def]
    session_client = clients(base, confirm_redirect=callback)
    with pytest.raises(RedirectRefused) as info:
        await session_client.post("client/moved", data={"target": "client/count"})
    location = info.value.redirect.location
    assert info.value.redirect.status == 302 and location.path.startswith("/(S(")
    assert session_client.url_session_id is None
    # nothing was re-sent: the session the 302 named has never counted
    assert (await clients(base).get(location)).text() == "1"


async def test_a_302_after_a_get_is_followed_without_asking(client, base, clients) -> None:  # type: ignore[no-untyped-def]
    session_client = clients(base, confirm_redirect=lambda redirect: pytest.fail("asked"))
    reply = await session_client.get("client/goto", params={"status": "302", "location": "/client/count"})
    assert reply.status == 200 and reply.text() == "1"


async def test_a_303_turns_a_post_into_a_get(client, base, clients) -> None:  # type: ignore[no-untyped-def]
    session_client = clients(base)
    reply = await session_client.post("client/goto", data={"status": "303", "location": "/client/count?step=9"})
    assert reply.text() == "9"


async def test_a_307_to_another_origin_asks_before_resending_the_body(client, base, clients) -> None:  # type: ignore[no-untyped-def]
    other = URL(base).with_host("localhost")
    asked: list[Redirect] = []
    session_client = clients(base, confirm_redirect=lambda redirect: asked.append(redirect) or False)
    with pytest.raises(RedirectRefused):
        await session_client.post("client/goto", data={"status": "307", "location": str(other / "client/count")})
    assert [r.location.host for r in asked] == ["localhost"]


async def test_a_redirect_loop_stops(client, base, clients) -> None:  # type: ignore[no-untyped-def]
    session_client = clients(base, max_redirects=3)
    with pytest.raises(TooManyRedirects):
        await session_client.get("client/goto", params={"status": "302"})


# -- SOAP faults through the client ----------------------------------------------------------------


async def test_call_soap_raises_faults_with_sqlstate_and_status(client, base, clients) -> None:  # type: ignore[no-untyped-def]
    session_client = clients(base)
    with pytest.raises(soap.SoapFault) as info:
        await session_client.call_soap("SoapTest", "Refuse", {"why": "because"})
    fault = info.value
    assert (fault.code, fault.sqlstate, fault.message, fault.hint, fault.status) == (
        "Server", "SD999", "refused: because", "ask nicely", 500)
    assert await session_client.call_soap("SoapTest", "Rows", {"count": "2"}) == soap.Rowset(
        ("n", "label"), ((1, "r1"), (2, "r2")))
    with pytest.raises(soap.SoapFault) as missing:
        await session_client.call_soap("NoSuchService", "X")
    assert missing.value.status == 404 and missing.value.code == "Client"
