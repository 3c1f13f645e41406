"""Triggered tasks end to end: a real `bgtasks daemon` (inotify on temp dirs, a fake sysfs
power tree), real Prefect events and automations, a real worker running the handler."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

import pytest

from bgtasks.errors import InvalidTask
from bgtasks.settings import Settings
from tests.fixtures import DaemonProcess, records, wait_for
from tests.power import write_power_tree

pytestmark = [pytest.mark.integration, pytest.mark.postgresql, pytest.mark.usefixtures("worker")]

DEADLINE_S = 180


class Daemon(DaemonProcess):
    """The daemon with the file and power sensors on the test's roots, quick polls."""

    def __init__(self, settings: Settings, root: Path, power: Path) -> None:
        super().__init__({"BGTASKS_DAEMON_ALLOWED_ROOTS": json.dumps([str(root)]),
                          "BGTASKS_DAEMON_SENSORS": json.dumps(["file", "power"]),
                          "BGTASKS_DAEMON_POWER_ROOT": str(power),
                          "BGTASKS_DAEMON_POWER_POLL_S": "0.2",
                          "BGTASKS_DAEMON_RULES_REFRESH_S": "0.5"},
                         settings.home, settings.home / "logs" / "test-daemon.log")

    async def ready(self) -> None:
        async def check() -> bool:
            assert self.proc.poll() is None, "the daemon exited"
            return self.status().get("pid") == self.proc.pid

        await wait_for(check, DEADLINE_S, "the daemon to start")

    async def watching(self, task_id: str) -> None:
        async def check() -> bool:
            assert self.proc.poll() is None, "the daemon exited"
            return task_id in self.status().get("rules", [])

        await wait_for(check, DEADLINE_S, f"the daemon to watch for task {task_id}")

    async def emitted_more_than(self, n: int) -> int:
        async def check() -> int:
            return self.status().get("emitted", 0) > n and self.status()["emitted"]

        return await wait_for(check, DEADLINE_S, f"the daemon to emit more than {n} events")


@pytest.fixture(scope="module")
def roots(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("watched")
    power = tmp_path_factory.mktemp("power_supply")
    write_power_tree(power, percent=50, plugged=True)
    return root, power


@pytest.fixture(scope="module")
def daemon(prefect_server: Any, settings: Settings, roots: tuple[Path, Path]) -> Iterator[Daemon]:
    (settings.home / "logs").mkdir(parents=True, exist_ok=True)
    d = Daemon(settings, *roots)
    yield d
    d.stop()


async def _records(path: Path, n: int, what: str) -> list[dict[str, Any]]:
    async def check() -> list[dict[str, Any]] | None:
        got = records(path)
        return got if len(got) >= n else None

    return await wait_for(check, DEADLINE_S, what)


async def test_a_file_dropped_in_a_watched_directory_starts_the_task_once_with_its_path(
    manager: Any, daemon: Daemon, roots: tuple[Path, Path], tmp_path: Path
) -> None:
    inbox = roots[0] / "inbox"
    inbox.mkdir()
    log = tmp_path / "runs.jsonl"
    task = await manager.create({
        "name": "on-csv", "handler": "demo", "schedule": {"type": "triggered"},
        "trigger": {"on": "file.arrived", "path": str(inbox), "pattern": "*.csv", "debounceMs": 300},
        "data": {"recordTo": str(log)},
    })
    assert task.type.value == "triggered" and task.next_run is None
    await daemon.watching(task.id)

    (inbox / "ignored.txt").write_text("not a csv")
    (inbox / "a.csv").write_text("1,2,3\n")
    first = await _records(log, 1, "the run for a.csv")
    assert first[0]["event"]["name"] == "bgtasks.file.arrived"
    assert first[0]["event"]["payload"]["paths"] == [str(inbox / "a.csv")]

    # A burst of 1,000 files is one run (debounce), listing the count.
    burst = roots[0] / "burst"
    burst.mkdir()
    task2 = await manager.create({
        "name": "on-burst", "handler": "demo", "schedule": {"type": "triggered"},
        "trigger": {"on": "file.arrived", "path": str(burst), "pattern": "*.csv", "debounceMs": 1500},
        "data": {"recordTo": str(tmp_path / "burst.jsonl")},
    })
    await daemon.watching(task2.id)
    for i in range(1000):
        (burst / f"f{i:04}.csv").write_text(str(i))
    (inbox / "b.csv").write_text("4,5,6\n")  # a second file for the first task, after the burst
    runs = await _records(log, 2, "the run for b.csv")
    assert [r["event"]["payload"]["paths"] for r in runs] == [[str(inbox / "a.csv")], [str(inbox / "b.csv")]]
    burst_runs = await _records(tmp_path / "burst.jsonl", 1, "the burst's run")
    payload = burst_runs[0]["event"]["payload"]
    assert payload["count"] == 1000 and len(burst_runs) == 1

    # The watched directory deleted and created again keeps working.
    import shutil

    shutil.rmtree(inbox)
    inbox.mkdir()
    (inbox / "c.csv").write_text("7\n")
    runs = await _records(log, 3, "the run for c.csv after re-creating the directory")
    assert runs[2]["event"]["payload"]["paths"] == [str(inbox / "c.csv")]
    assert len(records(tmp_path / "burst.jsonl")) == 1  # still one run for the burst


async def test_a_paused_triggered_task_does_not_run_and_runs_again_when_resumed(
    manager: Any, daemon: Daemon, roots: tuple[Path, Path], tmp_path: Path
) -> None:
    drop = roots[0] / "paused"
    drop.mkdir()
    log = tmp_path / "runs.jsonl"
    task = await manager.create({
        "name": "paused-trigger", "handler": "demo", "schedule": {"type": "triggered"},
        "trigger": {"on": "file.created", "path": str(drop), "debounceMs": 100},
        "data": {"recordTo": str(log)},
    })
    await daemon.watching(task.id)
    await manager.pause(task.id)
    before = daemon.status().get("emitted", 0)
    (drop / "while-paused").write_text("x")
    await daemon.emitted_more_than(before)  # the event went out...
    await manager.resume(task.id)
    (drop / "after-resume").write_text("y")
    runs = await _records(log, 1, "the run after resume")
    # ...and started nothing: the only run is the one after resume.
    assert [r["event"]["payload"]["paths"] for r in runs] == [[str(drop / "after-resume")]]
    assert (await manager.get(task.id)).status.value in ("running", "completed")


async def test_battery_low_and_ok_events_start_their_tasks(
    manager: Any, daemon: Daemon, roots: tuple[Path, Path], tmp_path: Path
) -> None:
    power = roots[1]
    low_log, ok_log = tmp_path / "low.jsonl", tmp_path / "ok.jsonl"
    await manager.create({"name": "on-low", "handler": "demo", "schedule": {"type": "triggered"},
                          "trigger": {"on": "power.battery-low"}, "data": {"recordTo": str(low_log)}})
    await manager.create({"name": "on-ok", "handler": "demo", "schedule": {"type": "triggered"},
                          "trigger": {"on": "power.battery-ok"}, "data": {"recordTo": str(ok_log)}})
    before = daemon.status().get("emitted", 0)
    write_power_tree(power, percent=12, plugged=False)  # unplugged at 12%: low (and unplugged)
    low = await _records(low_log, 1, "the battery-low run")
    assert low[0]["event"]["payload"]["percent"] == 12
    emitted = await daemon.emitted_more_than(before)
    log_from = daemon.log_path.stat().st_size
    write_power_tree(power, percent=20, plugged=False)  # within the hysteresis: nothing

    async def seen_at_20() -> bool:  # the daemon has sampled 20% (its state file has its snapshot)
        try:
            return json.loads(daemon.state.read_text()).get("power", {}).get("percent") == 20
        except (OSError, ValueError):
            return False

    await wait_for(seen_at_20, DEADLINE_S, "the daemon to sample 20%")
    write_power_tree(power, percent=21, plugged=False)  # above 15 + 5: ok
    ok = await _records(ok_log, 1, "the battery-ok run")
    assert ok[0]["event"]["payload"]["percent"] == 21
    # The daemon sampled 20% and emitted battery-ok once, at 21%.
    with open(daemon.log_path, "rb") as fh:
        fh.seek(log_from)
        oks = [line for line in fh.read().decode(errors="replace").splitlines() if "bgtasks.power.battery-ok" in line]
    assert len(oks) == 1 and '"percent": 21' in oks[0], oks
    assert len(records(low_log)) == 1
    assert emitted >= before + 1


async def test_a_killed_daemon_emits_what_changed_while_it_was_down_once_on_restart(
    manager: Any, daemon: Daemon, roots: tuple[Path, Path], tmp_path: Path
) -> None:
    power = roots[1]
    low_log, ok_log = tmp_path / "low.jsonl", tmp_path / "ok.jsonl"
    await manager.create({"name": "low-after-restart", "handler": "demo", "schedule": {"type": "triggered"},
                          "trigger": {"on": "power.battery-low"}, "data": {"recordTo": str(low_log)}})
    await manager.create({"name": "ok-after-restart", "handler": "demo", "schedule": {"type": "triggered"},
                          "trigger": {"on": "power.battery-ok"}, "data": {"recordTo": str(ok_log)}})
    await daemon.ready()
    before = daemon.status().get("emitted", 0)
    write_power_tree(power, percent=60, plugged=True)
    await daemon.emitted_more_than(before)  # the daemon has seen "plugged at 60%" and saved it
    daemon.kill()
    write_power_tree(power, percent=9, plugged=False)  # the battery ran down while the daemon was dead
    daemon.start()
    low = await _records(low_log, 1, "the battery-low run after the restart")
    assert low[0]["event"]["payload"]["percent"] == 9
    write_power_tree(power, percent=9, plugged=True)  # plugging in clears low
    await _records(ok_log, 1, "the battery-ok run")
    assert len(records(low_log)) == 1  # emitted once, not again by the restarted daemon


@pytest.mark.parametrize(
    ("trigger", "field"),
    [
        ({"on": "file.created", "path": "relative/dir"}, "trigger.path"),
        ({"on": "file.created", "path": "/no/such/dir/anywhere"}, "trigger.path"),
        ({"on": "file.created", "path": "/etc"}, "trigger.path"),
        ({"on": "lunar.eclipse"}, "trigger.on"),
        ({"on": "power.plugged", "path": "/tmp"}, "trigger.path"),
        ({"on": "power.plugged", "networkType": "wifi"}, "trigger.networkType"),
    ],
    ids=["relative", "missing", "outside-roots", "unknown-event", "path-on-power", "network-type-on-power"],
)
async def test_invalid_triggers_are_rejected_and_store_nothing(
    manager: Any, roots: tuple[Path, Path], trigger: dict[str, Any], field: str
) -> None:
    from bgtasks.manager import TaskManager

    strict = TaskManager(manager.client, manager.pool, allowed_roots=[roots[0]])
    before = {t.name for t in await strict.list()}
    with pytest.raises(InvalidTask) as err:
        await strict.create({"name": "bad-trigger", "handler": "demo", "schedule": {"type": "triggered"},
                             "trigger": trigger})
    assert field in [e["field"] for e in err.value.errors], err.value.errors
    assert {t.name for t in await strict.list()} == before


async def _emit(*events: Any) -> None:
    from prefect.events.clients import get_events_client

    async with get_events_client() as client:
        for event in events:
            await client.emit(event)


def _action_failed(automation: Any, task_id: str, triggering: Any, status: int) -> Any:
    """The event Prefect's actions service emits when a run-deployment action fails
    (prefect.server.events.actions.Action.fail), for one invocation of the automation."""
    from uuid import uuid4

    from prefect.events.schemas.events import Event

    return Event(
        event="prefect.automation.action.failed",
        resource={"prefect.resource.id": f"prefect.automation.{automation.id}",
                  "prefect.resource.name": automation.name,
                  "prefect.trigger-type": "event", "prefect.posture": "Reactive"},
        related=[{"prefect.resource.id": f"prefect.deployment.{task_id}", "prefect.resource.role": "target"},
                 {"prefect.resource.id": f"prefect.event.{triggering.id}",
                  "prefect.resource.role": "triggering-event"}],
        payload={"action_index": 0, "action_type": "run-deployment", "invocation": str(uuid4()),
                 "reason": f"Unexpected status from 'run-deployment' action: {status}", "status_code": status},
    )


async def test_a_run_the_automation_failed_to_create_is_created_once_by_the_worker(
    manager: Any, client: Any, tmp_path: Path
) -> None:
    """Prefect drops a run-deployment action that failed (a busy SQLite server answers the
    create with 503). The worker re-creates the run from the failure event, with the event's
    parameters and the action's own idempotency key; a failure that would fail again (4xx)
    is left alone."""
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterDeploymentId
    from prefect.events.filters import EventFilter, EventNameFilter, EventOccurredFilter, EventResourceFilter
    from prefect.events.schemas.events import Event

    from bgtasks.policies.failed_triggers import read_failed_triggers
    from bgtasks.stored import automation_name

    log = tmp_path / "runs.jsonl"
    task = await manager.create({"name": "on-low-retried", "handler": "demo", "schedule": {"type": "triggered"},
                                 "trigger": {"on": "power.battery-low"}, "data": {"recordTo": str(log)}})
    [automation] = await client.read_automations_by_name(automation_name(task.id))
    # The automation itself must not run the task here: only the worker's re-run can.
    await client.pause_automation(automation.id)

    def low(percent: int) -> Any:
        return Event(event="bgtasks.power.battery-low", payload={"percent": percent},
                     resource={"prefect.resource.id": "bgtasks.host.test", "prefect.resource.name": "test"})

    first, second = low(9), low(8)
    failed = _action_failed(automation, task.id, first, 503)
    await _emit(first, failed)
    runs = await _records(log, 1, "the re-created run")
    assert runs[0]["event"]["id"] == str(first.id) and runs[0]["event"]["payload"] == {"percent": 9}
    run = await client.read_flow_run(UUID(runs[0]["run"]))
    assert run.idempotency_key == (f"automation {automation.id}, action 0, "
                                   f"invocation {failed.payload['invocation']}")

    # The same failure told again, one that would fail again, then a second busy one.
    busy_again = _action_failed(automation, task.id, second, 503)
    await _emit(failed, second, _action_failed(automation, task.id, second, 409), busy_again)
    runs = await _records(log, 2, "the second re-created run")
    assert [r["event"]["payload"]["percent"] for r in runs] == [9, 8]
    flt = FlowRunFilter(deployment_id=FlowRunFilterDeploymentId(any_=[UUID(task.id)]))
    assert len(await client.read_flow_runs(flow_run_filter=flt)) == 2

    # The worker's scan (for failures it did not see live) reads every page of the events
    # API, newest first: 55 newer failures that would fail again push the two busy ones
    # off the first page (50).
    await _emit(*[_action_failed(automation, task.id, second, 409) for _ in range(55)])
    stored = EventFilter(occurred=EventOccurredFilter(since=datetime.now(UTC) - timedelta(hours=1)),
                         event=EventNameFilter(name=["prefect.automation.action.failed"]),
                         resource=EventResourceFilter(id=[f"prefect.automation.{automation.id}"]))

    async def all_stored() -> bool:
        return (await client.read_events(filter=stored, limit=1)).total >= 57

    await wait_for(all_stored, DEADLINE_S, "the failure events to be stored")
    scanned = [f for f in await read_failed_triggers(client, timedelta(minutes=15))
               if f.deployment_id == UUID(task.id)]
    keys = [f"automation {automation.id}, action 0, invocation {e.payload['invocation']}"
            for e in (failed, busy_again)]
    assert [f.idempotency_key for f in scanned] == keys


async def test_the_daemons_outbox_loses_no_event_across_a_server_restart(
    manager: Any, daemon: Daemon, roots: tuple[Path, Path], tmp_path: Path, prefect_server: Any
) -> None:
    """The change happens while the Prefect server is down: the daemon keeps the event and
    posts it when the server is back, and the triggered task runs once."""
    power = roots[1]
    log = tmp_path / "plugged.jsonl"
    write_power_tree(power, percent=60, plugged=False)
    await daemon.ready()

    async def seen(plugged: bool) -> bool:
        try:
            return json.loads(daemon.state.read_text()).get("power", {}).get("plugged") is plugged
        except (OSError, ValueError):
            return False

    await wait_for(lambda: seen(False), DEADLINE_S, "the daemon to see the charger unplugged")
    await manager.create({"name": "plugged-while-down", "handler": "demo", "schedule": {"type": "triggered"},
                          "trigger": {"on": "power.plugged"}, "data": {"recordTo": str(log)}})
    before = daemon.status().get("emitted", 0)
    await asyncio.to_thread(prefect_server.stop)
    try:
        write_power_tree(power, percent=60, plugged=True)
        await wait_for(lambda: seen(True), DEADLINE_S, "the daemon to see the charger while the server is down")
        await daemon.emitted_more_than(before)  # emitted into its outbox: nobody to post it to yet
    finally:
        await asyncio.to_thread(prefect_server.start)
    [run] = await _records(log, 1, "the power.plugged run after the server restart")
    assert run["event"]["name"] == "bgtasks.power.plugged"
    write_power_tree(power, percent=60, plugged=False)
