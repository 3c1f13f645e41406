"""Task types, run-now, cancel, pause/resume, against a real Prefect server and worker."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest

from bgtasks.errors import TaskConflict, TaskNotFound
from bgtasks.models import TaskStatus
from tests.fixtures import pid_alive, records, runs_of, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.postgresql, pytest.mark.usefixtures("worker")]


async def _finished(manager: Any, task_id: str, n: int = 1) -> Any:
    async def check() -> Any:
        runs = [r for r in await manager.history(task_id) if r.result is not None]
        return runs if len(runs) >= n else None

    return await wait_for(check, 120, f"{n} finished run(s) of {task_id}")


async def test_one_time_task_runs_at_its_time(manager: Any, tmp_path: Path, settings: Any) -> None:
    at = datetime.now(UTC) + timedelta(seconds=4)
    rec = tmp_path / "rec"
    task = await manager.create(
        {"name": "once", "handler": "demo", "schedule": {"type": "one-time", "startTime": at.isoformat()},
         "data": {"recordTo": str(rec)}}
    )
    assert task.status == TaskStatus.PENDING
    assert task.next_run == task.scheduled_for == at
    [run] = await _finished(manager, task.id)
    assert run.result.success and run.scheduled_for == at
    started = datetime.fromisoformat(records(rec)[0]["at"])
    # A worker may pick a run up at most its prefetch window early.
    assert started >= at - timedelta(seconds=settings.worker.prefetch_seconds)
    done = await manager.get(task.id)
    assert done.status == TaskStatus.COMPLETED and done.next_run is None
    assert done.result.data["message"] == "Task completed successfully"


async def test_periodic_task_runs_repeatedly(manager: Any) -> None:
    task = await manager.create(
        {"name": "every-2s", "handler": "demo", "schedule": {"type": "periodic", "interval": 2000}}
    )
    runs = await _finished(manager, task.id, n=3)
    times = sorted(r.scheduled_for for r in runs)
    gaps = {(b - a).total_seconds() for a, b in zip(times, times[1:])}
    assert gaps <= {2.0, 4.0, 6.0}, gaps  # consecutive slots of the 2 s interval
    assert all(r.result.success for r in runs)
    assert (await manager.get(task.id)).next_run is not None


async def test_run_now_runs_immediately(manager: Any) -> None:
    later = datetime.now(UTC) + timedelta(hours=1)
    task = await manager.create(
        {"name": "hourly", "handler": "demo",
         "schedule": {"type": "periodic", "intervalMs": 3_600_000, "startTime": later.isoformat()}}
    )
    run_id = await manager.run_now(task.id)
    result = await manager.wait_for_run(run_id, timeout_s=120)
    assert result.success and result.run_id == run_id
    assert (await manager.get(task.id)).next_run >= later


@pytest.mark.usefixtures("worker")
async def test_a_periodic_task_first_runs_at_its_start_time(manager: Any, client: Any, tmp_path: Path) -> None:
    """Prefect takes the start as an anchor and schedules runs before it; they never run."""
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterDeploymentId

    rec = tmp_path / "rec"
    # 20 s ahead with a 4 s interval: Prefect's anchored schedule makes several runs before the
    # start (up to five), however slow this machine is.
    start = (datetime.now(UTC) + timedelta(seconds=20)).replace(microsecond=0)
    task = await manager.create({"name": "starts-later", "handler": "demo", "data": {"recordTo": str(rec)},
                                 "schedule": {"type": "periodic", "interval": 4000, "startTime": start.isoformat()}})
    assert (await manager.get(task.id)).next_run >= start
    flt = FlowRunFilter(deployment_id=FlowRunFilterDeploymentId(any_=[UUID(task.id)]))
    early = [r for r in await client.read_flow_runs(flow_run_filter=flt) if r.expected_start_time < start]
    assert early, "Prefect made no run before the start: this test would prove nothing"
    first = await wait_for(lambda: _ready(records(rec)), 120, "the first run")
    run = await client.read_flow_run(UUID(first[0]["run"]))
    assert run.expected_start_time >= start and datetime.fromisoformat(first[0]["at"]) >= start
    # The ones before the start never ran: the worker deleted them.
    gone = {str(r.id) for r in early} - {str(r.id) for r in await client.read_flow_runs(flow_run_filter=flt)}
    assert gone == {str(r.id) for r in early}
    assert all(datetime.fromisoformat(r["at"]) >= start for r in records(rec))


async def _ready(value: Any) -> Any:
    return value


async def test_cancel_pending_task_runs_nothing(manager: Any, client: Any) -> None:
    at = datetime.now(UTC) + timedelta(hours=1)
    task = await manager.create(
        {"name": "cancel-me", "handler": "demo", "schedule": {"type": "one-time", "startTime": at.isoformat()}}
    )
    cancelled = await manager.cancel(task.id)
    assert cancelled.status == TaskStatus.CANCELLED
    runs = await client.read_flow_runs(
        deployment_filter=_dep_filter(task.id)
    )
    assert runs and all(r.state.type.value == "CANCELLED" and r.run_count == 0 for r in runs)
    with pytest.raises(TaskConflict):
        await manager.run_now(task.id)


def _dep_filter(task_id: str) -> Any:
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId

    return DeploymentFilter(id=DeploymentFilterId(any_=[UUID(task_id)]))


async def test_cancel_running_task_stops_its_process(manager: Any, client: Any, tmp_path: Path) -> None:
    rec = tmp_path / "rec"
    task = await manager.create(
        {"name": "long", "handler": "demo", "schedule": {"type": "one-time"},
         "data": {"sleepSeconds": 600, "recordTo": str(rec)}}
    )
    [first] = await wait_for(lambda: _async(records(rec)), 120, "the handler to start")
    assert pid_alive(first["pid"])
    await manager.cancel(task.id)

    async def cancelled() -> Any:
        runs = await client.read_flow_runs(deployment_filter=_dep_filter(task.id))
        return all(r.state.type.value == "CANCELLED" for r in runs) and runs

    await wait_for(cancelled, 120, "the run to be Cancelled")
    await wait_for(lambda: _async(not pid_alive(first["pid"])), 60, "the handler process to exit")
    assert (await manager.get(task.id)).status == TaskStatus.CANCELLED


async def _async(value: Any) -> Any:
    return value


async def test_pause_stops_scheduled_runs_and_resume_restores_them(manager: Any, client: Any) -> None:
    task = await manager.create(
        {"name": "pausable", "handler": "demo", "schedule": {"type": "periodic", "interval": 2000}}
    )
    witness = await manager.create(  # runs on the same grid all along: time and the worker move on
        {"name": "pause-witness", "handler": "demo", "schedule": {"type": "periodic", "interval": 2000}}
    )
    await _finished(manager, task.id, n=1)
    paused = await manager.pause(task.id)
    paused_at = datetime.now(UTC)
    assert paused.paused and paused.next_run is None
    scheduled = await client.read_flow_runs(
        deployment_filter=_dep_filter(task.id),
        flow_run_filter=_scheduled(),
    )
    assert scheduled == []  # nothing left that a worker could start
    with pytest.raises(TaskConflict):
        await manager.run_now(task.id)

    # Three of the witness's 2 s slots pass and run while the task is paused.
    async def witness_ran() -> Any:
        runs = [r for r in await manager.history(witness.id)
                if r.result is not None and r.scheduled_for is not None and r.scheduled_for > paused_at]
        return len(runs) >= 3 and runs

    await wait_for(witness_ran, 120, "three witness runs during the pause")
    resumed_at = datetime.now(UTC)
    started_while_paused = [r for r in await manager.history(task.id)
                            if r.started_at is not None and paused_at < r.started_at < resumed_at]
    assert started_while_paused == [], started_while_paused

    resumed = await manager.resume(task.id)
    assert not resumed.paused and resumed.next_run is not None

    async def new_run() -> Any:
        return [r for r in await manager.history(task.id)
                if r.result is not None and r.started_at is not None and r.started_at > resumed_at]

    await wait_for(new_run, 120, "a run after resume")


def _scheduled() -> Any:
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterState, FlowRunFilterStateType
    from prefect.client.schemas.objects import StateType

    return FlowRunFilter(state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.SCHEDULED])))


async def test_a_one_time_task_resumed_after_its_start_time_runs_now(manager: Any, tmp_path: Path) -> None:
    """Paused before its time, resumed after it: it runs at once (not never, not at the old time)."""
    rec = tmp_path / "rec"
    at = datetime.now(UTC) + timedelta(seconds=3)
    task = await manager.create({"name": "resume-late", "handler": "demo", "data": {"recordTo": str(rec)},
                                 "schedule": {"type": "one-time", "startTime": at.isoformat()}})
    await manager.pause(task.id)
    await wait_for(lambda: _async(datetime.now(UTC) > at + timedelta(seconds=2)), 60, "the start time to pass")
    assert records(rec) == [] and (await manager.history(task.id)) == []  # it did not run while paused
    resumed_at = datetime.now(UTC)
    assert not (await manager.resume(task.id)).paused
    # (Not next_run: the run is due at once, and the worker may have started it by the time resume reads it.)
    [run] = await _finished(manager, task.id)
    assert run.result.success
    assert run.scheduled_for is not None and run.scheduled_for >= resumed_at  # now, not the old time
    [record] = records(rec)
    assert datetime.fromisoformat(record["at"]) >= resumed_at


async def test_paused_one_time_task_waits_and_runs_after_resume(manager: Any) -> None:
    # Generous: created and paused long before a worker could pick its run up (prefetch 1 s).
    at = datetime.now(UTC) + timedelta(seconds=30)
    task = await manager.create(
        {"name": "pause-once", "handler": "demo", "schedule": {"type": "one-time", "startTime": at.isoformat()}}
    )
    await manager.pause(task.id)
    assert (await manager.history(task.id)) == []
    resumed = await manager.resume(task.id)
    assert resumed.next_run == at  # resumed before its time: it runs at its time
    [run] = await _finished(manager, task.id)
    assert run.result.success and run.started_at >= at - timedelta(seconds=1)


async def test_cleanup_deletes_completed_runs_older_than_n_days(manager: Any, client: Any) -> None:
    demo = await manager.create(
        {"name": "to-clean", "handler": "demo", "schedule": {"type": "periodic", "interval": 3_600_000,
                                                            "startTime": (datetime.now(UTC) + timedelta(days=1)).isoformat()}}
    )
    old_run = (await manager.wait_for_run(await manager.run_now(demo.id), timeout_s=120)).run_id
    cleanup = await manager.create(
        {"name": "cleanup-now", "handler": "cleanup", "schedule": {"type": "one-time"}, "data": {"olderThanDays": 0}}
    )
    [run] = await _finished(manager, cleanup.id)
    assert run.result.success and run.result.data["deleted"] >= 1
    from prefect.exceptions import ObjectNotFound

    with pytest.raises(ObjectNotFound):
        await client.read_flow_run(UUID(old_run))
    # The cleanup run itself is kept.
    assert (await manager.get(cleanup.id)).status == TaskStatus.COMPLETED


async def test_the_worker_drops_runs_the_scheduler_makes_for_a_paused_task(
    manager: Any, client: Any, worker: Any, tmp_path: Path
) -> None:
    """Prefect's scheduler can make runs just after a pause deleted the scheduled ones (its
    loop read the deployment before the pause). Made here on purpose with the scheduler's own
    endpoint: the worker deletes each one as it falls due, and none runs."""
    from prefect.exceptions import ObjectNotFound

    rec = tmp_path / "rec"
    task = await manager.create({"name": "paused-but-scheduled", "handler": "demo", "data": {"recordTo": str(rec)},
                                 "schedule": {"type": "periodic", "interval": 2000}})
    await manager.pause(task.id)
    await client.request("POST", "/deployments/{id}/schedule", path_params={"id": UUID(task.id)},
                         json={"min_runs": 3, "max_runs": 3})
    made = [r for r in await client.read_flow_runs(deployment_filter=_dep_filter(task.id),
                                                   flow_run_filter=_scheduled()) if r.auto_scheduled]
    assert made, "the scheduler's endpoint made no run: this test would prove nothing"

    async def all_dropped() -> bool:
        for run in made:
            try:
                await client.read_flow_run(run.id)
                return False
            except ObjectNotFound:
                pass
        return True

    await wait_for(all_dropped, 120, "the worker to drop the paused task's runs")
    assert records(rec) == [] and (await manager.history(task.id)) == []
    log = worker.part.log_path.read_text()
    assert all(f"Dropped run {run.id}: its task is paused" in log for run in made)


@pytest.mark.parametrize("action", ["pause", "cancel", "delete"])
async def test_a_run_the_worker_drops_meanwhile_fails_no_pause_cancel_or_delete(
    manager: Any, client: Any, monkeypatch: pytest.MonkeyPatch, action: str
) -> None:
    """The worker deletes a paused task's scheduler-made run at submission; when that falls
    between the manager's read of the runs and its write to one, the run is simply gone."""
    task = await manager.create({"name": f"raced-{action}", "handler": "demo", "schedule": {
        "type": "one-time", "startTime": (datetime.now(UTC) + timedelta(hours=1)).isoformat()}})
    [run] = await runs_of(client, task.id)
    # The interleaving, made certain: the run is deleted just before the manager's write lands.
    drop = client.delete_flow_run
    for name in ("delete_flow_run", "set_flow_run_state"):

        async def racing(run_id: Any, *args: Any, _real: Any = getattr(client, name), **kwargs: Any) -> Any:
            await drop(run_id)
            return await _real(run_id, *args, **kwargs)

        monkeypatch.setattr(client, name, racing)
    await getattr(manager, action)(task.id)
    monkeypatch.undo()
    assert [r.id for r in await runs_of(client, task.id)] == []
    if action == "delete":
        with pytest.raises(TaskNotFound):
            await manager.get(task.id)
    else:
        got = await manager.get(task.id)
        assert got.paused if action == "pause" else got.status == TaskStatus.CANCELLED


async def test_a_cancelled_periodic_task_never_runs_again(manager: Any, client: Any, tmp_path: Path) -> None:
    """Cancel is final: across several of its periods (a witness on the same 2 s grid runs
    meanwhile, so slots pass and the worker is busy taking runs), nothing of it starts."""
    rec = tmp_path / "rec"
    task = await manager.create({"name": "cancel-periodic", "handler": "demo", "data": {"recordTo": str(rec)},
                                 "schedule": {"type": "periodic", "interval": 2000}})
    witness = await manager.create({"name": "cancel-witness", "handler": "demo",
                                    "schedule": {"type": "periodic", "interval": 2000}})
    await _finished(manager, task.id, n=1)
    cancelled = await manager.cancel(task.id)
    cancelled_at = datetime.now(UTC)
    assert cancelled.status == TaskStatus.CANCELLED and cancelled.next_run is None
    ran_before = len(records(rec))

    async def witness_ran() -> Any:
        runs = [r for r in await manager.history(witness.id)
                if r.result is not None and r.scheduled_for is not None and r.scheduled_for > cancelled_at]
        return len(runs) >= 3 and runs

    await wait_for(witness_ran, 120, "three witness runs after the cancel")
    assert len(records(rec)) == ran_before
    started = [r for r in await manager.history(task.id) if r.started_at is not None and r.started_at > cancelled_at]
    assert started == []
    runs = await client.read_flow_runs(deployment_filter=_dep_filter(task.id), flow_run_filter=_scheduled())
    assert runs == []  # nothing left to start either
    with pytest.raises(TaskConflict):
        await manager.run_now(task.id)


async def test_pause_cancels_a_run_submitted_but_not_started(manager: Any, client: Any) -> None:
    """A run a worker has just submitted (Pending: its process is starting) when the pause
    lands is cancelled, so it cannot start while paused (its engine's move to Running is
    refused). The run is put in Pending here, as a worker's proposal would."""
    from prefect.states import Pending

    task = await manager.create({"name": "pause-pending", "handler": "demo",
                                 "schedule": {"type": "one-time", "startTime": "2099-01-01T00:00:00Z"}})
    [run] = await client.read_flow_runs(deployment_filter=_dep_filter(task.id))
    await client.set_flow_run_state(run.id, Pending(), force=True)
    await manager.pause(task.id)
    after = await client.read_flow_run(run.id)
    assert after.state is not None and after.state.type.value == "CANCELLED", after.state
    assert "paused" in (after.state.message or "")
    assert await client.read_flow_runs(deployment_filter=_dep_filter(task.id), flow_run_filter=_scheduled()) == []
    # It never ran, so its history shows no start (Prefect's start_time holds the end time).
    [seen] = [r for r in await manager.history(task.id) if r.id == str(run.id)]
    assert after.start_time is not None and seen.started_at is None and seen.ended_at is not None
