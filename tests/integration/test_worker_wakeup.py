"""The warm worker is told of new runs: a run-now starts without waiting for the periodic poll.

Its own module: no other worker of the pool is alive here, so the run can only be taken by
this worker, whose periodic poll is an hour away.
"""

from __future__ import annotations

from typing import Any

import pytest

pytestmark = pytest.mark.integration

ONCE = {"type": "one-time"}


async def test_a_run_now_is_picked_up_because_the_worker_is_told(prefect_server: Any, settings: Any,
                                                                  manager: Any) -> None:
    """The other tests poll every second; here the worker's periodic poll is an hour away (it
    polled once at its start), so a run-now that runs at all was taken because the worker
    heard of it: the event stream of its pool, not the poll, is how runs are found."""
    import asyncio

    from tests.fixtures import start_worker

    w = await asyncio.to_thread(start_worker, settings, 2, {"PREFECT_WORKER_QUERY_SECONDS": "3600"})
    try:
        task = await manager.create({"name": "told-not-polled", "handler": "demo",
                                     "schedule": {**ONCE, "startTime": "2099-01-01T00:00:00Z"}})
        for _ in range(2):  # and again: the first wake-up did not use the subscription up
            run_id = await manager.run_now(task.id)
            result = await manager.wait_for_run(run_id, timeout_s=180)  # a safety net, far below the hour
            assert result.success
    finally:
        w.stop()
