"""The task panel: the module spec's front end (creation form, task list, details, demo
controls, output panel) at ``/ui`` on the REST API's port.

The page is static (``static/``: built from ``clients/typescript/panel/`` by ``make panel``)
and works against the REST API only, through the TypeScript client. Its login turns an API
token into two cookies, both HttpOnly and SameSite=Strict: the token itself, and a CSRF
token the page must echo in ``X-CSRF-Token`` on every state-changing request (checked by
:class:`bgtasks.api.middleware.TokenAuth`). ``bgtasks ui --open`` logs in with a token it
mints for the panel (``#token=`` in the link's fragment, never sent to a server).
"""

from __future__ import annotations

import secrets
from importlib import resources
from typing import Any

from fastapi import APIRouter, Body, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field

from bgtasks.api import deps
from bgtasks.api.errors import problem, problems
from bgtasks.api.middleware import CSRF_COOKIE, SESSION_COOKIE, cookies
from bgtasks.auth import Scope

router = APIRouter(include_in_schema=False)

#: How long a panel login lasts.
SESSION_S = 12 * 3600
_TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
          ".css": "text/css; charset=utf-8", ".svg": "image/svg+xml"}
#: Everything the page loads is its own: no CDN, no inline script, no framing.
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
       "connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'")


def _asset(name: str) -> Response:
    path = resources.files(__package__).joinpath("static", name)
    suffix = "." + name.rsplit(".", 1)[-1] if "." in name else ""
    if "/" in name or name.startswith(".") or suffix not in _TYPES or not path.is_file():
        return problem(404, "Not Found", f"no panel asset {name!r}")
    return Response(path.read_bytes(), media_type=_TYPES[suffix],
                    headers={"Content-Security-Policy": CSP, "X-Content-Type-Options": "nosniff",
                             "Referrer-Policy": "no-referrer", "Cache-Control": "no-cache"})


@router.get("/ui")
@router.get("/ui/")
async def page() -> Response:
    return _asset("index.html")


@router.get("/ui/assets/{name}")
async def asset(name: str) -> Response:
    return _asset(name)


class Login(BaseModel):
    model_config = ConfigDict(extra="forbid")

    token: str = Field(min_length=1, max_length=200, description="An API token (`bgtasks token create`).")


def _session_json(request: Request, name: str | None, scopes: list[str], csrf: str) -> dict[str, Any]:
    s = deps.settings(request)
    return {"name": name, "scopes": scopes, "csrf": csrf, "auth": s.api.auth != "none", "prefectUi": s.ui_url}


def _clear(response: Response) -> Response:
    for name in (SESSION_COOKIE, CSRF_COOKIE):
        response.delete_cookie(name, path="/", httponly=True, samesite="strict")
    return response


@router.post("/ui/session", responses=problems(401, 403, 422))
async def login(request: Request, body: Login = Body(...)) -> Response:
    """Log the panel in: the token becomes an HttpOnly session cookie beside a CSRF token."""
    token = await request.app.state.tokens.verify(body.token.strip())
    if token is None:
        return problem(401, "Unauthorized", "the token is unknown or revoked", [{"field": "token",
                       "message": "is unknown or revoked"}])
    if Scope.TASKS_READ not in token.scopes:
        return problem(403, "Forbidden", f"the token {token.name!r} lacks the scope tasks:read the panel needs",
                       [{"field": "token", "message": "lacks the scope tasks:read"}])
    csrf = secrets.token_urlsafe(24)
    response = JSONResponse(_session_json(request, token.name, sorted(token.scopes), csrf))
    secure = request.url.scheme == "https"
    response.set_cookie(SESSION_COOKIE, body.token.strip(), max_age=SESSION_S, path="/", httponly=True,
                        samesite="strict", secure=secure)
    response.set_cookie(CSRF_COOKIE, csrf, max_age=SESSION_S, path="/", httponly=True, samesite="strict",
                        secure=secure)
    return response


@router.get("/ui/session", responses=problems(401))
async def session(request: Request) -> Response:
    """Who the panel is logged in as (its scopes decide which controls it shows)."""
    if deps.settings(request).api.auth == "none":
        return JSONResponse(_session_json(request, None, sorted(s.value for s in Scope), ""))
    jar = cookies(request.scope)
    token = await request.app.state.tokens.verify(jar[SESSION_COOKIE]) if jar.get(SESSION_COOKIE) else None
    if token is None or not jar.get(CSRF_COOKIE):
        return _clear(problem(401, "Unauthorized", "not logged in: log in with an API token"))
    return JSONResponse(_session_json(request, token.name, sorted(token.scopes), jar[CSRF_COOKIE]))


@router.delete("/ui/session", status_code=204)
async def logout() -> Response:
    return _clear(Response(status_code=204))
