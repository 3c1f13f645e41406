"""What the stack weighs: ``bgtasks up`` on a new home, at rest and with one task every minute.

Printed, per process of the stack (the ``bgtasks up`` supervisor and every descendant):

- RSS (MiB) once the stack is up and has settled for ``--settle-s``, and again at the end;
- CPU (% of one core) at rest, over ``--idle-s`` seconds before any task exists;
- CPU (% of one core) over ``--minutes`` minutes with one periodic task every minute (the
  trivial ``demo`` handler), all processes counted, forked run processes included
  (the CPU of reaped children is counted by their parent);
- the periodic runs that completed in that window.

    make bench    # --minutes 60: the issue's hour
    .venv/bin/python bench/at_rest.py --minutes 10
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import tests.conftest  # noqa: E402,F401  sets BGTASKS_HOME for the tests' helpers; ours is below

from bench.worker import cpu_s  # noqa: E402
from tests.e2e.up import Up  # noqa: E402


def role(p: psutil.Process) -> str:
    cmd = " ".join(p.cmdline())
    for needle, name in (("bgtasks.prefect_server", "Prefect server"), ("bgtasks.zygote", "zygote"),
                         ("worker start", "worker"), ("triggers.daemon", "trigger daemon"),
                         ("bgtasks api ", "REST API"), ("bgtasks up", "bgtasks up")):
        if needle in cmd:
            return name
    return cmd[:40]


def tree(root: psutil.Process) -> list[psutil.Process]:
    return [root, *root.children(recursive=True)]


def snapshot(root: psutil.Process) -> dict[str, tuple[float, float]]:
    """{role: (RSS MiB, CPU s)} of the stack's long-lived processes (forked runs are their parent's)."""
    out: dict[str, tuple[float, float]] = {}
    for p in tree(root):
        try:
            name = role(p)
            if name == "zygote" and p.ppid() != 1 and role(psutil.Process(p.ppid())) == "zygote":
                continue  # a forked run: its CPU reaches the zygote when it is reaped
            rss, c = out.get(name, (0.0, 0.0))
            out[name] = (rss + p.memory_info().rss / 2**20, c + cpu_s(p, with_children=False))
        except psutil.NoSuchProcess:
            pass
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--settle-s", type=float, default=60)
    ap.add_argument("--idle-s", type=float, default=300)
    ap.add_argument("--minutes", type=float, default=60)
    args = ap.parse_args()

    up = Up(Path(tempfile.mkdtemp(prefix="bgtasks-bench-rest-")) / "home")
    up.start()
    try:
        root = psutil.Process(up.proc.pid)  # type: ignore[union-attr]
        time.sleep(args.settle_s)  # start-up work (imports, migrations, first polls) is not rest
        start = snapshot(root)
        time.sleep(args.idle_s)
        rest = snapshot(root)
        task = up.cli_json("task", "create", "bench-every-minute", "--handler", "demo", "--every", "1m")
        t0, before = time.monotonic(), snapshot(root)
        time.sleep(args.minutes * 60)
        after, elapsed = snapshot(root), time.monotonic() - t0
        runs = up.cli_json("task", "history", task["id"], "--limit", "200")
    finally:
        up.stop()

    done = sum(1 for r in runs if str(r.get("status") or r.get("state")).lower() == "completed")
    print(f"\nThe stack of `bgtasks up` on a new home (SQLite), {psutil.cpu_count()} cores")
    print(f"{'process':16} {'RSS up (MiB)':>13} {'RSS end (MiB)':>14} {'at rest (% core)':>17} "
          f"{'1 task/min (% core)':>20}")
    total = [0.0, 0.0, 0.0, 0.0]
    for name in start:
        rss0 = start[name][0]
        rss1 = after.get(name, (0.0, 0.0))[0]
        idle = (rest.get(name, (0, 0))[1] - start[name][1]) / args.idle_s * 100
        load = (after.get(name, (0, 0))[1] - before.get(name, (0, 0))[1]) / elapsed * 100
        for i, v in enumerate((rss0, rss1, idle, load)):
            total[i] += v
        print(f"{name:16} {rss0:13.0f} {rss1:14.0f} {idle:17.2f} {load:20.2f}")
    print(f"{'total':16} {total[0]:13.0f} {total[1]:14.0f} {total[2]:17.2f} {total[3]:20.2f}")
    print(f"periodic runs completed in {elapsed / 60:.1f} min: {done} (history rows: {len(runs)})")
    print(f"the task's own cost (with it minus at rest): {total[3] - total[2]:.2f} % of a core, "
          f"{(total[3] - total[2]) / 100 * elapsed / max(done, 1):.3f} CPU-s per run")


if __name__ == "__main__":
    main()
