"""Routes: every task operation of :class:`bgtasks.manager.TaskManager`, and health.

JSON bodies are the spec's shapes (``CreateTaskOptions`` in, ``BackgroundTask``,
``TaskResult`` out). Errors are RFC 9457 problem documents
(``application/problem+json``) whose ``errors`` name each bad field.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, Literal

from fastapi import Body, FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from bgtasks.errors import InvalidTask, TaskConflict, TaskNotFound
from bgtasks.models import CreateTaskOptions, TaskPriority, TaskStatus, TaskType, errors_from
from bgtasks.settings import Settings

PROBLEM = "application/problem+json"


def problem(status: int, title: str, detail: str, errors: list[dict[str, str]] | None = None) -> JSONResponse:
    body: dict[str, Any] = {"type": "about:blank", "title": title, "status": status, "detail": detail}
    if errors:
        body["errors"] = errors
    return JSONResponse(body, status_code=status, media_type=PROBLEM)


def create_app(settings: Settings) -> FastAPI:
    """The API, talking to the Prefect API named by ``settings``."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        from prefect.client.orchestration import get_client

        from bgtasks.manager import TaskManager

        async with get_client() as client:
            app.state.manager = TaskManager(client, settings.worker.pool)
            yield

    app = FastAPI(title="bgtasks", version="1", lifespan=lifespan,
                  description="Background tasks for desktop and mobile apps, on Prefect.")

    @app.exception_handler(InvalidTask)
    async def _invalid(request: Request, exc: InvalidTask) -> JSONResponse:
        return problem(422, "Invalid input", str(exc), exc.errors)

    @app.exception_handler(TaskNotFound)
    async def _missing(request: Request, exc: TaskNotFound) -> JSONResponse:
        return problem(404, "Task not found", str(exc))

    @app.exception_handler(TaskConflict)
    async def _conflict(request: Request, exc: TaskConflict) -> JSONResponse:
        return problem(409, "Conflict", str(exc))

    @app.exception_handler(RequestValidationError)
    async def _request_invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = errors_from(exc.errors(), skip=("body", "query", "path"))
        return problem(422, "Invalid input", "; ".join(f"{e['field']}: {e['message']}" for e in errors), errors)

    def mgr(request: Request) -> Any:
        return request.app.state.manager

    @app.get("/health")
    async def health(request: Request) -> dict[str, Any]:
        await mgr(request).client.api_healthcheck()
        return {"status": "ok"}

    @app.post("/tasks", status_code=201)
    async def create_task(request: Request, body: CreateTaskOptions = Body(...)) -> dict[str, Any]:
        """Create a task from a CreateTaskOptions body; returns the BackgroundTask."""
        return (await mgr(request).create(body)).to_json_dict()

    @app.get("/tasks")
    async def list_tasks(
        request: Request,
        status: TaskStatus | None = None,
        type: TaskType | None = None,
        priority: TaskPriority | None = None,
        sort: Literal["priority", "next-run", "created", "name"] = Query("priority"),
    ) -> list[dict[str, Any]]:
        tasks = await mgr(request).list(status=status, type=type, priority=priority, sort=sort)
        return [t.to_json_dict() for t in tasks]

    @app.get("/tasks/{task_id}")
    async def get_task(request: Request, task_id: str) -> dict[str, Any]:
        return (await mgr(request).get(task_id)).to_json_dict()

    @app.get("/tasks/{task_id}/history")
    async def task_history(request: Request, task_id: str, limit: int = Query(50, ge=1, le=200)) -> list[dict[str, Any]]:
        return [r.to_json_dict() for r in await mgr(request).history(task_id, limit=limit)]

    @app.get("/tasks/{task_id}/result")
    async def task_result(request: Request, task_id: str) -> Any:
        task = await mgr(request).get(task_id)
        if task.result is None:
            return problem(404, "No result yet", f"task {task_id} has no finished run")
        return task.result.to_json_dict()

    @app.post("/tasks/{task_id}/run", status_code=202)
    async def run_task(request: Request, task_id: str) -> dict[str, str]:
        return {"runId": await mgr(request).run_now(task_id)}

    for action in ("pause", "resume", "cancel"):
        def make(action: str) -> Any:
            async def control(request: Request, task_id: str) -> dict[str, Any]:
                return (await getattr(mgr(request), action)(task_id)).to_json_dict()

            control.__name__ = f"{action}_task"
            return control

        app.post(f"/tasks/{{task_id}}/{action}")(make(action))

    @app.delete("/tasks/{task_id}", status_code=204)
    async def delete_task(request: Request, task_id: str) -> None:
        await mgr(request).delete(task_id)

    return app


def is_loopback(host: str) -> bool:
    import ipaddress

    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


__all__ = ["create_app", "is_loopback"]
