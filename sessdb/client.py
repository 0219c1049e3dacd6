"""A client for sessdb's web services that keeps its HTTP session, with cookies or without.

The seed's lessons (a .NET proxy calling an ASP.NET web service with sessions), as code:

- **Cookies.** A ``SessionClient`` keeps one cookie jar across all its calls, and clients given
  the same ``cookie_jar`` share it, so they share the session its ``sessionid`` cookie names.
  The default jar accepts cookies from IP-address hosts (``aiohttp.CookieJar(unsafe=True)``),
  as sessdb usually answers on one.
- **Cookieless sessions.** When a redirect leads to a URL whose path starts with
  ``/(S(<id>))/`` (``session => 'required-url'``), the client remembers that id
  (``url_session_id``) and puts the segment in front of the path of every later request, so
  the next call lands in the same session instead of starting a new one.
- **Redirects of a POST.** A 307 or 308 re-sends the request, method and body, to the new
  location (a 303 turns it into a GET, as HTTP says). A 301 or 302 keeps a GET or HEAD, but
  the client never silently turns a POST into a GET: it re-sends the POST only when the
  ``confirm_redirect`` callback agrees, and otherwise raises ``RedirectRefused``: re-posting
  data to a new place is the caller's decision (the seed's prompt). A redirect that would
  re-send a body to another origin (scheme, host, port) asks the callback too.

Example::

    async with SessionClient("http://127.0.0.1:8080/") as client:
        for _ in range(3):
            print(await client.call_soap("CounterService", "IncrementSessionCounter"))  # 1, 2, 3

Request bodies (``data``) must be re-sendable: bytes, str or a mapping of form fields.
"""

from __future__ import annotations

import inspect
import json
import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

from sessdb import soap

__all__ = ["Redirect", "RedirectRefused", "Reply", "SessionClient", "TooManyRedirects"]

REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
_COOKIELESS = re.compile(r"^/\(S\(([^()/]*)\)\)(?=/|$)")
_BODYLESS = frozenset({"GET", "HEAD"})

Data = bytes | str | Mapping[str, str] | None


@dataclass(frozen=True)
class Redirect:
    """A redirect the client was asked to follow: what ``confirm_redirect`` is shown."""

    status: int
    method: str
    url: URL
    location: URL


ConfirmRedirect = Callable[[Redirect], bool | Awaitable[bool]]


class RedirectRefused(Exception):
    """A redirect that would re-send a request body was not confirmed; nothing was re-sent."""

    def __init__(self, redirect: Redirect) -> None:
        super().__init__(f"{redirect.status} redirect of {redirect.method} {redirect.url} to "
                         f"{redirect.location} was not confirmed")
        self.redirect = redirect


class TooManyRedirects(Exception):
    """More redirects in a row than ``max_redirects``."""


@dataclass(frozen=True)
class Reply:
    """A whole HTTP response: status, headers, body, and the URL that answered it."""

    status: int
    headers: CIMultiDictProxy[str]
    body: bytes
    url: URL

    def text(self) -> str:
        """The body as text, in the charset the response names (UTF-8 otherwise)."""
        match = re.search(r"charset=([\w.-]+)", self.headers.get("Content-Type", ""), re.I)
        return self.body.decode(match.group(1) if match else "utf-8", errors="replace")

    def json(self) -> Any:
        """The body parsed as JSON."""
        return json.loads(self.text())


class SessionClient:
    """HTTP calls to one sessdb server that stay in their session (see the module docstring).

    ``base_url`` is the server's URL (relative paths are resolved against it);
    ``cookie_jar`` an ``aiohttp.CookieJar`` to share with other clients;
    ``confirm_redirect`` a function (plain or async) of a ``Redirect`` that says whether a
    POST may be re-sent where a 301/302 (or a redirect to another origin) points.
    """

    def __init__(self, base_url: str | URL, *, cookie_jar: aiohttp.abc.AbstractCookieJar | None = None,
                 confirm_redirect: ConfirmRedirect | None = None, max_redirects: int = 10,
                 timeout: float | None = 300.0) -> None:
        self.base_url = URL(base_url)
        self.cookie_jar = cookie_jar if cookie_jar is not None else aiohttp.CookieJar(unsafe=True)
        self.confirm_redirect = confirm_redirect
        self.max_redirects = max_redirects
        self.url_session_id: str | None = None
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._http: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> SessionClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the connections (the cookie jar stays usable by clients sharing it)."""
        if self._http is not None:
            await self._http.close()
            self._http = None

    def url_for(self, path: str | URL) -> URL:
        """The URL of ``path``, with the remembered ``/(S(id))`` segment in front of its path."""
        url = self.base_url.join(URL(path))
        if self.url_session_id is not None and url.origin() == self.base_url.origin():
            if not _COOKIELESS.match(url.path):
                path = f"/(S({self.url_session_id}))" + url.path
                url = url.with_path(path, keep_query=True)
        return url

    async def get(self, path: str | URL, *, params: Mapping[str, str] | None = None,
                  headers: Mapping[str, str] | None = None) -> Reply:
        """GET ``path``, following redirects."""
        return await self.request("GET", path, params=params, headers=headers)

    async def post(self, path: str | URL, *, data: Data = None, params: Mapping[str, str] | None = None,
                   headers: Mapping[str, str] | None = None) -> Reply:
        """POST ``data`` to ``path``; a mapping is sent as a form, bytes and str as they are."""
        return await self.request("POST", path, data=data, params=params, headers=headers)

    async def call_soap(self, path: str | URL, operation: str, params: Mapping[str, str | None] | None = None,
                        *, namespace: str = soap.NAMESPACE) -> Any:
        """Call a SOAP operation at ``path`` (a DISH or SOAP service) and return its value.

        The value is None, a Python value (typed by its ``xsi:type``) or a ``soap.Rowset``;
        a fault raises ``soap.SoapFault``, with the HTTP status, SQLSTATE, detail and hint.
        """
        headers = {"Content-Type": soap.CONTENT_TYPE, "SOAPAction": f'"{namespace}/{operation}"'}
        reply = await self.post(path, data=soap.request_envelope(operation, params, namespace), headers=headers)
        if "xml" not in reply.headers.get("Content-Type", ""):
            code = "Client" if reply.status < 500 else "Server"
            raise soap.SoapFault(code, f"HTTP {reply.status}: {reply.text()[:500]}", status=reply.status)
        return soap.parse_reply(reply.body, reply.status)

    async def request(self, method: str, path: str | URL, *, data: Data = None,
                      params: Mapping[str, str] | None = None, headers: Mapping[str, str] | None = None) -> Reply:
        """Send a request and follow its redirects as the module docstring says."""
        method = method.upper()
        url = self.url_for(path)
        if params:
            url = url.update_query(params)
        for _ in range(self.max_redirects + 1):
            reply = await self._send(method, url, data, headers)
            location = reply.headers.get("Location")
            if reply.status not in REDIRECT_STATUSES or location is None:
                return reply
            target = url.join(URL(location))
            method, data = await self._follow(Redirect(reply.status, method, url, target), data)
            self._remember_session(target)
            url = target
        raise TooManyRedirects(f"more than {self.max_redirects} redirects from {path}")

    async def _send(self, method: str, url: URL, data: Data, headers: Mapping[str, str] | None) -> Reply:
        if self._http is None:
            self._http = aiohttp.ClientSession(cookie_jar=self.cookie_jar, timeout=self._timeout)
        payload = dict(data) if isinstance(data, Mapping) else data
        async with self._http.request(method, url, data=payload, headers=headers, allow_redirects=False) as resp:
            body = await resp.read()
            return Reply(resp.status, CIMultiDictProxy(CIMultiDict(resp.headers)), body, resp.url)

    async def _follow(self, redirect: Redirect, data: Data) -> tuple[str, Data]:
        """The method and body to send to ``redirect.location``; raises ``RedirectRefused``."""
        if redirect.status == 303 and redirect.method != "HEAD":
            return "GET", None
        if redirect.method in _BODYLESS:
            return redirect.method, None
        same_origin = redirect.location.origin() == redirect.url.origin()
        if redirect.status in (307, 308) and same_origin:
            return redirect.method, data
        if not await self._confirmed(redirect):
            raise RedirectRefused(redirect)
        return redirect.method, data

    async def _confirmed(self, redirect: Redirect) -> bool:
        if self.confirm_redirect is None:
            return False
        answer = self.confirm_redirect(redirect)
        if inspect.isawaitable(answer):
            answer = await answer
        return bool(answer)

    def _remember_session(self, target: URL) -> None:
        match = _COOKIELESS.match(target.path)
        if match and target.origin() == self.base_url.origin():
            self.url_session_id = match.group(1) or None
