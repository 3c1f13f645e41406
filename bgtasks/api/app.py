"""Routes: every task operation of :class:`bgtasks.manager.TaskManager`, and health.

JSON bodies are the spec's shapes (``CreateTaskOptions`` in, ``BackgroundTask``,
``TaskResult`` out). Errors are RFC 9457 problem documents
(``application/problem+json``) whose ``errors`` name each bad field.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from http import HTTPStatus
from typing import Any, Literal
from urllib.parse import urlsplit

import httpx
from fastapi import Body, Depends, FastAPI, Query, Request, Security
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.exceptions import HTTPException as StarletteHTTPException
from prefect.exceptions import PrefectHTTPStatusError
from pydantic import BaseModel, ConfigDict, Field

from bgtasks.auth import ApiToken, Scope, TokenStore
from bgtasks.errors import InvalidTask, TaskConflict, TaskNotFound
from bgtasks.models import (
    NUL_MESSAGE,
    BackgroundTask,
    CreateTaskOptions,
    TaskPriority,
    TaskResult,
    TaskRun,
    TaskStatus,
    TaskType,
    errors_from,
    nul_path,
)
from bgtasks.api.middleware import BodyLimits, TokenAuth
from bgtasks.guard import HostOriginGuard
from bgtasks.settings import Settings, allowed_hosts, is_loopback, origins
from mobile_push.registry import Device, DeviceConflict, DeviceIn, DeviceNotFound, DeviceUpdate
from mobile_push.reports import ReportIn, ReportRejected
from mobile_push.types import Platform

PROBLEM = "application/problem+json"
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


class RunOptions(BaseModel):
    """Optional body of ``POST /tasks/{id}/run``."""

    model_config = ConfigDict(extra="forbid")

    delay_seconds: int = Field(0, ge=0, le=86400, alias="delaySeconds",
                               description="Start the run this many seconds from now.")


class RunStarted(BaseModel):
    run_id: str = Field(alias="runId")


class DeviceReport(BaseModel):
    """A stored device report."""

    success: bool
    reported_at: str = Field(alias="reportedAt")
    data: Any = None
    error: str | None = None
    duration_ms: int | None = Field(None, alias="durationMs")
    stop_reason: str | None = Field(None, alias="stopReason")


class Health(BaseModel):
    status: Literal["ok"]


class AuthError(Exception):
    """401 (no or bad token) or 403 (the token lacks the scope)."""

    def __init__(self, status: int, detail: str, scope: str | None = None) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.scope = scope


#: Seconds a client is asked to wait (``Retry-After``) when the Prefect server is busy or down.
RETRY_AFTER_S = 5


def problem(status: int, title: str, detail: str, errors: list[dict[str, str]] | None = None,
            headers: dict[str, str] | None = None) -> JSONResponse:
    body: dict[str, Any] = {"type": "about:blank", "title": title, "status": status, "detail": detail}
    if errors:
        body["errors"] = errors
    return JSONResponse(body, status_code=status, media_type=PROBLEM, headers=headers)


def _problems(*codes: int) -> dict[int | str, dict[str, Any]]:
    return {code: {"model": Problem} for code in codes}


def _ok(model: Any, code: int = 200) -> dict[int | str, dict[str, Any]]:
    return {code: {"model": model}}


bearer = HTTPBearer(auto_error=False, description="A token from `bgtasks token create`.")


def create_app(settings: Settings, store: Any = None) -> FastAPI:
    """The API, talking to the Prefect API named by ``settings``.

    ``store``: an opened :class:`bgtasks.store.Store` (tests); by default the API
    opens and migrates ``settings.store_url`` itself.
    """

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        from prefect.client.orchestration import get_client

        from bgtasks.manager import TaskManager
        from bgtasks.store import open_store

        from mobile_push.registry import DeviceRegistry
        from mobile_push.reports import RunLedger

        own = store is None
        db = await open_store(settings.store_url) if own else store
        app.state.tokens = TokenStore(db)
        app.state.devices = DeviceRegistry(db)
        app.state.ledger = RunLedger(db)
        try:
            async with get_client() as client:
                app.state.manager = TaskManager(client, settings.worker.pool, settings=settings)
                yield
        finally:
            if own:
                await db.close()

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

    app = FastAPI(title="bgtasks", version="1", lifespan=lifespan, dependencies=[Depends(refuse_nul)],
                  description="Background tasks for desktop and mobile apps, on Prefect. "
                  "Every route but /health needs a bearer token with the scope it names.")
    plain_openapi = app.openapi

    def openapi() -> dict[str, Any]:
        """FastAPI's document, with every error answer described as what is sent: a Problem
        as application/problem+json (also 422, which FastAPI documents as its own shape)."""
        if app.openapi_schema is None:
            doc = plain_openapi()
            for operations in doc["paths"].values():
                for op in operations.values():
                    for code, response in op.get("responses", {}).items():
                        if code.isdigit() and int(code) >= 400:
                            response["content"] = {PROBLEM: {"schema": {"$ref": "#/components/schemas/Problem"}}}
            for unused in ("HTTPValidationError", "ValidationError"):
                doc["components"]["schemas"].pop(unused, None)
            add_links(doc)
            app.openapi_schema = doc
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    install_doors(app, settings)

    @app.exception_handler(InvalidTask)
    async def _invalid(request: Request, exc: InvalidTask) -> JSONResponse:
        return problem(422, "Invalid input", str(exc), exc.errors)

    @app.exception_handler(TaskNotFound)
    async def _missing(request: Request, exc: TaskNotFound) -> JSONResponse:
        return problem(404, "Task not found", str(exc))

    @app.exception_handler(TaskConflict)
    async def _conflict(request: Request, exc: TaskConflict) -> JSONResponse:
        return problem(409, "Conflict", str(exc))

    @app.exception_handler(DeviceNotFound)
    async def _no_device(request: Request, exc: DeviceNotFound) -> JSONResponse:
        return problem(404, "Device not found", str(exc))

    @app.exception_handler(DeviceConflict)
    async def _device_conflict(request: Request, exc: DeviceConflict) -> JSONResponse:
        field, _, message = str(exc).partition(": ")
        return problem(409, "Conflict", str(exc), [{"field": field, "message": message}])

    @app.exception_handler(ReportRejected)
    async def _report_rejected(request: Request, exc: ReportRejected) -> JSONResponse:
        title = {403: "Forbidden", 409: "Conflict"}[exc.status]
        return problem(exc.status, title, str(exc))

    @app.exception_handler(AuthError)
    async def _auth(request: Request, exc: AuthError) -> JSONResponse:
        challenge = 'Bearer realm="bgtasks"'
        if exc.scope:
            challenge += f', error="insufficient_scope", scope="{exc.scope}"'
        elif exc.status == 401 and request.headers.get("authorization"):
            challenge += ', error="invalid_token"'
        title = "Unauthorized" if exc.status == 401 else "Forbidden"
        return problem(exc.status, title, exc.detail, headers={"WWW-Authenticate": challenge})

    def unavailable(detail: str) -> JSONResponse:
        return problem(503, "Unavailable", detail, headers={"Retry-After": str(RETRY_AFTER_S)})

    @app.exception_handler(httpx.TransportError)
    async def _prefect_unreachable(request: Request, exc: httpx.TransportError) -> JSONResponse:
        # After the Prefect client's own retries: the server is down, or too busy to answer in time.
        return unavailable(f"the Prefect server did not answer ({type(exc).__name__}); "
                           "retry later (a write that timed out may have been applied)")

    @app.exception_handler(PrefectHTTPStatusError)
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

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        # FastAPI's own refusals (unparseable JSON body, unknown route, wrong method).
        title = HTTPStatus(exc.status_code).phrase
        return problem(exc.status_code, title, str(exc.detail), headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _request_invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = errors_from(exc.errors(), skip=("body", "query", "path"))
        return problem(422, "Invalid input", "; ".join(f"{e['field']}: {e['message']}" for e in errors), errors)

    def authenticated(request: Request) -> ApiToken | None:
        """The caller's token, checked by :class:`TokenAuth` before anything else (None when
        authentication is off)."""
        return getattr(request.state, "token", None)

    def requires(scope: Scope) -> Callable[..., Awaitable[ApiToken | None]]:
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

    read = [Depends(requires(Scope.TASKS_READ))]
    write = [Depends(requires(Scope.TASKS_WRITE))]
    denied = _problems(401, 403)

    def mgr(request: Request) -> Any:
        return request.app.state.manager

    def task_json(task: BackgroundTask) -> JSONResponse:
        return JSONResponse(task.to_json_dict())

    @app.get("/health", responses=_ok(Health) | _problems(503))
    async def health(request: Request) -> Any:
        """Liveness of the API and its Prefect server; needs no token."""
        try:
            await mgr(request).client.api_healthcheck()
        except Exception as exc:  # noqa: BLE001 - any failure means unhealthy
            return problem(503, "Unavailable", f"the Prefect API does not answer: {type(exc).__name__}")
        return {"status": "ok"}

    @app.post("/tasks", status_code=201, dependencies=write, response_class=JSONResponse,
              responses=_ok(BackgroundTask, 201) | denied | _problems(400, 409, 413, 422))
    async def create_task(request: Request, body: CreateTaskOptions = Body(...)) -> Any:
        """Create a task from a CreateTaskOptions body; returns the BackgroundTask."""
        return JSONResponse((await mgr(request).create(body)).to_json_dict(), status_code=201)

    @app.get("/tasks", dependencies=read, responses=_ok(list[BackgroundTask]) | denied | _problems(422))
    async def list_tasks(
        request: Request,
        status: TaskStatus | None = None,
        type: TaskType | None = None,
        priority: TaskPriority | None = None,
        sort: Literal["priority", "next-run", "created", "name"] = Query("priority"),
    ) -> Any:
        tasks = await mgr(request).list(status=status, type=type, priority=priority, sort=sort)
        return JSONResponse([t.to_json_dict() for t in tasks])

    @app.get("/tasks/{task_id}", dependencies=read, responses=_ok(BackgroundTask) | denied | _problems(404))
    async def get_task(request: Request, task_id: str) -> Any:
        return task_json(await mgr(request).get(task_id))

    @app.get("/tasks/{task_id}/history", dependencies=read,
             responses=_ok(list[TaskRun]) | denied | _problems(404, 422))
    async def task_history(request: Request, task_id: str, limit: int = Query(50, ge=1, le=200)) -> Any:
        return JSONResponse([r.to_json_dict() for r in await mgr(request).history(task_id, limit=limit)])

    @app.get("/tasks/{task_id}/result", dependencies=read, responses=_ok(TaskResult) | denied | _problems(404))
    async def task_result(request: Request, task_id: str) -> Any:
        task = await mgr(request).get(task_id)
        if task.result is None:
            return problem(404, "No result yet", f"task {task_id} has no finished run")
        return JSONResponse(task.result.to_json_dict())

    @app.post("/tasks/{task_id}/run", status_code=202, dependencies=write,
              responses=_ok(RunStarted, 202) | denied | _problems(400, 404, 409, 413, 422))
    async def run_task(request: Request, task_id: str, body: RunOptions | None = Body(None)) -> Any:
        """Run the task now, or ``delaySeconds`` from now; returns the run id."""
        delay = body.delay_seconds if body else 0
        return JSONResponse({"runId": await mgr(request).run_now(task_id, delay_s=delay)}, status_code=202)

    for action in ("pause", "resume", "cancel"):
        def make(action: str) -> Any:
            async def control(request: Request, task_id: str) -> Any:
                return task_json(await getattr(mgr(request), action)(task_id))

            control.__name__ = f"{action}_task"
            control.__doc__ = {
                "pause": "No scheduled, triggered or run-now run starts until resumed.",
                "resume": "Undo pause: the schedule and triggers apply again.",
                "cancel": "Stop the task for good: pending runs cancelled, running ones stopped.",
            }[action]
            return control

        app.post(f"/tasks/{{task_id}}/{action}", dependencies=write,
                 responses=_ok(BackgroundTask) | denied | _problems(404, 409))(make(action))

    @app.delete("/tasks/{task_id}", status_code=204, dependencies=write,
                responses=denied | _problems(404))
    async def delete_task(request: Request, task_id: str) -> Response:
        await mgr(request).delete(task_id)
        return Response(status_code=204)

    # ---- devices (mobile_push) ------------------------------------------------------

    manage_devices = [Depends(requires(Scope.DEVICES_WRITE))]

    @app.post("/devices", status_code=201, dependencies=manage_devices,
              responses=_ok(Device, 201) | denied | _problems(400, 409, 413, 422))
    async def register_device(request: Request, body: DeviceIn = Body(...)) -> Any:
        """Register a device to wake with silent pushes; its token is checked for shape."""
        device = await request.app.state.devices.add(body)
        return JSONResponse(device.public(), status_code=201)

    @app.get("/devices", dependencies=read, responses=_ok(list[Device]) | denied | _problems(422))
    async def list_devices(request: Request, platform: Platform | None = None, label: str | None = None,
                           state: Literal["active", "invalid"] | None = None) -> Any:
        found = await request.app.state.devices.list(platform=platform, label=label, state=state)
        return JSONResponse([d.public() for d in found])

    @app.get("/devices/{device_id}", dependencies=read, responses=_ok(Device) | denied | _problems(404))
    async def get_device(request: Request, device_id: str) -> Any:
        return JSONResponse((await request.app.state.devices.get(device_id)).public())

    @app.put("/devices/{device_id}", responses=_ok(Device) | denied | _problems(400, 404, 409, 413, 422))
    async def update_device(request: Request, device_id: str, body: DeviceUpdate = Body(...),
                            creds: HTTPAuthorizationCredentials | None = Security(bearer)) -> Any:
        """A new push token (tokens rotate) or labels. A device's own token may update it."""
        token = authenticated(request)
        if token is not None and Scope.DEVICES_WRITE not in token.scopes:
            if Scope.DEVICES_REPORT not in token.scopes or token.device_id != device_id:
                raise AuthError(403, "updating a device needs devices:write, or the device's own token",
                                Scope.DEVICES_WRITE.value)
            if body.labels is not None:
                # Labels decide which tasks push to a device (and hand it their data): only an admin sets them.
                raise AuthError(403, "a device's own token may change only its push token; labels need devices:write",
                                Scope.DEVICES_WRITE.value)
        try:
            device = await request.app.state.devices.update(device_id, body)
        except ValueError as exc:
            field, _, message = str(exc).partition(": ")
            return problem(422, "Invalid input", str(exc), [{"field": field, "message": message}])
        return JSONResponse(device.public())

    @app.delete("/devices/{device_id}", status_code=204, dependencies=manage_devices,
                responses=denied | _problems(404))
    async def remove_device(request: Request, device_id: str) -> Response:
        await request.app.state.devices.remove(device_id)
        return Response(status_code=204)

    @app.post("/devices/{device_id}/runs/{run_id}/report", status_code=201,
              responses=_ok(DeviceReport, 201) | denied | _problems(400, 409, 413, 422))
    async def report_run(request: Request, device_id: str, run_id: str, body: ReportIn = Body(...),
                         token: ApiToken | None = Depends(requires(Scope.DEVICES_REPORT))) -> Any:
        """A device reports what it did for a run, with the run's reportToken from the push."""
        if token is not None and token.device_id is not None and token.device_id != device_id:
            raise AuthError(403, f"this token belongs to device {token.device_id!r}: "
                                 "a device can only report its own runs")
        size = len(json.dumps(body.data).encode())
        if size > settings.api.max_report_data_bytes:
            return problem(422, "Invalid input", "data: too large", [{"field": "data", "message": (
                f"is {size} bytes as JSON, over the limit of {settings.api.max_report_data_bytes} "
                "(BGTASKS_API_MAX_REPORT_DATA_BYTES)")}])
        report = await request.app.state.ledger.submit(device_id, run_id, body)
        await request.app.state.devices.touch(device_id)
        return JSONResponse(report.to_json_dict(), status_code=201)

    return app


#: What a created resource's answer gives the routes that take its id (OpenAPI links): from
#: (method, path, status) to {path parameter: runtime expression}.
LINK_SOURCES: dict[tuple[str, str, str], dict[str, str]] = {
    ("post", "/tasks", "201"): {"task_id": "$response.body#/id"},
    ("post", "/devices", "201"): {"device_id": "$response.body#/id"},
    ("post", "/tasks/{task_id}/run", "202"): {"run_id": "$response.body#/runId"},
}


def add_links(doc: dict[str, Any]) -> None:
    """OpenAPI links from each creating operation to every operation that takes the id it
    returns, so that clients and tools (Schemathesis' stateful runs) can chain them."""
    for (method, path, status), gives in LINK_SOURCES.items():
        response = doc["paths"][path][method]["responses"][status]
        links: dict[str, Any] = {}
        for target_path, operations in sorted(doc["paths"].items()):
            names = {p.strip("{}") for p in target_path.split("/") if p.startswith("{")}
            if not names & gives.keys():
                continue
            for target in operations.values():
                params = {n: gives[n] for n in sorted(names & gives.keys())}
                params.update({n: f"$request.path.{n}" for n in sorted(names - gives.keys())
                               if f"{{{n}}}" in path})
                links[target["operationId"]] = {"operationId": target["operationId"], "parameters": params}
        response["links"] = links


def api_hosts(settings: Settings) -> list[str]:
    """Host names the API answers to: loopback, its bind address, the public URL's host, the extras."""
    extra = list(settings.api.allowed_hosts)
    if settings.push.public_url and (public := urlsplit(settings.push.public_url).hostname):
        extra.append(public)
    return allowed_hosts(settings.api.host, extra)


def install_doors(app: FastAPI, settings: Settings) -> None:
    """The checks of :mod:`bgtasks.api.middleware`, outermost last (Starlette's order)."""
    async def verify(scope: Any, secret: str) -> ApiToken | None:
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


__all__ = ["create_app", "is_loopback"]
