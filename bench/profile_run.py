"""Where a trivial run's CPU goes: ``bench/worker.py --profile`` (SQLite, or ``--postgres URL``).

One Prefect server (fresh home) and one ``bgtasks-warm`` worker; after a few warm-up runs,
``--runs`` trivial runs one after another (run now, wait until final) while py-spy samples
the server and the worker's process tree (worker, zygote, the forked run children). Printed:

- CPU per run of each process (psutil, the ground truth) beside py-spy's active samples;
- py-spy's samples per run by what the code was doing (first matching rule, per process);
- every API request the runs caused (the server's request log), per run;
- the rows the runs wrote: flow- and task-run states, task runs, log lines, events by name.

The server runs as ``bench._profiled_server`` (the product's server with a request log).
"""

from __future__ import annotations

import asyncio
import collections
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psutil

ROOT = Path(__file__).resolve().parents[1]

#: (label, substrings: any in a stack's frames) per process role; the first match wins.
RULES: dict[str, list[tuple[str, tuple[str, ...]]]] = {
    "server": [
        ("SQL in the database's thread (aiosqlite)", ("_connection_worker_thread (aiosqlite",)),
        ("gzip of responses", ("GZipResponder._compress_body", "GZipResponder.apply_compression")),
        ("set flow-run state (orchestration)", ("set_flow_run_state (prefect/server/api/flow_runs.py",)),
        ("create flow run", ("create_flow_run_from_deployment (", "create_flow_run (prefect/server/api/flow_runs.py")),
        ("read/filter flow runs", ("read_flow_runs (", "read_flow_run (", "paginate_flow_runs (")),
        ("worker poll (get_scheduled_flow_runs)", ("get_scheduled_flow_runs (",)),
        ("worker heartbeat", ("worker_heartbeat (",)),
        ("read deployment", ("read_deployment (",)),
        ("logs in (POST /logs)", ("create_logs (",)),
        ("task-run states (task_run_recorder)", ("task_run_recorder",)),
        ("events in (websocket)", ("prefect/server/api/events.py",)),
        ("event persister", ("event_persister",)),
        ("automations (triggers)", ("prefect/server/events/triggers.py",)),
        ("actions (automations)", ("prefect/server/events/actions.py",)),
        ("events stream out", ("prefect/server/events/stream.py",)),
        ("other services", ("prefect/server/services/",)),
        ("other API routes", ("prefect/server/api/",)),
        # SQLAlchemy runs the routes' database work in greenlets: their stacks do not name the route.
        ("SQLAlchemy: ORM, SQL compilation, rows", ("sqlalchemy/",)),
        ("HTTP and the event loop", ("uvicorn", "starlette", "asyncio/base_events.py")),
    ],
    "worker": [
        ("polls for runs", ("get_and_submit_flow_runs (", "_get_scheduled_flow_runs (")),
        ("bgtasks policies", ("bgtasks/policies/",)),
        ("propose Pending / submit", ("_submit_run (", "_propose_pending_state (", "_submit_run_and_capture_errors (")),
        ("event subscription", ("prefect/events/clients.py", "websockets/")),
        ("heartbeat", ("sync_with_backend (", "_send_worker_heartbeat (")),
        ("runs supervision", ("prefect/runner/", "bgtasks/warm_worker.py")),
        ("HTTP client", ("httpx", "httpcore")),
        ("the event loop", ("asyncio/",)),
    ],
    "run child": [
        ("imports", ("_find_and_load (",)),
        ("inner task run (task engine)", ("prefect/task_engine.py",)),
        ("log shipping", ("prefect/logging/", "APILogWorker")),
        ("events client", ("prefect/events/",)),
        ("flow engine: load flow and deployment", ("load_flow (", "load_flow_from_flow_run (", "_load_flow (")),
        ("flow engine: states", ("set_state (prefect/flow_engine.py", "begin_run (prefect/flow_engine.py")),
        ("flow engine: other", ("prefect/flow_engine.py",)),
        ("client and settings set-up", ("prefect/settings/", "get_client (", "prefect/client/")),
        ("fork and exit", ("bgtasks/zygote.py",)),
    ],
    "zygote": [("serves fork requests", ("bgtasks/zygote.py",))],
}


#: Leaf frames of a thread that waits (py-spy's own idle check misses some of them).
IDLE_LEAVES = ("(aiosqlite/core.py:59)", "Condition.wait (", "(concurrent/futures/thread.py:81)",
               "EpollSelector.select (", "_reader_loop (prefect/_internal/control_listener.py",
               "heartbeat_loop (prefect/flow_engine.py", "_do_waitpid (", "SyncStream.read (",
               "_wait_for_tstate_lock (", "Event.wait (")


def idle(frames: list[str]) -> bool:
    return not frames or not frames[-1] or any(n in frames[-1] for n in IDLE_LEAVES)


def inclusive(stacks: list[tuple[list[str], int]], top: int) -> list[tuple[str, int]]:
    """The functions of bgtasks, its flows and Prefect with the most samples under them."""
    c: collections.Counter[str] = collections.Counter()
    for frames, k in stacks:
        seen = set()
        for f in frames:
            if ("prefect/" in f or "bgtasks/" in f or "flows/" in f or "ssl.py" in f) and f not in seen:
                seen.add(f.rsplit(":", 1)[0])
        for f in seen:
            c[f] += k
    return c.most_common(top)


def classify(role: str, frames: list[str]) -> str:
    joined = ";".join(frames)
    for label, needles in RULES.get(role, []):
        if any(n in joined for n in needles):
            return label
    return "other"


def read_raw(path: Path) -> list[tuple[list[str], int]]:
    """py-spy's raw (collapsed) output: ``frame;frame;... count`` per line."""
    out = []
    if not path.exists():
        return out
    for line in path.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        if stack and n.isdigit():
            out.append((stack.split(";"), int(n)))
    return out


def pid_of(stack: list[str]) -> int | None:
    """The sampled process: py-spy --subprocesses roots each stack at its ancestry,
    one ``process PID:"cmdline"`` frame per generation."""
    pid = None
    for frame in stack:
        if not frame.startswith("process "):
            break
        head = frame[len("process "):].split(":", 1)[0]
        pid = int(head) if head.isdigit() else pid
    return pid


class PySpy:
    def __init__(self, pid: int, out: Path, subprocesses: bool, rate: int) -> None:
        argv = [str(Path(sys.executable).parent / "py-spy"), "record", "--pid", str(pid), "--format", "raw",
                "--rate", str(rate), "--output", str(out), "--nonblocking"]
        if subprocesses:
            argv.append("--subprocesses")
        self.out = out
        self.proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


async def table_counts(settings: Any, ids: list[str], since: float, until: float) -> dict[str, Any]:
    """Rows the runs wrote, read from the server's database."""
    from datetime import UTC, datetime

    from sqlalchemy import text
    from sqlalchemy.ext.asyncio import create_async_engine

    url = os.environ.get("PREFECT_API_DATABASE_CONNECTION_URL") or \
        f"sqlite+aiosqlite:///{settings.prefect_home / 'prefect.db'}"
    engine = create_async_engine(url)
    t0, t1 = (datetime.fromtimestamp(x, UTC) for x in (since, until))
    pg = url.startswith("postgresql")
    binds: dict[str, Any] = {f"i{n}": i for n, i in enumerate(ids)}
    if pg:
        import uuid

        binds = {k: uuid.UUID(v) for k, v in binds.items()}
    in_ids = "(" + ",".join(f":{k}" for k in binds) + ")"
    when = {"t0": t0, "t1": t1} if pg else {"t0": t0.isoformat(sep=" ")[:26], "t1": t1.isoformat(sep=" ")[:26]}
    out: dict[str, Any] = {}
    async with engine.connect() as conn:
        async def one(sql: str, params: dict[str, Any]) -> int:
            return int((await conn.execute(text(sql), params)).scalar() or 0)

        out["flow-run states"] = await one(
            f"SELECT count(*) FROM flow_run_state WHERE flow_run_id IN {in_ids}", binds)
        out["task runs"] = await one(f"SELECT count(*) FROM task_run WHERE flow_run_id IN {in_ids}", binds)
        out["task-run states"] = await one(
            f"SELECT count(*) FROM task_run_state WHERE task_run_id IN "
            f"(SELECT id FROM task_run WHERE flow_run_id IN {in_ids})", binds)
        out["log lines"] = await one(f"SELECT count(*) FROM log WHERE flow_run_id IN {in_ids}", binds)
        rows = (await conn.execute(text(
            "SELECT event, count(*) FROM events WHERE occurred >= :t0 AND occurred < :t1 GROUP BY event"),
            when)).all()
        out["events"] = {r[0]: int(r[1]) for r in rows}
    await engine.dispose()
    return out


async def run_sequence(pool: str, deployment_id: Any, n: int) -> list[str]:
    from prefect.client.orchestration import get_client

    from bgtasks.manager import TaskManager

    ids = []
    async with get_client(httpx_settings={"headers": {"X-Bgtasks-Bench": "1"}}) as client:
        mgr = TaskManager(client, pool)
        for _ in range(n):
            run_id = await mgr.run_now(deployment_id)
            # A slow poll: the bench's own reads are requests too (listed apart).
            await mgr.wait_for_run(run_id, timeout_s=300, poll_s=1.0)
            ids.append(str(run_id))
    return ids


def profile(args: Any) -> None:
    from bench.common import BenchHome
    from bench.worker import Lane, cpu_s, setup_lane

    home = BenchHome("profile", args.postgres)
    settings = home.settings
    from tests.fixtures import ServerHandle, WorkerHandle

    reqlog = home.path / "requests.jsonl"
    server = ServerHandle(settings)
    argv = server.part.argv
    argv[argv.index("bgtasks.prefect_server")] = "bench._profiled_server"
    server.stack.env["BENCH_REQUEST_LOG"] = str(reqlog)
    server.stack.env["PYTHONPATH"] = os.pathsep.join([str(ROOT), server.stack.env.get("PYTHONPATH", "")])
    server.start()
    lane = Lane("warm", "bgtasks-warm", home.path)
    worker = None
    spies: list[PySpy] = []
    try:
        asyncio.run(setup_lane(lane, settings))
        s = settings.model_copy(update={"worker": settings.worker.model_copy(update={"type": "bgtasks-warm", "pool": lane.pool})})
        worker = WorkerHandle(s, limit=4)
        worker.start()
        asyncio.run(run_sequence(lane.pool, lane.deployment_id, args.warmup))
        time.sleep(2)
        server_p, worker_p = psutil.Process(server.part.pid), psutil.Process(worker.part.pid)
        zygote_pid = next((c.pid for c in worker_p.children() if "bgtasks.zygote" in " ".join(c.cmdline())), None)
        spies = [PySpy(server_p.pid, home.path / "server.raw", False, args.rate),
                 PySpy(worker_p.pid, home.path / "worker.raw", True, args.rate)]
        time.sleep(1)  # py-spy attaches
        c0 = {"server": cpu_s(server_p), "worker side": cpu_s(worker_p)}
        t0 = time.time()
        ids = asyncio.run(run_sequence(lane.pool, lane.deployment_id, args.runs))
        time.sleep(2)  # the last child is reaped; log and event batches land
        t1 = time.time()
        c1 = {"server": cpu_s(server_p), "worker side": cpu_s(worker_p)}
        for spy in spies:
            spy.stop()
        counts = asyncio.run(table_counts(settings, ids, t0, t1))
    finally:
        for spy in spies:
            if spy.proc.poll() is None:
                spy.proc.kill()
        if worker is not None:
            worker.stop()
        server.stop()

    n = args.runs
    print(f"\nOne trivial run, end to end ({home.database}, {os.cpu_count()} cores, bgtasks-warm, "
          f"{n} sequential runs after {args.warmup} warm-up; py-spy --rate {args.rate} --nonblocking)")
    print(f"\nCPU per run (psutil): server {(c1['server'] - c0['server']) / n:.3f} s, "
          f"worker side (worker + zygote + run children) {(c1['worker side'] - c0['worker side']) / n:.3f} s")

    by: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    stacks: dict[str, list[tuple[list[str], int]]] = collections.defaultdict(list)
    for stack, k in read_raw(home.path / "server.raw"):
        stacks["server"].append((stack, k))
    for stack, k in read_raw(home.path / "worker.raw"):
        pid = pid_of(stack)
        role = "worker" if pid == worker_p.pid else "zygote" if pid == zygote_pid else "run child"
        stacks[role].append((stack, k))
    for role, items in stacks.items():
        stacks[role] = [(st, k) for st, k in items if not idle(st)]
        for st, k in stacks[role]:
            by[role][classify(role, st)] += k
    ms_of = lambda k: k / args.rate / n * 1000  # noqa: E731  samples -> CPU-ms per run
    print("\npy-spy samples of busy threads per run, as CPU-ms (samples / rate / runs):")
    for role in ("server", "worker", "zygote", "run child"):
        total = sum(by[role].values())
        print(f"  {role:10} {ms_of(total):8.1f} ms")
        for label, k in by[role].most_common():
            print(f"      {label:44} {ms_of(k):8.1f} ms  {k / total * 100 if total else 0:5.1f} %")
        if args.top:
            print(f"    the {args.top} functions with the most samples under them:")
            for f, k in inclusive(stacks[role], args.top):
                print(f"      {ms_of(k):8.1f} ms  {f[:110]}")

    reqs = [json.loads(x) for x in reqlog.read_text().splitlines() if x.strip()]
    reqs = [r for r in reqs if t0 <= r["t"] < t1]
    ours = [r for r in reqs if r.get("bench")]
    reqs = [r for r in reqs if not r.get("bench")]
    by_route = collections.Counter(f"{r['method']} {r['path']}" for r in reqs)
    ms: dict[str, float] = collections.defaultdict(float)
    for r in reqs:
        ms[f"{r['method']} {r['path']}"] += r["ms"]
    print(f"\nAPI requests per run: {len(reqs) / n:.1f} by the worker and the run (route, per run, mean wall ms),")
    print(f"besides the bench's own {len(ours) / n:.1f} (run now, then wait for the final state):")
    for route, k in by_route.most_common():
        print(f"  {route:64} {k / n:6.2f}  {ms[route] / k:7.1f}")
    print("\nRows written per run:")
    for key in ("flow-run states", "task runs", "task-run states", "log lines"):
        print(f"  {key:44} {counts[key] / n:6.2f}")
    events = counts["events"]
    print(f"  {'events (all, in the window)':44} {sum(events.values()) / n:6.2f}")
    for name, k in sorted(events.items(), key=lambda kv: -kv[1]):
        print(f"      {name:58} {k / n:6.2f}")
    if args.keep:
        print(f"\nraw profiles and the request log: {home.path}")
    else:
        import shutil

        shutil.rmtree(home.path, ignore_errors=True)
    home.drop()
