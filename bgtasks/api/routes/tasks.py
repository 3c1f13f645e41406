"""``/tasks``: every operation of :class:`bgtasks.manager.TaskManager`, in the spec's JSON
(``CreateTaskOptions`` in; ``BackgroundTask``, ``TaskRun``, ``TaskResult`` out)."""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Body, Query, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from bgtasks.api import deps
from bgtasks.api.deps import READ, WRITE
from bgtasks.api.errors import DENIED, ok, problem, problems
from bgtasks.models import (
    BackgroundTask,
    CreateTaskOptions,
    TaskPriority,
    TaskResult,
    TaskRun,
    TaskStatus,
    TaskType,
)

router = APIRouter()


class RunOptions(BaseModel):
    """Optional body of ``POST /tasks/{id}/run``."""

    model_config = ConfigDict(extra="forbid")

    delay_seconds: int = Field(0, ge=0, le=86400, alias="delaySeconds",
                               description="Start the run this many seconds from now.")


class RunStarted(BaseModel):
    run_id: str = Field(alias="runId")


def task_json(task: BackgroundTask, status_code: int = 200) -> JSONResponse:
    return JSONResponse(task.to_json_dict(), status_code=status_code)


@router.post("/tasks", status_code=201, dependencies=WRITE, response_class=JSONResponse,
             responses=ok(BackgroundTask, 201) | DENIED | problems(400, 409, 413, 422))
async def create_task(request: Request, body: CreateTaskOptions = Body(...)) -> Any:
    """Create a task from a CreateTaskOptions body; returns the BackgroundTask."""
    return task_json(await deps.manager(request).create(body), status_code=201)


@router.get("/tasks", dependencies=READ, responses=ok(list[BackgroundTask]) | DENIED | problems(422))
async def list_tasks(
    request: Request,
    status: TaskStatus | None = None,
    type: TaskType | None = None,
    priority: TaskPriority | None = None,
    sort: Literal["priority", "next-run", "created", "name"] = Query("priority"),
) -> Any:
    tasks = await deps.manager(request).list(status=status, type=type, priority=priority, sort=sort)
    return JSONResponse([t.to_json_dict() for t in tasks])


@router.get("/tasks/events", dependencies=READ, response_class=StreamingResponse,
            responses={200: {"content": {"text/event-stream": {"schema": {"type": "string"}}},
                             "description": "Server-sent events: `run` (taskId, runId, state, occurred) when a "
                             "task's run changes state; `task` (taskId, change: created, updated or deleted) when "
                             "a task changes; `resync` when some may have been missed."}} | DENIED)
async def task_events(request: Request) -> Any:
    """Runs and tasks changing as they happen (server-sent events), from Prefect's event stream."""
    from bgtasks.api.live import sse

    return StreamingResponse(sse(request.app.state.events), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


@router.get("/tasks/{task_id}", dependencies=READ, responses=ok(BackgroundTask) | DENIED | problems(404))
async def get_task(request: Request, task_id: str) -> Any:
    return task_json(await deps.manager(request).get(task_id))


@router.get("/tasks/{task_id}/history", dependencies=READ,
            responses=ok(list[TaskRun]) | DENIED | problems(404, 422))
async def task_history(request: Request, task_id: str, limit: int = Query(50, ge=1, le=200)) -> Any:
    return JSONResponse([r.to_json_dict() for r in await deps.manager(request).history(task_id, limit=limit)])


@router.get("/tasks/{task_id}/result", dependencies=READ, responses=ok(TaskResult) | DENIED | problems(404))
async def task_result(request: Request, task_id: str) -> Any:
    task = await deps.manager(request).get(task_id)
    if task.result is None:
        return problem(404, "No result yet", f"task {task_id} has no finished run")
    return JSONResponse(task.result.to_json_dict())


@router.post("/tasks/{task_id}/run", status_code=202, dependencies=WRITE,
             responses=ok(RunStarted, 202) | DENIED | problems(400, 404, 409, 413, 422))
async def run_task(request: Request, task_id: str, body: RunOptions | None = Body(None)) -> Any:
    """Run the task now, or ``delaySeconds`` from now; returns the run id."""
    delay = body.delay_seconds if body else 0
    return JSONResponse({"runId": await deps.manager(request).run_now(task_id, delay_s=delay)}, status_code=202)


CONTROL = {"dependencies": WRITE, "responses": ok(BackgroundTask) | DENIED | problems(404, 409)}


@router.post("/tasks/{task_id}/pause", **CONTROL)
async def pause_task(request: Request, task_id: str) -> Any:
    """No scheduled, triggered or run-now run starts until resumed."""
    return task_json(await deps.manager(request).pause(task_id))


@router.post("/tasks/{task_id}/resume", **CONTROL)
async def resume_task(request: Request, task_id: str) -> Any:
    """Undo pause: the schedule and triggers apply again."""
    return task_json(await deps.manager(request).resume(task_id))


@router.post("/tasks/{task_id}/cancel", **CONTROL)
async def cancel_task(request: Request, task_id: str) -> Any:
    """Stop the task for good: pending runs cancelled, running ones stopped."""
    return task_json(await deps.manager(request).cancel(task_id))


@router.delete("/tasks/{task_id}", status_code=204, dependencies=WRITE, responses=DENIED | problems(404))
async def delete_task(request: Request, task_id: str) -> Response:
    await deps.manager(request).delete(task_id)
    return Response(status_code=204)
