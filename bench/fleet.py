"""End to end with simulated phones: one task targeting N simulated devices (half Android,
half iOS) through a real Prefect server, worker, REST API and the push emulator.

Printed: the time from the run's start to the last final report, and the server side's CPU
(worker and its runs, REST API, Prefect server) per device over that time. The phones and the
emulator run in this process and are not counted. There is no earlier figure to beat: this
is the first end-to-end measure of the device path.

    .venv/bin/python bench/fleet.py                  # 1,000 devices
    .venv/bin/python bench/fleet.py --devices 200    # a quick run

Not a test: nothing is asserted, the numbers are for reading.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.worker import cpu_s  # noqa: E402


def _tree_cpu(pids: list[int]) -> float:
    """User + system CPU seconds of these processes and their living children."""
    total = 0.0
    for pid in pids:
        try:
            total += cpu_s(psutil.Process(pid))
        except psutil.NoSuchProcess:
            continue
    return total


async def _reports_in(settings: Any, run_id: str, want: int, timeout_s: float) -> float:
    """Poll the ledger until ``want`` final reports are in; when that was seen."""
    from mobile_push.reports import RunLedger
    from bgtasks.store import open_store

    store = await open_store(settings.store_url)
    try:
        ledger = RunLedger(store)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            reports = await ledger.reports(run_id)
            if sum(1 for r in reports.values() if r.final) >= want:
                return time.monotonic()
            await asyncio.sleep(0.2)
    finally:
        await store.close()
    raise TimeoutError(f"fewer than {want} final reports after {timeout_s:g}s")


def main() -> None:
    import tests.conftest  # noqa: F401  (it sets a test home on import: before BenchHome sets ours)
    from bench.common import BenchHome
    from tests.fixtures import ApiProcess, ServerHandle, make_token, start_worker

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--devices", type=int, default=1000)
    ap.add_argument("--timeout-s", type=float, default=1800)
    args = ap.parse_args()

    home = BenchHome("fleet", None)
    settings = home.settings
    from mobile_push.emulator.control import EmulatorService
    from mobile_push.emulator.credentials import StoreCredentials

    server = ServerHandle(settings)
    server.start()
    api = service = worker = None
    try:
        api = ApiProcess()
        api.wait_healthy()
        service = EmulatorService(home.path / "emulator", api.base, StoreCredentials(settings.store_url)).start()
        env = dict(service.emulator.settings_env(), BGTASKS_PUSH_PUBLIC_URL=api.base)
        worker = start_worker(settings, limit=4, env=env)
        half = args.devices // 2
        t = time.monotonic()
        service.fleet.add("android", args.devices - half, ["bench"])
        service.fleet.add("ios", half, ["bench"])
        registered_s = time.monotonic() - t
        token = make_token(settings, "tasks:read", "tasks:write", name="bench-fleet")
        admin = httpx.Client(base_url=api.base, timeout=120, headers={"Authorization": f"Bearer {token}"})
        server_pids = [worker.part.pid, api.proc.pid, server.part.pid]
        cpu0 = _tree_cpu(server_pids)
        task = admin.post("/tasks", json={
            "name": "bench-fleet", "handler": "quick", "schedule": {"type": "one-time"},
            "target": {"labels": ["bench"]}, "timeoutMs": int(args.timeout_s * 1000),
            "retryPolicy": {"maxRetries": 0}, "data": {"workMs": 0}}).json()

        async def run_id() -> tuple[str, float]:
            while True:
                runs = admin.get(f"/tasks/{task['id']}/history").json()
                started = [r for r in runs if r.get("startedAt")]
                if started:
                    return started[0]["id"], time.monotonic()
                await asyncio.sleep(0.1)

        rid, seen_start = asyncio.run(run_id())
        done_at = asyncio.run(_reports_in(settings, rid, args.devices, args.timeout_s))
        cpu = _tree_cpu(server_pids) - cpu0
        wall = done_at - seen_start
    finally:
        for part in (worker, service, api):
            if part is not None:
                part.stop()
        server.stop()
    print(f"\nSimulated fleet end to end: {args.devices} devices ({args.devices - half} Android, {half} iOS), "
          f"one run, {psutil.cpu_count()} cores, SQLite")
    print(f"  registered through POST /devices     {registered_s:8.1f} s")
    print(f"  run start -> last final report       {wall:8.1f} s")
    print(f"  server CPU (worker, API, Prefect)    {cpu:8.1f} s, {cpu / args.devices * 1000:.1f} ms per device")


if __name__ == "__main__":
    main()
