"""Two warm workers on one pool never execute the same run twice."""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures import records, start_worker, wait_for

pytestmark = pytest.mark.integration

RUNS = 40


async def test_each_run_executes_once_with_two_workers(manager: Any, settings: Any, tmp_path: Path) -> None:
    rec = tmp_path / "rec.jsonl"
    later = (datetime.now(UTC) + timedelta(days=1)).isoformat()
    task = await manager.create({"name": "shared", "handler": "demo", "data": {"recordTo": str(rec)},
                                 "schedule": {"type": "periodic", "interval": 86_400_000, "startTime": later}})
    workers = await asyncio.gather(*(asyncio.to_thread(start_worker, settings, 2) for _ in range(2)))
    try:
        sem = asyncio.Semaphore(4)

        async def run_now() -> str:
            async with sem:
                return await manager.run_now(task.id)

        run_ids = await asyncio.gather(*(run_now() for _ in range(RUNS)))
        results = await asyncio.gather(*(manager.wait_for_run(r, timeout_s=600) for r in run_ids))
    finally:
        await asyncio.gather(*(asyncio.to_thread(w.stop) for w in workers))
    assert all(r.success for r in results)
    executions = Counter(line["run"] for line in records(rec))
    assert set(executions) == set(run_ids)
    assert max(executions.values()) == 1, [r for r, n in executions.items() if n > 1]
    pids = {line["pid"] for line in records(rec)}
    assert len(pids) == RUNS  # one forked child per run
    # Each worker logs the runs it tried to take; a lost race logs too, hence >=.
    submitted = [w.part.log_path.read_text().count("submitting flow run") for w in workers]
    assert sum(submitted) >= RUNS, submitted
