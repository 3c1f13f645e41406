"""Prefect's stock process worker stays usable for the pool (BGTASKS_WORKER_TYPE=process)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from tests.fixtures import start_worker, wait_for

pytestmark = pytest.mark.integration

ONCE = {"type": "one-time"}


async def test_stock_process_worker_serves_the_pool(manager: Any, settings: Any) -> None:
    stock = settings.model_copy(update={"worker": settings.worker.model_copy(update={"type": "process"})})
    worker = await asyncio.to_thread(start_worker, stock, 2)
    try:
        assert "--type" in worker.part.argv and worker.part.argv[worker.part.argv.index("--type") + 1] == "process"
        task = await manager.create({"name": "stock", "handler": "demo", "schedule": ONCE})

        async def done() -> Any:
            t = await manager.get(task.id)
            return t if t.result is not None else None

        t = await wait_for(done, 180, "the stock worker's run")
        assert t.result.success
    finally:
        await asyncio.to_thread(worker.stop)
