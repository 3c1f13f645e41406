"""What crash detection costs: throughput of the warm worker with and without the
``bgtasks: crashed runs`` automation (bgtasks.crash), which the server evaluates
for every state change and heartbeat of a bgtasks run.

Bursts of ``--burst`` runs, alternating without / with the automation
(``--rounds`` each), one server (SQLite, or ``--postgres``), one warm worker
(``--limit 4``). Prints runs per minute and server CPU-seconds per run, median of
the rounds, side by side.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


async def toggle(on: bool, within_s: float) -> None:
    from prefect.client.orchestration import get_client

    from bgtasks.crash import AUTOMATION_NAME, ensure_crash_detection
    from bgtasks.stored import TAG

    async with get_client() as client:
        if on:
            await ensure_crash_detection(client, TAG, within_s)
        else:
            for a in await client.read_automations_by_name(AUTOMATION_NAME):
                await client.delete_automation(a.id)


def main() -> None:
    from bench.common import BenchHome, add_postgres_option
    from bench.worker import Lane, burst, setup_lane

    ap = argparse.ArgumentParser()
    ap.add_argument("--burst", type=int, default=40)
    ap.add_argument("--rounds", type=int, default=2)
    add_postgres_option(ap)
    args = ap.parse_args()

    home = BenchHome("crashdet", args.postgres)
    settings = home.settings
    from tests.fixtures import ServerHandle, WorkerHandle

    server = ServerHandle(settings)
    server.start()
    lane = Lane("warm", "bgtasks-warm", home.path)
    results: dict[bool, list[tuple[float, float]]] = {False: [], True: []}
    try:
        asyncio.run(setup_lane(lane, settings))
        s = settings.model_copy(update={"worker": settings.worker.model_copy(update={"pool": lane.pool})})
        lane.worker = WorkerHandle(s, limit=4)
        lane.worker.start()
        server_proc, worker_proc = psutil.Process(server.part.pid), psutil.Process(lane.worker.part.pid)
        for _ in range(args.rounds):
            for on in (False, True):
                asyncio.run(toggle(on, settings.worker.crash_after_s))
                rpm, _, scpu, bad = asyncio.run(burst(lane, args.burst, server_proc, worker_proc))
                results[on].append((rpm, scpu))
                print(f"  crash detection {'on ' if on else 'off'}: {rpm:6.1f} runs/min, "
                      f"server {scpu:.3f} CPU-s/run, {bad} not Completed", flush=True)
    finally:
        if lane.worker is not None:
            lane.worker.stop()
        server.stop()
        home.drop()

    def med(on: bool, i: int) -> float:
        return statistics.median(r[i] for r in results[on])

    print(f"\nCrash detection cost, one warm worker (--limit 4), {home.database}, {os.cpu_count()} cores, "
          f"{args.rounds} bursts of {args.burst} each way (median)")
    print(f"{'':28} {'without':>10} {'with':>10}")
    print(f"{'throughput (runs/min)':28} {med(False, 0):>10.1f} {med(True, 0):>10.1f}")
    print(f"{'server CPU per run (s)':28} {med(False, 1):>10.3f} {med(True, 1):>10.3f}")


if __name__ == "__main__":
    main()
