"""The warm worker (`bgtasks-warm`): Prefect features through forked children, isolation, the stock worker kept."""

from __future__ import annotations

import os
import re
import signal
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest

from bgtasks.models import TaskStatus
from tests.fixtures import records, wait_for

pytestmark = pytest.mark.integration

ONCE = {"type": "one-time"}


def test_prefect_knows_the_worker_type() -> None:
    from prefect.workers.base import BaseWorker

    from bgtasks.warm_worker import WarmWorker

    assert BaseWorker.get_worker_class_from_type("bgtasks-warm") is WarmWorker


async def _state(client: Any, run_id: str, *types: str) -> Any:
    async def check() -> Any:
        run = await client.read_flow_run(UUID(run_id))
        return run if run.state.type.value in types else None

    return await wait_for(check, 120, f"run {run_id} to reach {types}")


@pytest.mark.usefixtures("worker")
async def test_run_completes_with_result_and_logs(manager: Any, client: Any, settings: Any) -> None:
    assert settings.worker.type == "bgtasks-warm"
    task = await manager.create({"name": "warm-ok", "handler": "demo", "schedule": {**ONCE, "startTime": "2099-01-01T00:00:00Z"},
                                 "data": {"message": "from a fork"}})
    run_id = await manager.run_now(task.id)
    result = await manager.wait_for_run(run_id, timeout_s=120)
    assert result.success and result.data["message"] == "from a fork"
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId

    async def logs() -> Any:
        got = await client.read_logs(LogFilter(flow_run_id=LogFilterFlowRunId(any_=[UUID(run_id)])))
        return got if any("Finished in state Completed" in log.message for log in got) else None

    await wait_for(logs, 60, "the run's logs in the API")
    run = await client.read_flow_run(UUID(run_id))
    assert run.infrastructure_pid  # the forked child's pid, for cancellation
    # No "Submitting" between Pending and Running: a fork provisions nothing (docs/performance.md).
    states = sorted(await client.read_flow_run_states(UUID(run_id)), key=lambda st: st.timestamp)
    assert [st.name for st in states] == ["Scheduled", "Pending", "Running", "Completed"]


@pytest.mark.usefixtures("worker")
@pytest.mark.parametrize("how", ["os._exit", "SIGKILL"])
async def test_a_dying_run_ends_crashed_and_the_worker_serves_the_next(
    manager: Any, client: Any, tmp_path: Path, how: str
) -> None:
    rec = tmp_path / "rec"
    data = {"exitCode": 3} if how == "os._exit" else {"sleepSeconds": 600, "recordTo": str(rec)}
    task = await manager.create({"name": f"dies-{how}", "handler": "demo", "schedule": ONCE, "data": data})
    if how == "SIGKILL":
        [attempt] = await wait_for(lambda: _ready(records(rec)), 120, "the handler to start")
        os.kill(attempt["pid"], signal.SIGKILL)

    t = await _finished(manager, task.id)
    assert t.status == TaskStatus.FAILED and t.result.state == "Crashed"
    # The process's own exit status, as a whole number in the message (not any "3" of an id or a time).
    code = "3" if how == "os._exit" else "-9"
    assert re.search(rf"status code:? {code}(?![0-9])", t.result.error or ""), t.result.error

    after = await manager.create({"name": f"after-{how}", "handler": "demo", "schedule": ONCE})
    assert (await _finished(manager, after.id)).result.success


async def _ready(value: Any) -> Any:
    return value


async def _finished(manager: Any, task_id: str) -> Any:
    async def check() -> Any:
        t = await manager.get(task_id)
        return t if t.result is not None else None

    return await wait_for(check, 120, f"task {task_id} to finish")


@pytest.mark.usefixtures("worker")
async def test_a_periodic_runs_state_changes_reach_automations_at_once(manager: Any, client: Any) -> None:
    """Prefect's scheduler creates a periodic task's runs without a ``Scheduled`` event,
    yet the run's next state event, if less than 5 minutes later, names that state as the
    event it follows: Prefect's automations then hold all the run's state events for 15
    minutes, waiting for it (the crashed-runs automation fired on runs long finished; a
    user's automation on ``Completed`` acted 15 minutes late). The warm worker emits the
    missing event when it takes such a run, and the run's ``Completed`` is acted on now.
    """
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterDeploymentId, FlowRunFilterState
    from prefect.client.schemas.filters import FlowRunFilterStateType
    from prefect.events.actions import DoNothing
    from prefect.events.filters import EventFilter, EventNameFilter, EventRelatedFilter
    from prefect.events.schemas.automations import AutomationCore, EventTrigger, Posture

    task = await manager.create({"name": "events-in-order", "handler": "demo",
                                 "schedule": {"type": "periodic", "interval": 5000}})
    dep = f"prefect.deployment.{task.id}"
    automation_id = await client.create_automation(AutomationCore(
        name=f"test: Completed of {task.id}",
        trigger=EventTrigger(
            match={"prefect.resource.id": "prefect.flow-run.*"},
            match_related={"prefect.resource.id": dep, "prefect.resource.role": "deployment"},
            expect={"prefect.flow-run.Completed"}, for_each={"prefect.resource.id"},
            posture=Posture.Reactive, threshold=1, within=0),
        actions=[DoNothing()]))
    try:
        async def completed() -> Any:
            runs = await client.read_flow_runs(flow_run_filter=FlowRunFilter(
                deployment_id=FlowRunFilterDeploymentId(any_=[UUID(task.id)]),
                state=FlowRunFilterState(type=FlowRunFilterStateType(any_=["COMPLETED"]))))
            return [r for r in runs if r.auto_scheduled]

        [run, *_] = await wait_for(completed, 120, "a scheduled run to complete")

        async def acted_on() -> Any:
            page = await client.read_events(filter=EventFilter(
                event=EventNameFilter(name=["prefect.automation.triggered"]),
                related=EventRelatedFilter(id=[f"prefect.event.{run.state_id}"])), limit=1)
            return page.events

        # Not a timing threshold: without the missing event this waits 15 minutes.
        await wait_for(acted_on, 180, f"the automation to act on run {run.id}'s Completed event")
    finally:
        await client.delete_automation(automation_id)
        await manager.delete(task.id)



@pytest.mark.usefixtures("worker")
async def test_a_warm_runs_events_name_its_flow_deployment_queue_and_pool(manager: Any, client: Any,
                                                                           settings: Any) -> None:
    """The child's events take the run's flow, deployment, work queue and pool from the worker
    (instead of reading each from the API): they still name all four, as a stock run's do."""
    from prefect.events.filters import EventFilter, EventNameFilter, EventRelatedFilter

    task = await manager.create({"name": "warm-related", "handler": "demo",
                                 "schedule": {**ONCE, "startTime": "2099-01-01T00:00:00Z"}})
    run_id = await manager.run_now(task.id)
    assert (await manager.wait_for_run(run_id, timeout_s=120)).success
    run = await client.read_flow_run(UUID(run_id))
    flow = await client.read_flow(run.flow_id)

    async def task_run_completed() -> Any:
        page = await client.read_events(filter=EventFilter(
            event=EventNameFilter(name=["prefect.task-run.Completed"]),
            related=EventRelatedFilter(id=[f"prefect.flow-run.{run_id}"])), limit=5)
        return page.events

    [event, *_] = await wait_for(task_run_completed, 60, "the task run's Completed event")
    related = {r.role: (r.id, r.name) for r in event.related}
    assert related["flow"] == (f"prefect.flow.{flow.id}", flow.name)
    assert related["deployment"] == (f"prefect.deployment.{task.id}", "warm-related")
    assert related["work-queue"] == (f"prefect.work-queue.{run.work_queue_id}", "normal")
    assert related["work-pool"][1] == settings.worker.pool
