"""Time from `bgtasks up` to a healthy stack (UI and API answer, worker registered).

Fresh: a new bgtasks home (Prefect creates and migrates its SQLite database).
Warm: the same home again. Prints median and p95 over the runs, beside the
baseline of a bare `prefect server start` to healthy, measured the same way.

    make bench            # or: .venv/bin/python bench/startup.py --runs 5
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def time_up(home: Path) -> float:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "BGTASKS_"))}
    env.update({"BGTASKS_HOME": str(home), "BGTASKS_SERVER_PORT": str(port), "BGTASKS_API_PORT": str(free_port())})
    t0 = time.monotonic()
    p = subprocess.Popen([str(BIN / "bgtasks"), "up"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        assert p.stdout is not None
        for line in p.stdout:
            if "Press Ctrl-C" in line:
                break
        else:
            raise RuntimeError("bgtasks up exited before it was up")
        elapsed = time.monotonic() - t0
        assert httpx.get(f"http://127.0.0.1:{port}/api/health", timeout=10).status_code == 200
        return elapsed
    finally:
        p.send_signal(signal.SIGINT)
        p.wait(timeout=120)


def time_bare_server(home: Path) -> float:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update({"PREFECT_HOME": str(home), "PREFECT_SERVER_API_PORT": str(port), "PREFECT_SERVER_ANALYTICS_ENABLED": "false"})
    t0 = time.monotonic()
    p = subprocess.Popen([sys.executable, "-m", "prefect", "server", "start", "--port", str(port)], env=env,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/api/health", timeout=2).status_code == 200:
                    return time.monotonic() - t0
            except httpx.HTTPError:
                pass
            if p.poll() is not None:
                raise RuntimeError("prefect server exited")
            time.sleep(0.1)
    finally:
        p.terminate()
        p.wait(timeout=60)


def stats(xs: list[float]) -> str:
    xs = sorted(xs)
    p95 = xs[min(len(xs) - 1, round(0.95 * (len(xs) - 1)))]
    return f"{statistics.median(xs):6.1f} s  {p95:6.1f} s"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        fresh = [time_up(Path(tmp) / f"fresh{i}") for i in range(args.runs)]
        warm = [time_up(Path(tmp) / "fresh0") for _ in range(args.runs)]
        bare_fresh = [time_bare_server(Path(tmp) / f"bare{i}") for i in range(args.runs)]
        bare_warm = [time_bare_server(Path(tmp) / "bare0") for _ in range(args.runs)]
    rows.append(("bgtasks up, new home (server+pool+worker)", stats(fresh)))
    rows.append(("bgtasks up, existing home", stats(warm)))
    rows.append(("baseline: bare prefect server, new home", stats(bare_fresh)))
    rows.append(("baseline: bare prefect server, existing home", stats(bare_warm)))
    print(f"\nStart-up to healthy, {args.runs} runs each ({os.cpu_count()} cores)")
    print(f"{'what':46} {'median':>8} {'p95':>9}")
    for name, s in rows:
        print(f"{name:46} {s}")


if __name__ == "__main__":
    main()
