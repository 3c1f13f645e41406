"""Persistence: stop and restart the Prefect server; tasks, schedules, paused flags and results survive."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from bgtasks.models import TaskStatus
from tests.fixtures import start_worker, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.postgresql]


async def test_everything_survives_a_server_restart(manager: Any, prefect_server: Any, settings: Any) -> None:
    worker = await asyncio.to_thread(start_worker, settings, 2)
    try:
        done = await manager.create({
            "name": "persist-done", "handler": "demo", "priority": "high",
            "schedule": {"type": "one-time"}, "data": {"message": "kept"},
            "retryPolicy": {"maxRetries": 2}, "timeoutMs": 60_000,
        })

        async def finished() -> Any:
            # attempts come from task-run events, which may land after the flow run's state
            t = await manager.get(done.id)
            return t if t.result is not None and t.result.attempts is not None else None

        await wait_for(finished, 120, "the one-time task to finish")
    finally:
        await asyncio.to_thread(worker.stop)
    periodic = await manager.create({
        "name": "persist-periodic", "handler": "data-sync", "priority": "low",
        "schedule": {"type": "periodic", "cron": "0 3 * * *", "timezone": "Europe/Paris"},
        "constraints": {"requiresNetwork": True},
    })
    paused = await manager.create({
        "name": "persist-paused", "handler": "demo",
        "schedule": {"type": "periodic", "interval": 60_000},
    })
    paused = await manager.pause(paused.id)

    before = {t.id: t for t in [await manager.get(x.id) for x in (done, periodic, paused)]}
    assert before[done.id].result.data["message"] == "kept"

    await asyncio.to_thread(prefect_server.restart)

    from prefect.client.orchestration import get_client

    from bgtasks.manager import TaskManager

    async with get_client() as fresh:
        again = TaskManager(fresh, settings.worker.pool)
        after = {t.id: await again.get(t.id) for t in before.values()}
        listed = {t.id for t in await again.list()}
    assert set(before) <= listed
    for tid, t in before.items():
        assert after[tid] == t, tid
    assert after[done.id].status == TaskStatus.COMPLETED and after[done.id].result.success
    assert after[paused.id].paused and after[paused.id].next_run is None
    assert after[periodic.id].schedule.cron == "0 3 * * *" and after[periodic.id].next_run is not None
