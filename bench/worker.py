"""The warm worker against Prefect's stock process worker, side by side on one server.

One Prefect server (SQLite, fresh home); two pools, ``bench-warm`` served by a
``bgtasks-warm`` worker and ``bench-process`` served by a stock ``process``
worker with Prefect's default settings; both workers run with ``--limit 4``
(bgtasks' default; an unlimited worker makes SQLite answer "database is locked").
Each pool has a deployment of the trivial ``demo`` handler.

Printed, per worker:

- idle CPU (% of one core) and RSS of the worker's processes (worker + zygote),
  over ``--idle-s`` seconds before any run;
- run-now latency: the API call that creates the run -> the handler's first
  line (the demo handler writes a timestamp), median and p95 over sequential runs;
- throughput: ``--burst`` runs created at once, trivial runs completed per minute;
- CPU per run during the burst: the worker's processes (the worker, the zygote,
  and the reaped run processes) and the server, divided by the runs.

    make bench      # or: .venv/bin/python bench/worker.py --runs 20 --burst 60
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


#: Goals of the run-cost work (docs/performance.md, "What a run costs").
GOALS = {"run-now latency p50 (s)": "0.250", "run-now latency p95 (s)": "0.500", "throughput (runs/min)": ">=180",
         "worker CPU per run (s)": "0.100", "server CPU per run (s)": "0.250"}
#: The warm worker's figures before that work: docs/performance.md as of 2026-11-29 (this
#: machine, this command), the figures issue 22 started from.
_KEYS = ("run-now latency p50 (s)", "run-now latency p95 (s)", "throughput (runs/min)", "worker CPU per run (s)",
         "server CPU per run (s)", "idle CPU (% of a core)", "idle RSS (MiB)")
BEFORE: dict[str, dict[str, str]] = {
    "SQLite": dict(zip(_KEYS, ("0.454", "0.788", "106.0", "0.295", "0.474", "0.13", "181"), strict=True)),
    "PostgreSQL": dict(zip(_KEYS, ("0.389", "0.431", "110.4", "0.269", "0.390", "0.10", "181"), strict=True)),
}


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, round(q * (len(xs) - 1)))]


def cpu_s(proc: psutil.Process, with_children: bool = True) -> float:
    """CPU seconds of a process and its descendants, including reaped children."""
    total = 0.0
    procs = [proc] + (proc.children(recursive=True) if with_children else [])
    for p in procs:
        try:
            t = p.cpu_times()
            total += t.user + t.system + t.children_user + t.children_system
        except psutil.NoSuchProcess:
            pass
    return total


def rss_mib(proc: psutil.Process) -> float:
    total = 0
    for p in [proc] + proc.children(recursive=True):
        try:
            total += p.memory_info().rss
        except psutil.NoSuchProcess:
            pass
    return total / 2**20


class Lane:
    """One pool, its worker and its deployment."""

    def __init__(self, name: str, worker_type: str, home: Path) -> None:
        self.name = name
        self.worker_type = worker_type
        self.pool = f"bench-{name}"
        self.record = home / f"{name}.jsonl"
        self.deployment_id: Any = None
        self.worker: Any = None
        self.results: dict[str, str] = {}

    def records(self) -> list[dict[str, Any]]:
        if not self.record.exists():
            return []
        return [json.loads(line) for line in self.record.read_text().splitlines() if line.strip()]


async def setup_lane(lane: Lane, settings: Any) -> None:
    from prefect.client.orchestration import get_client

    from bgtasks.manager import TaskManager
    from deployments.pool import ensure_pool

    async with get_client() as client:
        await ensure_pool(client, lane.pool, lane.worker_type)
        if lane.worker_type == "process":  # Prefect's defaults, not bgtasks' engine command
            from prefect.client.schemas.actions import WorkPoolUpdate
            from prefect.workers.process import ProcessWorker

            await client.update_work_pool(lane.pool, WorkPoolUpdate(base_job_template=ProcessWorker.get_default_base_job_template()))
        task = await TaskManager(client, lane.pool).create({
            "name": f"bench-{lane.name}", "handler": "demo", "priority": "normal",
            "schedule": {"type": "periodic", "interval": 86_400_000, "startTime": "2099-01-01T00:00:00Z"},
            "data": {"recordTo": str(lane.record)},
        })
        lane.deployment_id = task.id


async def latency(lane: Lane, runs: int) -> list[float]:
    from prefect.client.orchestration import get_client

    from bgtasks.manager import TaskManager

    out = []
    async with get_client() as client:
        mgr = TaskManager(client, lane.pool)
        for _ in range(runs):
            n = len(lane.records())
            t0 = time.time()
            run_id = await mgr.run_now(lane.deployment_id)
            while len(lane.records()) <= n:
                await asyncio.sleep(0.002)
            first_line = datetime.fromisoformat(lane.records()[-1]["at"]).timestamp()
            out.append(first_line - t0)
            await mgr.wait_for_run(run_id, timeout_s=300, poll_s=0.05)
    return out


async def burst(lane: Lane, n: int, server: psutil.Process, worker: psutil.Process) -> tuple[float, float, float, int]:
    """(runs per minute, worker CPU-s per run, server CPU-s per run, runs not Completed)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    from bgtasks.manager import TaskManager

    async with get_client() as client:
        mgr = TaskManager(client, lane.pool)
        w0, s0 = cpu_s(worker), cpu_s(server)
        t0 = time.monotonic()
        sem = asyncio.Semaphore(4)  # a burst of creations makes SQLite answer 503 (docs/scaling.md)

        async def create() -> str:
            async with sem:
                return await mgr.run_now(lane.deployment_id)

        ids = await asyncio.gather(*(create() for _ in range(n)))
        from uuid import UUID

        flt = FlowRunFilter(id=FlowRunFilterId(any_=[UUID(i) for i in ids]))
        while True:
            runs = await client.read_flow_runs(flow_run_filter=flt, limit=200)
            if all(r.state and r.state.is_final() for r in runs):
                break
            await asyncio.sleep(0.2)
        elapsed = time.monotonic() - t0
        # Let the last processes exit and be reaped before reading CPU totals.
        await asyncio.sleep(2.0)
        w1, s1 = cpu_s(worker), cpu_s(server)
        bad = sum(1 for r in runs if not r.state.is_completed())
    return n / elapsed * 60, (w1 - w0) / n, (s1 - s0) / n, bad


def idle(worker: psutil.Process, seconds: float) -> tuple[float, float]:
    c0 = cpu_s(worker)
    time.sleep(seconds)
    return (cpu_s(worker) - c0) / seconds * 100, rss_mib(worker)


def main() -> None:
    from bench.common import BenchHome, add_postgres_option

    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=20, help="sequential run-now latency samples (warm)")
    ap.add_argument("--stock-runs", type=int, default=6, help="latency samples for the stock worker")
    ap.add_argument("--burst", type=int, default=60, help="runs in the warm worker's throughput burst")
    ap.add_argument("--stock-burst", type=int, default=20, help="runs in the stock worker's burst")
    ap.add_argument("--idle-s", type=float, default=30)
    ap.add_argument("--profile", action="store_true",
                    help="instead: where one trivial run's CPU goes (bench/profile_run.py)")
    ap.add_argument("--warmup", type=int, default=5, help="--profile: runs before sampling")
    ap.add_argument("--rate", type=int, default=250, help="--profile: py-spy samples per second")
    ap.add_argument("--top", type=int, default=0, help="--profile: also the N functions with most samples")
    ap.add_argument("--keep", action="store_true", help="--profile: keep the raw profiles")
    add_postgres_option(ap)
    args = ap.parse_args()
    if args.profile:
        from bench.profile_run import profile

        profile(args)
        return

    home = BenchHome("worker", args.postgres)
    tmp, settings = home.path, home.settings
    os.environ.pop("PREFECT_WORKER_QUERY_SECONDS")  # Prefect's defaults for both workers
    os.environ.pop("PREFECT_WORKER_PREFETCH_SECONDS")

    from tests.fixtures import ServerHandle, WorkerHandle

    server = ServerHandle(settings)
    server.stack.env.pop("PREFECT_WORKER_QUERY_SECONDS")
    server.stack.env.pop("PREFECT_WORKER_PREFETCH_SECONDS")
    server.start()
    lanes = [Lane("warm", "bgtasks-warm", tmp), Lane("process", "process", tmp)]
    rows: dict[str, dict[str, str]] = {lane.name: {} for lane in lanes}
    try:
        for lane in lanes:
            asyncio.run(setup_lane(lane, settings))
            s = settings.model_copy(update={"worker": settings.worker.model_copy(update={"type": lane.worker_type, "pool": lane.pool})})
            w = WorkerHandle(s, limit=4)
            for key in ("PREFECT_WORKER_QUERY_SECONDS", "PREFECT_WORKER_PREFETCH_SECONDS"):
                w.stack.env.pop(key, None)
            w.start()
            lane.worker = w
        server_proc = psutil.Process(server.part.pid)
        time.sleep(5)  # let both workers settle after start-up before measuring idle
        for lane in lanes:
            cpu, rss = idle(psutil.Process(lane.worker.part.pid), args.idle_s)
            rows[lane.name]["idle CPU (% of a core)"] = f"{cpu:.2f}"
            rows[lane.name]["idle RSS (MiB)"] = f"{rss:.0f}"
        for lane in lanes:
            n = args.runs if lane.name == "warm" else args.stock_runs
            lat = asyncio.run(latency(lane, n))
            rows[lane.name]["run-now latency p50 (s)"] = f"{statistics.median(lat):.3f}"
            rows[lane.name]["run-now latency p95 (s)"] = f"{pct(lat, 0.95):.3f}"
            rows[lane.name]["latency samples"] = str(n)
        for lane in lanes:
            n = args.burst if lane.name == "warm" else args.stock_burst
            rpm, wcpu, scpu, bad = asyncio.run(burst(lane, n, server_proc, psutil.Process(lane.worker.part.pid)))
            rows[lane.name]["throughput (runs/min)"] = f"{rpm:.1f}"
            rows[lane.name]["worker CPU per run (s)"] = f"{wcpu:.3f}"
            rows[lane.name]["server CPU per run (s)"] = f"{scpu:.3f}"
            rows[lane.name]["burst runs (not Completed)"] = f"{n} ({bad})"
    finally:
        for lane in lanes:
            if lane.worker is not None:
                lane.worker.stop()
        server.stop()
        home.drop()

    db = home.database
    print(f"\nWarm worker vs stock process worker, one server ({db}), {os.cpu_count()} cores, --limit 4 each")
    keys = list(rows["warm"])
    print(f"{'':32} {'bgtasks-warm':>14} {'before':>8} {'goal':>7} {'process (stock)':>16} {'better by':>9}")
    for k in keys:
        a, b = rows["warm"][k], rows["process"].get(k, "-")
        before, goal = BEFORE.get(db, {}).get(k, "-"), GOALS.get(k, "-")
        ratio = ""
        if k.startswith(("latency samples", "burst", "idle RSS")):
            print(f"{k:32} {a:>14} {before:>8} {goal:>7} {b:>16}")
            continue
        try:
            fa, fb = float(a), float(b)
            if k.startswith("throughput"):
                ratio = f"{fa / fb:.1f}x" if fb else ""
            elif fa:
                ratio = f"{fb / fa:.1f}x"
        except ValueError:
            pass
        print(f"{k:32} {a:>14} {before:>8} {goal:>7} {b:>16} {ratio:>8}")
    print("before: the warm worker as measured on 2026-11-29, before the run-cost work (docs/performance.md); "
          "goal: docs/performance.md, What a run costs")

if __name__ == "__main__":
    main()
