"""The Prefect UI's face of bgtasks: control flows, deployed by ``bgtasks up``.

The spec's front end has a creation form and demo controls. In the Prefect UI
they are deployments of the flows below (tag ``bgtasks-control``, queue
``high`` so a click never waits behind background work):

- ``create-background-task``: its parameters are the CreateTaskOptions fields, each
  with a plain default (:mod:`flows.forms`), so the UI's *Run > Custom run* form is
  the creation form (enums as selects, bounds enforced by the schema, no "Property is
  type None"); the run's result is the new BackgroundTask;
- ``quick-demo-task``: create a one-time ``demo`` task that runs now (or after a delay);
- ``execute-task-now``: run an existing task now (by id or name);
- ``simulate-failure``: create a one-time ``demo`` task that fails and retries,
  so the retry policy can be watched;
- ``clear-completed-tasks``: delete one-time tasks whose run completed (periodic
  and triggered tasks are never removed by it: their next run is still to come).

Bad input fails the run with the field named in its state message; nothing is
created.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from prefect import flow, get_run_logger
from pydantic import Field

from bgtasks.models import (
    CreateTaskOptions,
    RetryPolicy,
    TaskPriority,
    TaskSchedule,
    TaskStatus,
    TaskType,
)
from flows.forms import ConstraintsForm, RetryForm, ScheduleForm, Seconds, TargetForm, TriggerForm, create_options


async def _with_manager(op: Any) -> Any:
    from prefect.client.orchestration import get_client

    from bgtasks.manager import TaskManager
    from bgtasks.settings import load_settings

    settings = load_settings()
    async with get_client() as client:
        return await op(TaskManager(client, settings.worker.pool, settings=settings))


def _stamp() -> str:
    return datetime.now(UTC).strftime("%Y%m%d-%H%M%S-%f")


@flow(name="create-background-task", persist_result=True, result_serializer="json", log_prints=True)
async def create_background_task(
    name: Annotated[str, Field(min_length=1, max_length=100, description="Unique task name.")],
    schedule: ScheduleForm = ScheduleForm(),
    priority: TaskPriority = TaskPriority.NORMAL,
    description: Annotated[str, Field(max_length=2000)] = "",
    handler: Annotated[str, Field(description="Registered handler. Empty: matched from the name.")] = "",
    timeout_seconds: Seconds = 0,
    constraints: ConstraintsForm = ConstraintsForm(),
    retry_policy: RetryForm = RetryForm(),
    trigger: TriggerForm = TriggerForm(),
    target: TargetForm = TargetForm(),
    data: Annotated[dict[str, Any], Field(description="JSON handed to the handler.")] = {},  # noqa: B006 (never mutated)
) -> dict[str, Any]:
    """Create a bgtasks task (the spec's creation form); returns the BackgroundTask."""
    body = create_options(name=name, schedule=schedule, description=description, priority=priority,
                          handler=handler, timeout_seconds=timeout_seconds, constraints=constraints,
                          retry_policy=retry_policy, trigger=trigger, target=target, data=data)
    task = await _with_manager(lambda m: m.create(body))
    get_run_logger().info("Created task %s (%s), next run %s", task.name, task.id, task.next_run)
    return task.to_json_dict()


@flow(name="quick-demo-task", persist_result=True, result_serializer="json")
async def quick_demo_task(
    delay_seconds: Annotated[int, Field(ge=0, le=3600, description="Start this many seconds from now.")] = 0,
    sleep_seconds: Annotated[float, Field(ge=0, le=3600, description="How long the demo work takes.")] = 1.0,
    priority: TaskPriority = TaskPriority.NORMAL,
) -> dict[str, Any]:
    """Create a one-time demo task that runs now (or after ``delay_seconds``)."""
    start = datetime.now(UTC).timestamp() + delay_seconds
    body = CreateTaskOptions(
        name=f"demo-{_stamp()}", handler="demo", priority=priority,
        schedule=TaskSchedule(type=TaskType.ONE_TIME, start_time=datetime.fromtimestamp(start, UTC)),
        data={"sleepSeconds": sleep_seconds, "message": "Quick demo task"},
    )
    task = await _with_manager(lambda m: m.create(body))
    get_run_logger().info("Created demo task %s (%s)", task.name, task.id)
    return task.to_json_dict()


@flow(name="execute-task-now", persist_result=True, result_serializer="json")
async def execute_task_now(
    task: Annotated[str, Field(min_length=1, description="Task id or name.")],
) -> dict[str, str]:
    """Run an existing task now, in its priority queue."""

    async def go(m: Any) -> dict[str, str]:
        task_id = await m.resolve(task)
        return {"taskId": task_id, "runId": await m.run_now(task_id)}

    return await _with_manager(go)


@flow(name="simulate-failure", persist_result=True, result_serializer="json")
async def simulate_failure(
    max_retries: Annotated[int, Field(ge=0, le=10, description="Retries before the run fails.")] = 2,
    error_message: Annotated[str, Field(max_length=500)] = "Simulated failure",
) -> dict[str, Any]:
    """Create a one-time demo task that fails every attempt, to watch retries and the failed state."""
    body = CreateTaskOptions(
        name=f"failing-demo-{_stamp()}", handler="demo",
        schedule=TaskSchedule(type=TaskType.ONE_TIME),
        retry_policy=RetryPolicy(max_retries=max_retries, initial_backoff_ms=1000, max_backoff_ms=5000, jitter=0),
        data={"fail": True, "errorMessage": error_message},
    )
    task = await _with_manager(lambda m: m.create(body))
    get_run_logger().info("Created failing demo task %s (%s)", task.name, task.id)
    return task.to_json_dict()


@flow(name="clear-completed-tasks", persist_result=True, result_serializer="json")
async def clear_completed_tasks(
    include_failed: Annotated[bool, Field(description="Also delete one-time tasks that failed.")] = False,
    include_cancelled: Annotated[bool, Field(description="Also delete cancelled tasks.")] = False,
) -> dict[str, Any]:
    """Delete one-time tasks whose run has finished (completed; optionally failed or cancelled)."""
    wanted = {TaskStatus.COMPLETED}
    if include_failed:
        wanted.add(TaskStatus.FAILED)

    async def go(m: Any) -> list[str]:
        deleted = []
        for t in await m.list():
            if (t.type == TaskType.ONE_TIME and t.status in wanted) or (
                include_cancelled and t.status == TaskStatus.CANCELLED
            ):
                await m.delete(t.id)
                deleted.append(t.name)
        return deleted

    deleted = await _with_manager(go)
    get_run_logger().info("Deleted %d task(s): %s", len(deleted), ", ".join(deleted) or "none")
    return {"deleted": deleted}

