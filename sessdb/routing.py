"""Routing a URL path to a service, as SQL Anywhere does it (pure).

Exact name first; otherwise the longest ``/``-delimited prefix whose service has ``URL ON`` or
``URL ELEMENTS``; otherwise the ``root`` service; otherwise nothing. A disabled service is
not routed to (404). An optional leading database-name segment is accepted, as in SQL
Anywhere's ``http://host/dbname/service`` URLs.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

MAX_URL_ELEMENTS = 10


@dataclass(frozen=True)
class Service:
    """One row of ``sessdb.services``."""

    name: str
    type: str
    statement: str | None
    url: str = "OFF"
    methods: tuple[str, ...] = ("GET", "HEAD", "POST")
    authorization: bool = False
    user_name: str | None = None
    session: str = "optional"
    enabled: bool = True
    group_name: str | None = None
    format: str | None = None


@dataclass(frozen=True)
class Route:
    """A resolved request: the service and the HTTP variables its URL mode adds."""

    service: Service
    url_vars: tuple[tuple[str, str], ...]


class UrlTooDeep(ValueError):
    """A ``URL ELEMENTS`` path with more than ten elements."""


def resolve(services: Mapping[str, Service], path: str, dbname: str | None = None) -> Route | None:
    """The route for ``path`` (already percent-decoded, with or without a leading ``/``).

    Returns None when nothing answers (the caller sends 404); raises ``UrlTooDeep`` when a
    ``URL ELEMENTS`` service gets more than ten elements.
    """
    trimmed = path.strip("/")
    route = _match(services, trimmed)
    if route is None and dbname and (trimmed == dbname or trimmed.startswith(dbname + "/")):
        route = _match(services, trimmed[len(dbname) + 1:])
    if route is None:
        root = services.get("root")
        if root is not None and root.enabled:
            # the whole path is the rest: a URL ON root sees it in ``url``
            return _route(root, trimmed, with_rest=root.url != "OFF")
    return route


def _match(services: Mapping[str, Service], trimmed: str) -> Route | None:
    exact = services.get(trimmed)
    if exact is not None:
        return _route(exact, "", with_rest=exact.url != "OFF") if exact.enabled else None
    segments = trimmed.split("/")
    for cut in range(len(segments) - 1, 0, -1):
        service = services.get("/".join(segments[:cut]))
        if service is not None and service.url != "OFF":
            return _route(service, "/".join(segments[cut:]), with_rest=True) if service.enabled else None
    return None


def _route(service: Service, rest: str, *, with_rest: bool) -> Route:
    if not with_rest:
        return Route(service, ())
    if service.url == "ON":
        return Route(service, (("url", rest),))
    elements = rest.split("/") if rest else []
    if len(elements) > MAX_URL_ELEMENTS:
        raise UrlTooDeep(f"more than {MAX_URL_ELEMENTS} URL elements for service {service.name!r}")
    return Route(service, tuple((f"url{i}", value) for i, value in enumerate(elements, 1)))
