"""A host without a trigger daemon: the worker's own slow re-check releases waiting runs."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bgtasks.settings import Settings
from tests.fixtures import WorkerHandle, records, start_worker
from tests.integration.test_constraints import _done, _waiting
from tests.power import write_power_tree

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def power(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("power_supply")
    write_power_tree(root, percent=40, plugged=False)
    return root


@pytest.fixture(scope="module")
def lone_worker(prefect_server: Any, settings: Settings, power: Path) -> Iterator[WorkerHandle]:
    w = start_worker(settings, limit=2, env={
        "BGTASKS_DAEMON_POWER_ROOT": str(power), "BGTASKS_DAEMON_SENSORS": json.dumps(["power"]),
        "BGTASKS_WORKER_CONSTRAINT_RECHECK_S": "1"})
    yield w
    w.stop()


async def test_without_a_daemon_the_worker_releases_a_run_when_its_constraints_hold(
    manager: Any, lone_worker: WorkerHandle, power: Path, tmp_path: Path
) -> None:
    log = tmp_path / "runs.jsonl"
    task = await manager.create({
        "name": "recheck-charging", "handler": "demo", "schedule": {"type": "one-time"},
        "constraints": {"requiresCharging": True}, "data": {"recordTo": str(log)},
    })
    await _waiting(manager, task.id, "requiresCharging")
    write_power_tree(power, percent=40, plugged=True)
    done = await _done(manager, task.id)
    assert done.status.value == "completed" and done.result.attempts == 1 and len(records(log)) == 1
