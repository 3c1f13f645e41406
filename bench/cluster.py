"""The multi-host layout on this machine (bgtasks.cluster): 1 or 2 Prefect API replicas, 1 or 2
worker hosts, through HAProxy, on a new PostgreSQL database and a Redis of its own.

For each layout: run-now latency (the REST API's run-now through HAProxy -> the demo
handler's first line; p50 and p95 over ``--runs`` sequential runs), a burst of ``--burst``
run-nows at once (runs completed per minute), and CPU per run during the burst of the
Prefect API replicas, the services process, the workers (with their runs), the REST API
replicas, HAProxy, Redis and PostgreSQL (the whole server, its exited backends included: it is shared). The
single-server figures to set beside them are bench/worker.py --postgres's.

The soak with kills is ``bench/soak.py --cluster``.

    .venv/bin/python bench/cluster.py --runs 20 --burst 60
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.soak import read_records as records  # noqa: E402
from bench.worker import cpu_s, pct  # noqa: E402

LAYOUTS = ((1, 1), (2, 1), (1, 2), (2, 2))  # (API replicas, worker hosts)


def wait(check: Any, timeout_s: float, what: str) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        got = check()
        if got:
            return got
        time.sleep(0.05)
    raise SystemExit(f"timed out waiting for {what}")


def postgres_cpu() -> float:
    """CPU seconds of the PostgreSQL server: the postmaster with its backends, including those
    that exited (a backend's CPU moves to its parent's reaped-children times)."""
    total = 0.0
    for p in psutil.process_iter(["name", "ppid"]):
        try:
            if (p.info["name"] or "").startswith("postgres") and not psutil.Process(p.info["ppid"]).name().startswith("postgres"):
                total += cpu_s(p)
        except psutil.Error:
            pass
    return total


def start(tmp: Path, replicas: int, hosts: int, postgres: str) -> Any:
    from bgtasks.cluster import Cluster, free_port
    from bgtasks.settings import Settings

    os.environ["BGTASKS_TASK_FILE_ROOTS"] = json.dumps([str(tmp / "rec")])
    os.environ["BGTASKS_DAEMON_SENSORS"] = '["file"]'
    (tmp / "rec").mkdir(exist_ok=True)
    cluster = Cluster(Settings(home=tmp / "home"), tmp / f"cluster-{replicas}x{hosts}", postgres=postgres,
                      prefect_port=free_port(), api_port=free_port(),
                      hosts=tuple(f"host-{chr(97 + i)}" for i in range(hosts)), api_replicas=replicas)
    cluster.start()
    return cluster


def groups(cluster: Any) -> dict[str, list[psutil.Process]]:
    out: dict[str, list[psutil.Process]] = {"api replicas": [], "services": [], "workers": [], "redis": [],
                                            "rest api": [], "haproxy": []}
    for name, part in cluster.parts.items():
        if part.process.pid is None:
            continue
        key = ("api replicas" if name.startswith("server-api") else "services" if name == "server-services"
               else "workers" if name.startswith("worker-") else "rest api" if name.startswith("api-")
               else name if name in ("redis", "haproxy") else None)
        if key:
            out[key].append(psutil.Process(part.process.pid))
    return out


def measure(cluster: Any, tmp: Path, runs: int, burst: int) -> dict[str, Any]:
    api = httpx.Client(base_url=cluster.api_url, headers={"Authorization": f"Bearer {cluster.token}"}, timeout=120)
    rec = tmp / "rec" / f"{cluster.dir.name}.jsonl"
    task = api.post("/tasks", json={"name": "bench", "handler": "demo",
                                    "schedule": {"type": "one-time", "startTime": "2099-01-01T00:00:00Z"},
                                    "data": {"recordTo": str(rec)}}).json()["id"]
    api.post(f"/tasks/{task}/run")  # warm: the first run reads and caches what later runs reuse
    wait(lambda: len(records(rec)) >= 1, 120, "the first run")
    lat = []
    for _ in range(runs):
        n = len(records(rec))
        t0 = datetime.now(UTC)
        assert api.post(f"/tasks/{task}/run").status_code == 202
        got = wait(lambda: len(records(rec)) > n and records(rec), 120, "a run")
        lat.append((datetime.fromisoformat(got[-1]["at"]) - t0).total_seconds())
    time.sleep(3)  # the last runs' ends reach the server
    procs = groups(cluster)
    before = {k: sum(cpu_s(p) for p in v) for k, v in procs.items()}
    pg0 = postgres_cpu()
    n = len(records(rec))
    t0 = time.monotonic()
    for _ in range(burst):
        assert api.post(f"/tasks/{task}/run").status_code == 202
    wait(lambda: len(records(rec)) >= n + burst, 900, "the burst")
    elapsed = time.monotonic() - t0
    time.sleep(3)
    after = {k: sum(cpu_s(p) for p in v) for k, v in procs.items()}
    api.close()
    cpu = {k: (after[k] - before[k]) / burst for k in procs}
    cpu["postgres"] = (postgres_cpu() - pg0) / burst
    return {"p50": statistics.median(lat), "p95": pct(lat, 0.95), "per_min": burst / elapsed * 60, "cpu": cpu}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--burst", type=int, default=60)
    ap.add_argument("--postgres", default="postgresql://postgres@127.0.0.1:5432")
    ap.add_argument("--layouts", default="1x1,2x1,1x2,2x2", help="API replicas x hosts, comma-separated")
    args = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-cluster-") as d:
        tmp = Path(d)
        for layout in args.layouts.split(","):
            replicas, hosts = (int(x) for x in layout.split("x"))
            cluster = start(tmp, replicas, hosts, args.postgres)
            try:
                m = measure(cluster, tmp, args.runs, args.burst)
            finally:
                cluster.stop()
            rows.append((replicas, hosts, m))
            print(f"{replicas} API x {hosts} hosts: p50 {m['p50']:.3f}s p95 {m['p95']:.3f}s "
                  f"burst {m['per_min']:.1f}/min cpu/run {json.dumps({k: round(v, 3) for k, v in m['cpu'].items()})}",
                  flush=True)
        print("\n| API replicas | worker hosts | run-now p50 | p95 | burst runs/min | CPU-s per run: API replicas "
              "| services | workers | REST API | HAProxy | Redis | PostgreSQL |")
        print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
        for replicas, hosts, m in rows:
            c = m["cpu"]
            print(f"| {replicas} | {hosts} | {m['p50']:.3f} s | {m['p95']:.3f} s | {m['per_min']:.1f} | "
                  f"{c['api replicas']:.3f} | {c['services']:.3f} | {c['workers']:.3f} | {c['rest api']:.3f} | "
                  f"{c['haproxy']:.4f} | {c['redis']:.4f} | {c['postgres']:.3f} |")
        print("(single server on PostgreSQL, the same machine: bench/worker.py --postgres)")


if __name__ == "__main__":
    main()
