"""A browser cannot act for a page: the Host and Origin checks of both HTTP doors.

:class:`HostOriginGuard` is a plain ASGI middleware put in front of the Prefect server
(by :mod:`bgtasks.prefect_server`) and of the REST API. It refuses, before the app
sees anything:

- a ``Host`` header that is not one of the server's names (DNS rebinding: a page of
  ``evil.example`` whose name now resolves to 127.0.0.1 sends ``Host: evil.example``);
  an allowed name may be a network (``10.0.0.0/8``): any address in it is accepted;
- an ``Origin`` that is not one of the allowed origins (a page of another site calling
  the API from the user's browser: browsers send ``Origin`` on every cross-origin
  request, websocket handshakes and form posts included);
- a request a browser marks ``Sec-Fetch-Site: cross-site``, but for plain navigations
  (following a link to the UI).

Clients that are not browsers send no ``Origin`` and pass. HTTP answers are 400 (Host)
or 403 (origin) with a small JSON body; a refused websocket handshake is closed (403).
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from typing import Any

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
App = Callable[[Scope, Receive, Send], Awaitable[None]]


def _network(name: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network | None:
    """``name`` as an IP network when it is written as one (``10.0.0.0/8``), else None."""
    if "/" not in name:
        return None
    try:
        return ipaddress.ip_network(name, strict=False)
    except ValueError:
        return None


def host_name(host_header: str) -> str:
    """The name part of a ``Host`` header: no port, no IPv6 brackets, lower case."""
    value = host_header.strip().lower()
    if value.startswith("["):
        return value[1:].split("]", 1)[0]
    if value.count(":") == 1:
        return value.split(":", 1)[0]
    return value


def header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key == name:
            return value.decode("latin-1")
    return None


async def refuse(scope: Scope, send: Send, status: int, detail: str) -> None:
    """Answer ``status`` with ``{"detail": ...}`` (HTTP), or close the websocket handshake."""
    if scope["type"] == "websocket":
        await send({"type": "websocket.close", "code": 1008, "reason": detail[:120]})
        return
    body = json.dumps({"type": "about:blank", "title": "Forbidden" if status == 403 else "Bad Request",
                       "status": status, "detail": detail}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/problem+json"),
                            (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


class HostOriginGuard:
    """Refuse foreign ``Host`` names and foreign browser origins (see the module docstring)."""

    def __init__(self, app: App, hosts: Iterable[str], origins: Iterable[str]) -> None:
        self.app = app
        names = [h.lower().strip("[]") for h in hosts]
        self.networks = [net for net in map(_network, names) if net is not None]
        self.hosts = frozenset(n for n in names if _network(n) is None)
        self.origins = frozenset(o.rstrip("/").lower() for o in origins)

    def host_allowed(self, name: str) -> bool:
        if name in self.hosts:
            return True
        try:
            address = ipaddress.ip_address(name)
        except ValueError:
            return False
        return any(address in net for net in self.networks)

    def problem(self, scope: Scope) -> tuple[int, str] | None:
        """Why this request is refused, or None."""
        host = header(scope, b"host")
        if host is None or not self.host_allowed(host_name(host)):
            return 400, "this server does not answer to that Host name"
        origin = header(scope, b"origin")
        if origin is not None and origin.rstrip("/").lower() not in self.origins:
            return 403, "cross-origin request refused (the Origin is not allowed)"
        site = header(scope, b"sec-fetch-site")
        if site == "cross-site" and origin is None:
            navigation = (scope.get("method") in ("GET", "HEAD")
                          and header(scope, b"sec-fetch-mode") == "navigate")
            if not navigation:
                return 403, "cross-site request refused"
        return None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket") and (found := self.problem(scope)) is not None:
            await refuse(scope, send, *found)
            return
        await self.app(scope, receive, send)


__all__ = ["HostOriginGuard", "host_name", "header", "refuse"]
