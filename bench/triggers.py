"""Triggered tasks: file created -> the handler's first line, and the daemon at rest.

Three lanes on one Prefect server (SQLite, fresh home), each a triggered ``demo``
task whose handler writes a timestamp as its first line:

- ``daemon + warm``: bgtasks' trigger daemon (inotify, debounce 0) and the
  ``bgtasks-warm`` worker: the default;
- ``daemon + stock``: the same daemon, Prefect's stock ``process`` worker;
- ``1 s poll + warm``: the baseline detector, a loop that lists the directory
  every second and emits the same event, with the warm worker.

Latency = the file's creation -> the handler's first line, sequential samples.
Then the daemon at rest while watching ``--dirs`` directories (a recursive
rule over a generated tree): CPU (% of one core) over ``--idle-s`` and RSS.

    make bench      # or: .venv/bin/python bench/triggers.py --samples 10
"""

from __future__ import annotations

import argparse
import random
import socket
import asyncio
import json
import os
import signal
import statistics
import subprocess
import sys
import threading
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.common import BenchHome, add_postgres_option  # noqa: E402
from bench.worker import cpu_s, pct, rss_mib  # noqa: E402


class Lane:
    def __init__(self, name: str, worker_type: str, detector: str, home: Path) -> None:
        self.name, self.worker_type, self.detector = name, worker_type, detector
        self.pool = f"bench-{name.replace(' ', '-').replace('+', '').replace('--', '-')}"
        self.dir = home / f"watch-{worker_type}-{detector}"
        self.dir.mkdir()
        # The poll lane's task watches an unused directory: the daemon learns every
        # triggered task's rule, and must not detect the poll lane's files itself.
        self.rule_dir = self.dir if detector == "daemon" else home / "unused"
        self.rule_dir.mkdir(exist_ok=True)
        self.record = home / f"{self.pool}.jsonl"
        self.task_id = ""
        self.worker: Any = None

    def records(self) -> list[dict[str, Any]]:
        if not self.record.exists():
            return []
        return [json.loads(x) for x in self.record.read_text().splitlines() if x.strip()]


async def setup(lane: Lane) -> None:
    from prefect.client.orchestration import get_client

    from bgtasks.manager import TaskManager
    from deployments.pool import ensure_pool

    async with get_client() as client:
        await ensure_pool(client, lane.pool, lane.worker_type)
        if lane.worker_type == "process":
            from prefect.client.schemas.actions import WorkPoolUpdate
            from prefect.workers.process import ProcessWorker

            await client.update_work_pool(lane.pool, WorkPoolUpdate(
                base_job_template=ProcessWorker.get_default_base_job_template()))
        task = await TaskManager(client, lane.pool, allowed_roots=[lane.dir.parent]).create({
            "name": lane.pool, "handler": "demo", "schedule": {"type": "triggered"},
            "trigger": {"on": "file.created", "path": str(lane.rule_dir), "debounceMs": 0},
            "data": {"recordTo": str(lane.record)},
        })
        lane.task_id = task.id


def poller(lane: Lane, stop: threading.Event) -> None:
    """The baseline detector: list the directory every second, emit an event per new file."""
    from prefect.events import emit_event

    from triggers.daemon import event_for
    from triggers.sensors import Change

    seen = set(os.listdir(lane.dir))
    while not stop.wait(1.0):
        now = set(os.listdir(lane.dir))
        new = sorted(now - seen)
        seen = now
        if new:
            change = Change("file", "created", lane.task_id,
                            {"rule": lane.task_id, "root": str(lane.dir), "paths": [str(lane.dir / n) for n in new],
                             "count": len(new)})
            emit_event(**event_for(change, socket.gethostname()))


def latencies(lane: Lane, samples: int) -> list[float]:
    out = []
    for i in range(samples):
        n = len(lane.records())
        t0 = time.time()
        (lane.dir / f"sample-{i}.csv").write_text("x")
        deadline = time.monotonic() + 180
        while len(lane.records()) <= n:
            if time.monotonic() > deadline:
                raise SystemExit(f"{lane.name}: no run for sample {i} within 180 s")
            time.sleep(0.005)
        out.append(datetime.fromisoformat(lane.records()[-1]["at"]).timestamp() - t0)
        # Let the run finish; a random gap so that samples fall at random phases of the 1 s poll.
        time.sleep(0.5 + random.random())
    return out


def start_daemon(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen([str(Path(sys.executable).parent / "bgtasks"), "daemon"], env=env,
                            stdout=open(log, "ab"), stderr=subprocess.STDOUT)


def wait_rules(state: Path, ids: list[str]) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if set(ids) <= set(json.loads(state.read_text())["_daemon"]["rules"]):
                return
        except (OSError, ValueError, KeyError):
            pass
        time.sleep(0.2)
    raise SystemExit("the daemon did not pick up the rules")


def at_rest(args: Any, tmp: Path, settings: Any, daemon_env: dict[str, str]) -> tuple[float, float]:
    """The daemon's CPU (% of a core) and RSS at rest with a recursive rule over --dirs directories."""
    tree = tmp / "tree"
    for i in range(args.dirs):
        (tree / f"d{i // 100:03}" / f"e{i % 100:02}").mkdir(parents=True, exist_ok=True)

    async def big_rule() -> None:
        from prefect.client.orchestration import get_client

        from bgtasks.manager import TaskManager

        async with get_client() as client:
            await TaskManager(client, settings.worker.pool, allowed_roots=[tmp]).create({
                "name": "bench-tree", "handler": "demo", "schedule": {"type": "triggered"},
                "trigger": {"on": "file.created", "path": str(tree), "recursive": True}})

    asyncio.run(big_rule())
    env = {**daemon_env, "BGTASKS_DAEMON_SENSORS": json.dumps(["network", "power", "idle", "storage", "file"]),
           "BGTASKS_DAEMON_RULES_REFRESH_S": "5"}
    (tmp / "daemon-state.json").unlink(missing_ok=True)
    daemon = start_daemon(env, tmp / "daemon-idle.log")
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        try:
            if json.loads((tmp / "daemon-state.json").read_text())["_daemon"]["rules"]:
                break
        except (OSError, ValueError, KeyError):
            pass
        time.sleep(0.5)
    time.sleep(5)  # the initial walk of the tree is start-up, not rest
    proc = psutil.Process(daemon.pid)
    c0 = cpu_s(proc)
    time.sleep(args.idle_s)
    idle_cpu = (cpu_s(proc) - c0) / args.idle_s * 100
    idle_rss = rss_mib(proc)
    daemon.send_signal(signal.SIGTERM)
    daemon.wait(30)
    return idle_cpu, idle_rss


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--samples", type=int, default=20, help="latency samples per warm lane")
    ap.add_argument("--stock-samples", type=int, default=6)
    ap.add_argument("--dirs", type=int, default=10_000, help="directories the idle daemon watches")
    ap.add_argument("--idle-s", type=float, default=30)
    add_postgres_option(ap)
    args = ap.parse_args()

    home = BenchHome("triggers", args.postgres)
    tmp, settings = home.path, home.settings
    from tests.fixtures import ServerHandle, WorkerHandle

    server = ServerHandle(settings)
    server.start()
    lanes = [Lane("daemon + warm", "bgtasks-warm", "daemon", tmp), Lane("daemon + stock", "process", "daemon", tmp),
             Lane("1 s poll + warm", "bgtasks-warm", "poll", tmp)]
    daemon_env = {**os.environ, "BGTASKS_DAEMON_ALLOWED_ROOTS": json.dumps([str(tmp)]),
                  "BGTASKS_DAEMON_SENSORS": json.dumps(["file"]), "BGTASKS_DAEMON_RULES_REFRESH_S": "0.5"}
    daemon = None
    stop_poll = threading.Event()
    rows: dict[str, list[float]] = {}
    try:
        for lane in lanes:
            asyncio.run(setup(lane))
            s = settings.model_copy(update={"worker": settings.worker.model_copy(
                update={"type": lane.worker_type, "pool": lane.pool})})
            lane.worker = WorkerHandle(s, limit=4)
            lane.worker.start()
        daemon = start_daemon(daemon_env, tmp / "daemon.log")
        wait_rules(tmp / "daemon-state.json", [lanes[0].task_id, lanes[1].task_id])
        threading.Thread(target=poller, args=(lanes[2], stop_poll), daemon=True).start()
        for lane in lanes:
            n = args.stock_samples if lane.worker_type == "process" else args.samples
            rows[lane.name] = latencies(lane, n)
    finally:
        stop_poll.set()
        if daemon is not None:
            daemon.send_signal(signal.SIGTERM)
            daemon.wait(30)
        for lane in lanes:
            if lane.worker is not None:
                lane.worker.stop()

    # The daemon at rest, watching a big tree (and its other sensors running).
    idle_cpu = idle_rss = None
    try:
        if args.dirs:
            idle_cpu, idle_rss = at_rest(args, tmp, settings, daemon_env)
    finally:
        server.stop()
        home.drop()

    db = home.database
    print(f"\nFile created -> handler's first line, {os.cpu_count()} cores, one server ({db})")
    print(f"{'lane':22} {'p50 (s)':>9} {'p95 (s)':>9} {'samples':>8}")
    for name, xs in rows.items():
        print(f"{name:22} {statistics.median(xs):9.3f} {pct(xs, 0.95):9.3f} {len(xs):8}")
    if idle_cpu is None:
        return
    print(f"\nTrigger daemon at rest, all sensors, a recursive rule over {args.dirs:,} directories, "
          "rules re-read every 5 s (the default)")
    print(f"  CPU {idle_cpu:.2f}% of one core over {args.idle_s:g} s, RSS {idle_rss:.0f} MiB")


if __name__ == "__main__":
    main()
