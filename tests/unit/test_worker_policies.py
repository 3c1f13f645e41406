"""The warm worker composed of policies: hook order, and the small policies on their own.

The worker's own loop against a real server is tests/integration/test_warm_worker.py; the
policies' behaviour against a real server is in the integration tests each names.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from uuid import uuid4

from bgtasks.policies import Policy, default_policies
from bgtasks.policies.paused import DropPausedRuns
from bgtasks.policies.start_time import DropBeforeStartTime, before_start
from bgtasks.settings import load_settings
from bgtasks.warm_worker import WarmWorker


class Recording(Policy):
    def __init__(self, name: str, calls: list[str], allow: bool = True) -> None:
        self.name, self.calls, self.allow = name, calls, allow

    async def before_submit(self, worker: Any, flow_run: Any) -> bool:
        self.calls.append(self.name)
        return self.allow


async def test_the_first_policy_that_holds_a_run_back_ends_its_submission() -> None:
    calls: list[str] = []
    worker = WarmWorker(work_pool_name="p", policies=[
        Recording("a", calls), Recording("b", calls, allow=False), Recording("c", calls)])
    run = SimpleNamespace(id=uuid4())
    assert await worker._propose_pending_state(run) is False
    assert calls == ["a", "b"]  # c is never asked; Prefect's proposal is never made


def test_the_default_policies_run_in_the_order_their_hooks_depend_on() -> None:
    names = [type(p).__name__ for p in default_policies(load_settings())]
    # Dropped runs emit nothing; the missing event goes out before any state change; the
    # constraints gate a run only once it is due.
    # Another host's run is left untouched before anything else looks at it.
    assert names == ["RunOnEventHost", "DropPausedRuns", "DropBeforeStartTime", "EmitScheduledEvent", "WaitUntilDue",
                     "Constraints", "CatchUp", "CrashRecovery", "FailedTriggers", "PushSenders"]


class FakeClient:
    def __init__(self, paused: bool) -> None:
        self.paused, self.deleted = paused, []

    async def read_deployment(self, deployment_id: Any) -> Any:
        return SimpleNamespace(paused=self.paused)

    async def delete_flow_run(self, run_id: Any) -> None:
        self.deleted.append(run_id)


def fake_worker(client: FakeClient) -> Any:
    return SimpleNamespace(client=client, log=logging.getLogger("test"))


def scheduler_run(**kw: Any) -> Any:
    fields = {"id": uuid4(), "deployment_id": uuid4(), "auto_scheduled": True, "parameters": {},
              "expected_start_time": datetime.now(UTC), **kw}
    return SimpleNamespace(**fields)


async def test_a_paused_tasks_scheduler_run_is_dropped_and_its_run_now_is_not() -> None:
    client = FakeClient(paused=True)
    run = scheduler_run()
    assert await DropPausedRuns().before_submit(fake_worker(client), run) is False
    assert client.deleted == [run.id]
    run_now = scheduler_run()
    run_now.auto_scheduled = False
    assert await DropPausedRuns().before_submit(fake_worker(client), run_now) is True
    assert client.deleted == [run.id]
    active = FakeClient(paused=False)
    assert await DropPausedRuns().before_submit(fake_worker(active), scheduler_run()) is True
    assert active.deleted == []


async def test_a_periodic_run_due_before_the_start_time_is_dropped() -> None:
    start = datetime(2030, 1, 1, tzinfo=UTC)
    task = {"name": "t", "handler": "demo",
            "schedule": {"type": "periodic", "interval": 60000, "startTime": "2030-01-01T00:00:00Z"}}
    early = scheduler_run(parameters={"task": task})
    early.expected_start_time = start - timedelta(minutes=5)
    on_time = scheduler_run(parameters={"task": task})
    on_time.expected_start_time = start
    assert before_start(early) and not before_start(on_time)
    client = FakeClient(paused=False)
    assert await DropBeforeStartTime().before_submit(fake_worker(client), early) is False
    assert await DropBeforeStartTime().before_submit(fake_worker(client), on_time) is True
    assert client.deleted == [early.id]


def test_the_push_policy_removes_sockets_of_workers_that_are_gone(tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    from bgtasks.policies.push import _remove_stale

    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True,
                          check=True).stdout.strip()  # a pid whose process has exited
    (tmp_path / f"push-{gone}.sock").touch()
    (tmp_path / f"push-{os.getpid()}.sock").touch()
    _remove_stale(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"push-{os.getpid()}.sock"]


def _triggered(run_on: str, host: str | None) -> dict[str, Any]:
    task = {"name": "t", "handler": "demo", "schedule": {"type": "triggered"},
            "trigger": {"on": "file.created", "path": "/tmp/in", "runOn": run_on}}
    from bgtasks.models import CreateTaskOptions
    from bgtasks.stored import parameters_for

    params = parameters_for(CreateTaskOptions.model_validate(task))
    if host is not None:
        params["event"] = {"name": "bgtasks.file.created", "host": host}
    return params


async def test_a_run_for_the_event_host_is_left_to_that_host_and_taken_there() -> None:
    from bgtasks.policies.host import RunOnEventHost, wanted_host

    assert wanted_host(_triggered("eventHost", "host-a")) == "host-a"
    assert wanted_host(_triggered("any", "host-a")) is None
    assert wanted_host(_triggered("eventHost", None)) is None  # run by hand: anywhere
    worker = SimpleNamespace(log=logging.getLogger("test"))
    run = SimpleNamespace(id=uuid4(), parameters=_triggered("eventHost", "host-a"))
    assert await RunOnEventHost("host-a").before_submit(worker, run) is True
    assert await RunOnEventHost("host-b").before_submit(worker, run) is False
    anywhere = SimpleNamespace(id=uuid4(), parameters=_triggered("any", "host-a"))
    assert await RunOnEventHost("host-b").before_submit(worker, anywhere) is True


class StateClient:
    """What the constraints policy writes through Prefect's client, recorded."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []

    async def set_flow_run_state(self, run_id: Any, state: Any, force: bool = False) -> None:
        self.calls.append(("set_state", state.name))

    async def update_flow_run(self, run_id: Any, **kw: Any) -> None:
        self.calls.append(("update", kw))


async def test_a_run_released_for_another_host_is_left_to_that_host_for_a_while() -> None:
    from bgtasks.models import CreateTaskOptions
    from bgtasks.policies.constraints import Constraints
    from bgtasks.stored import AWAITING, parameters_for
    from triggers.constraints.host import HostSnapshot
    from triggers.constraints.waiting import RELEASE_HOLD_S, left_to_another_host, release_message, released_for

    now = datetime.now(UTC)
    released = release_message("host b", "daemon")
    assert released_for(released) == "host b" and released_for("Not charging on host-a") is None
    assert left_to_another_host(released, now - timedelta(seconds=5), "host-a", now) == "host b"
    assert left_to_another_host(released, now - timedelta(seconds=5), "host b", now) is None
    assert left_to_another_host(released, now - timedelta(seconds=RELEASE_HOLD_S + 1), "host-a", now) is None

    settings = load_settings()
    settings.host_name = "host-a"
    policy = Constraints(settings)
    policy.snapshot = lambda: HostSnapshot()  # type: ignore[method-assign]  # nothing known here: every constraint fails
    client = StateClient()
    worker = SimpleNamespace(client=client, log=logging.getLogger("test"),
                             run_logger=lambda fr: logging.getLogger("test.run"))
    params = parameters_for(CreateTaskOptions.model_validate({
        "name": "t", "handler": "demo", "schedule": {"type": "one-time", "startTime": "2099-01-01T00:00:00Z"},
        "constraints": {"requiresCharging": True}}))
    run = SimpleNamespace(id=uuid4(), parameters=params, tags=[], expected_start_time=now,
                          state=SimpleNamespace(message=release_message("host-b", "worker"), timestamp=now))
    # Just released for host-b: host-a's worker leaves it Scheduled, writing nothing.
    assert await policy.before_submit(worker, run) is False
    assert client.calls == []
    # Released long ago (host-b may be gone): host-a sets it waiting, as for any run.
    run.state.timestamp = now - timedelta(seconds=RELEASE_HOLD_S + 1)
    assert await policy.before_submit(worker, run) is False
    assert ("set_state", AWAITING) in client.calls
