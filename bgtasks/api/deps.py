"""What the routes share: who is calling (the token :class:`TokenAuth` checked), the scope a
route needs, and the objects the app opened at start (manager, registry, ledger, settings)."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import Depends, Request, Security
from fastapi.exceptions import RequestValidationError
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from bgtasks.api.errors import AuthError
from bgtasks.auth import ApiToken, Scope
from bgtasks.models import NUL_MESSAGE, nul_path
from bgtasks.settings import Settings

bearer = HTTPBearer(auto_error=False, description="A token from `bgtasks token create`.")


def authenticated(request: Request) -> ApiToken | None:
    """The caller's token, checked by :class:`bgtasks.api.middleware.TokenAuth` before
    anything else (None when authentication is off)."""
    return getattr(request.state, "token", None)


def requires(scope: Scope) -> Callable[..., Awaitable[ApiToken | None]]:
    """A dependency: the caller's token, which must carry ``scope`` (403 naming it)."""

    # ``creds`` is read by TokenAuth; it is declared here so OpenAPI documents the bearer scheme.
    async def check(request: Request,
                    creds: HTTPAuthorizationCredentials | None = Security(bearer)) -> ApiToken | None:
        token = authenticated(request)
        if token is None:
            return None
        if scope not in token.scopes:
            raise AuthError(403, f"the token {token.name!r} lacks the scope {scope.value}", scope.value)
        return token

    return check


READ = [Depends(requires(Scope.TASKS_READ))]
WRITE = [Depends(requires(Scope.TASKS_WRITE))]
MANAGE_DEVICES = [Depends(requires(Scope.DEVICES_WRITE))]


def manager(request: Request) -> Any:
    """The app's :class:`bgtasks.manager.TaskManager`."""
    return request.app.state.manager


def devices(request: Request) -> Any:
    """The app's :class:`mobile_push.registry.DeviceRegistry`."""
    return request.app.state.devices


def ledger(request: Request) -> Any:
    """The app's :class:`mobile_push.reports.RunLedger`."""
    return request.app.state.ledger


def settings(request: Request) -> Settings:
    return request.app.state.settings


async def refuse_nul(request: Request) -> None:
    """422 for a NUL character anywhere in the path, the query or a JSON body, naming
    where (PostgreSQL cannot store one; see :func:`bgtasks.models.nul_path`)."""
    found: tuple[Any, ...] | None = None
    if (where := nul_path(dict(request.path_params))) is not None:
        found = ("path", *where)
    elif (where := nul_path(dict(request.query_params))) is not None:
        found = ("query", *where)
    elif "json" in request.headers.get("content-type", ""):
        try:
            body = json.loads(await request.body())
        except ValueError:
            body = None  # FastAPI answers 400 for it
        if (where := nul_path(body)) is not None:
            found = ("body", *where)
    if found is not None:
        raise RequestValidationError([{"loc": found, "msg": NUL_MESSAGE, "type": "value_error.nul"}])
