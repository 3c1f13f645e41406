"""The REST API's errors: RFC 9457 problem documents, and what each exception becomes.

Every error answer is ``application/problem+json`` whose ``errors`` name each bad field.
A failure of the Prefect server is 503 with ``Retry-After`` (nothing was written, or the
write may be retried); a request of bgtasks that Prefect refused is logged without its
body (which carries task data) and answered 500.
"""

from __future__ import annotations

import logging
from http import HTTPStatus
from typing import Any

import httpx
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from prefect.exceptions import PrefectHTTPStatusError
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from bgtasks.errors import FieldProblem, InvalidTask, TaskConflict, TaskNotFound
from bgtasks.models import errors_from
from mobile_push.registry import DeviceConflict, DeviceNotFound
from mobile_push.reports import ReportRejected

PROBLEM = "application/problem+json"
#: Seconds a client is asked to wait (``Retry-After``) when the Prefect server is busy or down.
RETRY_AFTER_S = 5
logger = logging.getLogger("bgtasks.api")


class FieldError(BaseModel):
    field: str = Field(description="JSON path of the bad field, e.g. schedule.interval.")
    message: str


class Problem(BaseModel):
    """An RFC 9457 problem document; ``errors`` names each bad field."""

    type: str = "about:blank"
    title: str
    status: int
    detail: str
    errors: list[FieldError] | None = None


class AuthError(Exception):
    """401 (no or bad token) or 403 (the token lacks the scope)."""

    def __init__(self, status: int, detail: str, scope: str | None = None) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.scope = scope


def problem(status: int, title: str, detail: str, errors: list[dict[str, str]] | None = None,
            headers: dict[str, str] | None = None) -> JSONResponse:
    body: dict[str, Any] = {"type": "about:blank", "title": title, "status": status, "detail": detail}
    if errors:
        body["errors"] = errors
    return JSONResponse(body, status_code=status, media_type=PROBLEM, headers=headers)


def field_problem(status: int, title: str, field: str, message: str) -> JSONResponse:
    """A problem about one field: ``detail`` is "field: message", ``errors`` the pair."""
    return problem(status, title, f"{field}: {message}", [{"field": field, "message": message}])


def unavailable(detail: str) -> JSONResponse:
    return problem(503, "Unavailable", detail, headers={"Retry-After": str(RETRY_AFTER_S)})


def problems(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` for these error codes."""
    return {code: {"model": Problem} for code in codes}


def ok(model: Any, code: int = 200) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` for the success answer."""
    return {code: {"model": model}}


#: The answers every authenticated route may give.
DENIED = problems(401, 403)


async def _invalid(request: Request, exc: InvalidTask) -> JSONResponse:
    return problem(422, "Invalid input", str(exc), exc.errors)


async def _field(request: Request, exc: FieldProblem) -> JSONResponse:
    return field_problem(422, "Invalid input", exc.field, exc.reason)


async def _missing(request: Request, exc: TaskNotFound) -> JSONResponse:
    return problem(404, "Task not found", str(exc))


async def _conflict(request: Request, exc: TaskConflict) -> JSONResponse:
    return problem(409, "Conflict", str(exc))


async def _no_device(request: Request, exc: DeviceNotFound) -> JSONResponse:
    return problem(404, "Device not found", str(exc))


async def _device_conflict(request: Request, exc: DeviceConflict) -> JSONResponse:
    return field_problem(409, "Conflict", exc.field, exc.reason)


async def _report_rejected(request: Request, exc: ReportRejected) -> JSONResponse:
    return problem(exc.status, {403: "Forbidden", 409: "Conflict"}[exc.status], str(exc))


async def _auth(request: Request, exc: AuthError) -> JSONResponse:
    challenge = 'Bearer realm="bgtasks"'
    if exc.scope:
        challenge += f', error="insufficient_scope", scope="{exc.scope}"'
    elif exc.status == 401 and request.headers.get("authorization"):
        challenge += ', error="invalid_token"'
    title = "Unauthorized" if exc.status == 401 else "Forbidden"
    return problem(exc.status, title, exc.detail, headers={"WWW-Authenticate": challenge})


async def _prefect_unreachable(request: Request, exc: httpx.TransportError) -> JSONResponse:
    # After the Prefect client's own retries: the server is down, or too busy to answer in time.
    return unavailable(f"the Prefect server did not answer ({type(exc).__name__}); "
                       "retry later (a write that timed out may have been applied)")


async def _prefect_error(request: Request, exc: PrefectHTTPStatusError) -> JSONResponse:
    status = exc.response.status_code
    if status < 500:
        # A request of ours Prefect refused: a bug of bgtasks. Logged without the request or
        # the answer, which carry task data (and whatever secrets a user put there).
        logger.error("the Prefect server refused %s %s with %d", exc.request.method, exc.request.url.path, status)
        return problem(500, "Internal Server Error",
                       f"the Prefect server refused a request of bgtasks ({status}); see the API's log")
    # 503 is Prefect's answer to a database that is busy (nothing was written): retryable.
    return unavailable(f"the Prefect server answered {status}; retry later")


async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    # FastAPI's own refusals (unparseable JSON body, unknown route, wrong method).
    return problem(exc.status_code, HTTPStatus(exc.status_code).phrase, str(exc.detail), headers=exc.headers)


async def _request_invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
    errors = errors_from(exc.errors(), skip=("body", "query", "path"))
    return problem(422, "Invalid input", "; ".join(f"{e['field']}: {e['message']}" for e in errors), errors)


HANDLERS: dict[type[Exception], Any] = {
    InvalidTask: _invalid,
    FieldProblem: _field,
    TaskNotFound: _missing,
    TaskConflict: _conflict,
    DeviceNotFound: _no_device,
    DeviceConflict: _device_conflict,
    ReportRejected: _report_rejected,
    AuthError: _auth,
    httpx.TransportError: _prefect_unreachable,
    PrefectHTTPStatusError: _prefect_error,
    StarletteHTTPException: _http,
    RequestValidationError: _request_invalid,
}


def install(app: FastAPI) -> None:
    for exc, handler in HANDLERS.items():
        app.add_exception_handler(exc, handler)
