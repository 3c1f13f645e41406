"""requiresDeviceIdle gates a real run: busy, it waits; once the machine is quiet, it runs.

The worker here has no trigger daemon: its own re-check (every second) samples the
CPU and releases the run. "Busy" is two processes spinning on this 2-core machine;
the idle threshold is raised to 50% of all CPUs (``BGTASKS_DAEMON_IDLE_CPU_PERCENT``)
so that the test's own stack (server, worker) never counts as busy.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bgtasks.settings import Settings
from tests.fixtures import DaemonProcess, WorkerHandle, records, start_worker, wait_for
from tests.integration.test_constraints import _done, _waiting

pytestmark = pytest.mark.integration


IDLE_ENV = {"BGTASKS_DAEMON_SENSORS": json.dumps(["idle"]), "BGTASKS_DAEMON_IDLE_MODE": "cpu",
            "BGTASKS_DAEMON_IDLE_CPU_PERCENT": "50", "BGTASKS_DAEMON_IDLE_POLL_S": "0.5"}


@pytest.fixture(scope="module")
def idle_worker(prefect_server: Any, settings: Settings) -> Iterator[WorkerHandle]:
    w = start_worker(settings, limit=1, env={**IDLE_ENV, "BGTASKS_WORKER_CONSTRAINT_RECHECK_S": "1"})
    yield w
    w.stop()


def spin() -> list[subprocess.Popen[bytes]]:
    """Two processes spinning: this 2-core machine is busy."""
    return [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(2)]


def stop(procs: list[subprocess.Popen[bytes]]) -> None:
    for p in procs:
        p.kill()
        p.wait()


@pytest.fixture
def busy() -> Iterator[list[subprocess.Popen[bytes]]]:
    procs = spin()
    try:
        yield procs
    finally:
        stop(procs)


async def test_an_idle_task_waits_while_the_machine_is_busy_and_runs_when_it_is_quiet(
    manager: Any, idle_worker: WorkerHandle, busy: list[subprocess.Popen[bytes]], tmp_path: Path
) -> None:
    log = tmp_path / "runs.jsonl"
    task = await manager.create({
        "name": "needs-idle", "handler": "demo", "schedule": {"type": "one-time"},
        "constraints": {"requiresDeviceIdle": True},
        "retryPolicy": {"maxRetries": 2, "initialBackoffMs": 100}, "data": {"recordTo": str(log)},
    })
    waiting = await _waiting(manager, task.id, "requiresDeviceIdle")
    assert records(log) == [] and waiting.status.value == "pending"
    stop(busy)
    done = await _done(manager, task.id)
    assert done.status.value == "completed" and done.result.attempts == 1 and len(records(log)) == 1


async def test_a_device_idle_task_runs_when_the_machine_goes_quiet(
    manager: Any, idle_worker: WorkerHandle, settings: Settings, tmp_path: Path
) -> None:
    log = tmp_path / "runs.jsonl"
    await manager.create({"name": "on-idle", "handler": "demo", "schedule": {"type": "triggered"},
                          "trigger": {"on": "device.idle"}, "data": {"recordTo": str(log)}})
    procs = spin()  # busy before the daemon's first sample: its baseline is "active"
    daemon = DaemonProcess(IDLE_ENV, settings.home / "idle-host", settings.home / "logs" / "idle-daemon.log")
    try:
        daemon.wait_ready()
        stop(procs)
        [run] = await wait_for(lambda: _records(log), 180, "the device.idle run")
        assert run["event"]["name"] == "bgtasks.device.idle"
    finally:
        stop(procs)
        daemon.stop()


async def _records(path: Path) -> list[Any]:
    return records(path)
