"""What every request to the REST API passes before a route sees it, outermost first.

1. :class:`bgtasks.guard.HostOriginGuard`: the Host is one of ours, the Origin (if any)
   is allowed (DNS rebinding; pages of other sites).
2. CORS, only for the front ends named in ``BGTASKS_API_ALLOWED_ORIGINS``.
3. :class:`TokenAuth`: a live bearer token, checked before a byte of the body is read
   (401 otherwise); routes then check its scope (403). The task panel (``/ui``) sends
   its token in an HttpOnly, SameSite=Strict cookie instead, and a state-changing
   request with it must carry the session's CSRF token in ``X-CSRF-Token`` (403).
4. :class:`BodyLimits`: at most ``max_body_bytes`` (413), and a JSON body no deeper than
   ``max_json_depth`` with only finite numbers (400). Python's parser would answer a
   thousand nested brackets with a RecursionError (a 500), and takes ``NaN``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import urlsplit

from bgtasks.guard import App, HostOriginGuard, Receive, Scope, Send, header
from bgtasks.settings import Settings, allowed_hosts, origins

#: Routes anyone may call: liveness, the API's own description, the panel's page and its
#: login (the page holds no data: everything it shows comes from routes that need a token).
PUBLIC_PATHS = frozenset({"/health", "/openapi.json", "/docs", "/docs/oauth2-redirect", "/redoc",
                          "/ui", "/ui/", "/ui/session"})
PUBLIC_PREFIXES = ("/ui/assets/",)
PROBLEM = b"application/problem+json"
#: The panel's cookies: the token (HttpOnly) and the CSRF token of its session.
SESSION_COOKIE = "bgtasks_session"
CSRF_COOKIE = "bgtasks_csrf"
CSRF_HEADER = b"x-csrf-token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})

#: A JSON string, a bracket, or a non-finite number outside strings (a JSON tokenizer's view,
#: enough to count nesting; the parser still checks everything else).
_JSON_TOKENS = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"|[\[\]{}]|-?Infinity|NaN')


def json_problem(body: bytes, max_depth: int) -> str | None:
    """Why ``body`` is refused before parsing (too deep, non-finite numbers), or None."""
    depth = 0
    for match in _JSON_TOKENS.finditer(body):
        token = match.group()
        if token in (b"[", b"{"):
            depth += 1
            if depth > max_depth:
                return f"JSON nested deeper than {max_depth} levels"
        elif token in (b"]", b"}"):
            depth -= 1
        elif not token.startswith(b'"'):
            return "NaN and Infinity are not JSON numbers"
    return None


async def send_problem(send: Send, status: int, title: str, detail: str,
                       headers: dict[str, str] | None = None) -> None:
    body = json.dumps({"type": "about:blank", "title": title, "status": status, "detail": detail}).encode()
    raw = [(b"content-type", PROBLEM), (b"content-length", str(len(body)).encode())]
    raw += [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})


Verify = Callable[[Scope, str], Awaitable[Any]]


class TokenAuth:
    """401 for a request without a live bearer token, before its body is read.

    ``verify(scope, secret)`` returns the token's record or None; the record is put in
    ``scope["state"]["token"]`` for the routes' scope checks. ``enabled=False``
    (``BGTASKS_API_AUTH=none``) lets every request through with no token.
    """

    def __init__(self, app: App, verify: Verify, enabled: bool = True) -> None:
        self.app = app
        self.verify = verify
        self.enabled = enabled

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope["path"] if scope["type"] == "http" else ""
        if (scope["type"] != "http" or not self.enabled or path in PUBLIC_PATHS
                or path.startswith(PUBLIC_PREFIXES)):
            await self.app(scope, receive, send)
            return
        auth = header(scope, b"authorization") or ""
        scheme, _, secret = auth.partition(" ")
        if not auth and (session := cookies(scope).get(SESSION_COOKIE)):
            # The panel's cookie: a browser sends it with any request to this site, so a
            # write must also prove it comes from the panel's page (double-submit CSRF).
            if scope["method"] not in SAFE_METHODS and not csrf_ok(scope):
                await send_problem(send, 403, "Forbidden", "a request with the panel's session cookie must send "
                                   "its CSRF token in X-CSRF-Token")
                return
            scheme, secret = "bearer", session
        if scheme.lower() != "bearer" or not secret.strip():
            await send_problem(send, 401, "Unauthorized", "send a bearer token: Authorization: Bearer <token> "
                               "(create one with `bgtasks token create`)",
                               {"WWW-Authenticate": 'Bearer realm="bgtasks"'})
            return
        token = await self.verify(scope, secret.strip())
        if token is None:
            await send_problem(send, 401, "Unauthorized", "the bearer token is unknown or revoked",
                               {"WWW-Authenticate": 'Bearer realm="bgtasks", error="invalid_token"'})
            return
        scope.setdefault("state", {})["token"] = token
        await self.app(scope, receive, send)


def cookies(scope: Scope) -> dict[str, str]:
    """The request's cookies (first value of each name)."""
    from http.cookies import CookieError, SimpleCookie

    raw = header(scope, b"cookie")
    if not raw:
        return {}
    jar: SimpleCookie = SimpleCookie()
    try:
        jar.load(raw)
    except CookieError:
        return {}
    return {k: m.value for k, m in jar.items()}


def csrf_ok(scope: Scope) -> bool:
    """The ``X-CSRF-Token`` header equals the session's CSRF cookie (compared in constant time)."""
    import hmac

    sent = header(scope, CSRF_HEADER) or ""
    expected = cookies(scope).get(CSRF_COOKIE) or ""
    return bool(sent) and bool(expected) and hmac.compare_digest(sent.encode(), expected.encode())


class BodyLimits:
    """413 for a body over ``max_bytes``; 400 for JSON too deep or with NaN/Infinity."""

    def __init__(self, app: App, max_bytes: int, max_depth: int) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.max_depth = max_depth

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        too_large = f"the request body is larger than {self.max_bytes} bytes"
        declared = header(scope, b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await send_problem(send, 413, "Content Too Large", too_large)
            return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                await send_problem(send, 413, "Content Too Large", too_large)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        if "json" in (header(scope, b"content-type") or "") and (why := json_problem(body, self.max_depth)):
            await send_problem(send, 400, "Bad Request", why)
            return
        replayed = False

        async def replay() -> dict[str, Any]:
            nonlocal replayed
            if replayed:
                return await receive()  # the app waits for the disconnect
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)


__all__ = ["PUBLIC_PATHS", "SESSION_COOKIE", "CSRF_COOKIE", "TokenAuth", "BodyLimits", "cookies", "csrf_ok",
           "json_problem", "send_problem"]


def api_hosts(settings: Settings) -> list[str]:
    """Host names the API answers to: loopback, its bind address, the public URL's host, the extras."""
    extra = list(settings.api.allowed_hosts)
    if settings.push.public_url and (public := urlsplit(settings.push.public_url).hostname):
        extra.append(public)
    return allowed_hosts(settings.api.host, extra)


def install_doors(app: Any, settings: Settings) -> None:
    """The checks above, outermost last (Starlette's order): Host and Origin, CORS for the
    allowed origins, the token, the body limits."""
    from fastapi.middleware.cors import CORSMiddleware

    async def verify(scope: Any, secret: str) -> Any:
        return await scope["app"].state.tokens.verify(secret)

    app.add_middleware(BodyLimits, max_bytes=settings.api.max_body_bytes, max_depth=settings.api.max_json_depth)
    app.add_middleware(TokenAuth, verify=verify, enabled=settings.api.auth != "none")
    if settings.api.allowed_origins:
        app.add_middleware(CORSMiddleware, allow_origins=settings.api.allowed_origins,
                           allow_methods=["GET", "POST", "PUT", "DELETE"],
                           allow_headers=["Authorization", "Content-Type"], max_age=600)
    hosts = api_hosts(settings)
    app.add_middleware(HostOriginGuard, hosts=hosts,
                       origins=origins(hosts, settings.api.port, settings.api.allowed_origins))
