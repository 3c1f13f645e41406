"""Priority: with one run at a time, every high run starts before any normal, normal before low.

No worker runs while the runs are queued (this module does not use the shared
worker); then one worker with ``--limit 1`` drains the queues.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
import asyncio
from typing import Any

import pytest

from tests.fixtures import records, start_worker, wait_for

pytestmark = pytest.mark.integration


async def test_high_runs_before_normal_before_low(manager: Any, settings: Any, tmp_path: Path) -> None:
    rec = {p: tmp_path / f"{p}.jsonl" for p in ("high", "normal", "low")}
    later = datetime.now(UTC) + timedelta(days=1)
    tasks = {}
    for prio in ("low", "normal", "high"):  # created low first: FIFO alone would invert the order
        tasks[prio] = await manager.create({
            "name": f"prio-{prio}", "handler": "demo", "priority": prio,
            "schedule": {"type": "periodic", "interval": 86_400_000, "startTime": later.isoformat()},
            "data": {"recordTo": str(rec[prio])},
        })
    for _ in range(3):
        for prio in ("low", "normal", "high"):
            await manager.run_now(tasks[prio].id)

    worker = await asyncio.to_thread(start_worker, settings, 1)
    try:
        async def all_done() -> bool:
            return all(len(records(rec[p])) == 3 for p in rec)

        await wait_for(all_done, 300, "all nine runs")
    finally:
        await asyncio.to_thread(worker.stop)

    starts = sorted(
        (datetime.fromisoformat(r["at"]), prio) for prio in rec for r in records(rec[prio])
    )
    order = [prio for _, prio in starts]
    assert order == ["high"] * 3 + ["normal"] * 3 + ["low"] * 3, order
