"""Two workers of the pool on one server: 1,000 short runs, each executed exactly once?

Starts a Prefect server (PostgreSQL with ``--postgres``, the setting for more than
one machine; SQLite by default), prepares it as ``bgtasks up`` does, starts two
warm workers (``--limit 4`` each), creates ``--runs`` runs of one demo task (4 at a
time) and waits until every one is final. Each handler execution appends a line
naming its flow run and its zygote (one per worker) to one file.

Prints: runs completed, executions, duplicates (a run executed twice: must be 0),
how the runs split between the workers, how often the server refused a second
claim of a run already taken ("Aborted submission", the guard that makes this
safe), wall time and runs per minute.

    python bench/workers.py --postgres postgresql://postgres@127.0.0.1:5432
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any
from uuid import UUID

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


async def create_runs(settings: Any, record: Path, n: int) -> tuple[str, set[str]]:
    from prefect.client.orchestration import get_client

    from bgtasks.manager import TaskManager

    async with get_client() as client:
        mgr = TaskManager(client, settings.worker.pool)
        task = await mgr.create({"name": "bench-two-workers", "handler": "demo",
                                 "schedule": {"type": "one-time", "startTime": "2099-01-01T00:00:00Z"},
                                 "data": {"recordTo": str(record)}})
        gate = asyncio.Semaphore(4)

        async def one() -> str:
            async with gate:
                return await mgr.run_now(task.id)

        return task.id, set(await asyncio.gather(*(one() for _ in range(n))))


async def wait_final(task_id: str, run_ids: set[str], timeout_s: float) -> dict[str, int]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterDeploymentId

    flt = FlowRunFilter(deployment_id=FlowRunFilterDeploymentId(any_=[UUID(task_id)]))
    deadline = time.monotonic() + timeout_s
    async with get_client() as client:
        while True:
            states: dict[str, str] = {}
            offset = 0
            while page := await client.read_flow_runs(flow_run_filter=flt, limit=200, offset=offset):
                states.update({str(r.id): r.state.type.value for r in page if r.state is not None})
                offset += len(page)
            final = {rid: s for rid, s in states.items() if rid in run_ids
                     and s in ("COMPLETED", "FAILED", "CRASHED", "CANCELLED")}
            if len(final) == len(run_ids) or time.monotonic() > deadline:
                return dict(Counter(final.values()))
            await asyncio.sleep(1)


def main() -> None:
    from bench.common import BenchHome, add_postgres_option

    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=1000)
    ap.add_argument("--limit", type=int, default=4, help="runs each worker executes at once")
    ap.add_argument("--timeout-s", type=float, default=3600)
    add_postgres_option(ap)
    args = ap.parse_args()

    home = BenchHome("workers", args.postgres)
    settings = home.settings
    from tests.fixtures import ServerHandle, start_worker

    server = ServerHandle(settings)
    server.start()
    workers = []
    record = home.path / "executions.jsonl"
    try:
        workers = [start_worker(settings, args.limit) for _ in range(2)]
        t0 = time.monotonic()
        task_id, run_ids = asyncio.run(create_runs(settings, record, args.runs))
        created_s = time.monotonic() - t0
        outcome = asyncio.run(wait_final(task_id, run_ids, args.timeout_s))
        wall = time.monotonic() - t0
    finally:
        for w in workers:
            w.stop()
        server.stop()
    lines = [json.loads(line) for line in record.read_text().splitlines()] if record.exists() else []
    per_run = Counter(line["run"] for line in lines)
    per_worker = Counter(line["ppid"] for line in lines)
    aborted = sum(w.part.log_path.read_text().count("Aborted submission") for w in workers)
    result = {
        "database": home.database, "runs": args.runs, "created_in_s": round(created_s, 1),
        "final_states": outcome, "executions": len(lines),
        "duplicates": sum(c - 1 for c in per_run.values() if c > 1),
        "never_executed": len(run_ids - set(per_run)),
        "per_worker": sorted(per_worker.values()), "second_claims_refused": aborted,
        "wall_s": round(wall, 1), "runs_per_min": round(args.runs / wall * 60, 1),
    }
    home.drop()
    out = ROOT / "build" / "bench" / f"workers-{home.database.lower()}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(f"\nTwo warm workers (--limit {args.limit} each), one server ({home.database}), "
          f"{os.cpu_count()} cores, {args.runs} runs")
    for k, v in result.items():
        print(f"  {k:24} {v}")
    if result["duplicates"] or result["never_executed"] or outcome.get("COMPLETED") != args.runs:
        sys.exit(1)


if __name__ == "__main__":
    main()
