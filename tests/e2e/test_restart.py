"""Stop the whole stack and start it again: every task comes back as it was, paused
tasks stay paused, a run waiting for its constraints keeps waiting, triggers still
fire, and periodic tasks treat the runs they missed by their catch-up policy
instead of running them in a burst. (Issue 8 point 3 at a small size, and issue 9's
restore on boot: the service files start the same processes as `bgtasks up`;
``bench/restart.py`` does this with 1,000 tasks.)
"""

from __future__ import annotations

import math
import re
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psutil
import pytest

from tests.e2e.up import Up, poll
from tests.fixtures import records
from tests.power import write_power_tree

pytestmark = pytest.mark.e2e

EVERY_S = 5
GRACE_S = 2
DOWN_S = 30  # long enough for several missed runs of each periodic task
#: What must come back identical (status, runs and times move on by design).
DEFINITION = ("id", "name", "type", "priority", "handler", "paused", "schedule", "constraints", "retryPolicy",
              "timeoutMs", "trigger", "data", "createdAt", "description")


def _definitions(up: Up) -> dict[str, dict[str, Any]]:
    return {t["id"]: {k: t.get(k) for k in DEFINITION} for t in up.cli_json("task", "ls")}


def _wait(what: str, check: Any, timeout_s: float = 180) -> Any:
    return poll(what, check, timeout_s)


def _t(text: str | None) -> datetime | None:
    return datetime.fromisoformat(text.replace("Z", "+00:00")) if text else None


def test_stack_restart_restores_every_task_and_applies_catch_up(tmp_path: Path) -> None:
    power, watched = tmp_path / "power", tmp_path / "inbox"
    write_power_tree(power, percent=70, plugged=False)  # on battery: "requires charging" waits
    watched.mkdir()
    up = Up(tmp_path / "home")
    up.env.update({"BGTASKS_WORKER_MISFIRE_GRACE_S": str(GRACE_S), "BGTASKS_DAEMON_POWER_ROOT": str(power),
                   "BGTASKS_DAEMON_ALLOWED_ROOTS": f'["{tmp_path}"]'})
    recs = {p: tmp_path / f"{p}.jsonl" for p in ("skip", "run-once", "run-all", "file")}
    ids: dict[str, str] = {}
    try:
        up.start()
        for policy in ("skip", "run-once", "run-all"):
            ids[policy] = up.cli_json("task", "create", f"every-{policy}", "--handler", "demo", "--every",
                                      f"{EVERY_S}s", "--catch-up", policy, "--data",
                                      f'{{"recordTo": "{recs[policy]}"}}')["id"]
        ids["later"] = up.cli_json("task", "create", "once-later", "--handler", "demo", "--priority", "high",
                                   "--at", "2099-01-01T00:00:00Z")["id"]
        ids["paused"] = up.cli_json("task", "create", "paused-hourly", "--handler", "demo", "--cron", "0 * * * *")["id"]
        up.cli_json("task", "pause", ids["paused"])
        ids["file"] = up.cli_json("task", "create", "on-file", "--handler", "demo", "--on", "file.arrived",
                                  "--path", str(watched), "--data", f'{{"recordTo": "{recs["file"]}"}}')["id"]
        ids["waiting"] = up.cli_json("task", "create", "needs-charger", "--handler", "demo", "--requires-charging",
                                     "--priority", "high")["id"]
        # Every periodic task has run (so "missed" has a start), the waiting run waits.
        for policy in ("skip", "run-once", "run-all"):
            _wait(f"a first run of every-{policy}", lambda p=policy: records(recs[p]))
        waiting = _wait("the run waiting for a charger",
                        lambda: up.cli_json("task", "show", ids["waiting"]).get("waiting"))
        before = _definitions(up)
        assert up.stop() == 0
        stopped = datetime.now(UTC)
        psutil.wait_procs(up.children, timeout=30)
        executed_before = {p: len(records(recs[p])) for p in ("skip", "run-once", "run-all")}

        # Down: the runs due now are missed. (Time passing, not synchronisation.)
        time.sleep(DOWN_S)
        launched = datetime.now(UTC)
        up.start()

        assert _definitions(up) == before
        assert up.cli_json("task", "show", ids["paused"])["paused"] is True
        still = up.cli_json("task", "show", ids["waiting"]).get("waiting")
        assert still and [w["runId"] for w in still] == [w["runId"] for w in waiting]

        # Each periodic task resumes: a run due after the restart completes.
        def resumed(policy: str) -> Any:
            hist = up.cli_json("task", "history", ids[policy], "--limit", "200")
            return hist if any(r["state"] == "Completed" and _t(r["scheduledFor"]) > launched for r in hist) else None

        hist = {p: _wait(f"every-{p} to run again", lambda p=p: resumed(p)) for p in ("skip", "run-once", "run-all")}
        # Runs certainly missed: due after the stop and before the restart's misfire cut-off.
        cut = launched - timedelta(seconds=GRACE_S + 1)

        def started_while_down(policy: str, until: datetime = cut) -> list[datetime]:
            return sorted(_t(r["scheduledFor"]) for r in hist[policy]
                          if r.get("startedAt") and stopped < _t(r["scheduledFor"]) < until)

        # Every run due while the stack was down had misfired by the worker's first pass (the
        # server alone takes longer to start than the grace): skip runs none of them.
        assert started_while_down("skip", launched) == []
        # run-all: every occurrence in the window runs, once. The occurrences are the task's
        # 5 s grid (any run's time is on it). They start in parallel (worker limit 4), so
        # wait for all of them, not for a count: one can start after a later one.
        anchor = _t(hist["run-all"][0]["scheduledFor"])
        first = anchor + EVERY_S * timedelta(seconds=math.ceil((stopped - anchor).total_seconds() / EVERY_S))
        grid = [t for k in range(int((cut - first).total_seconds() // EVERY_S) + 1)
                if stopped < (t := first + k * timedelta(seconds=EVERY_S)) < cut]
        assert grid, "the stack was down for no occurrence"

        def all_ran() -> list[datetime] | None:
            hist["run-all"] = up.cli_json("task", "history", ids["run-all"], "--limit", "200")
            got = started_while_down("run-all")
            return got if set(grid) <= set(got) else None

        assert _wait("every missed run of every-run-all", all_ran) == grid
        log = (tmp_path / "home" / "logs" / "worker.log").read_text()
        once = re.search(rf"Missed runs of task {ids['run-once']}: catch-up run-once: (\d+) dropped, 1 kept, "
                         r"0 created \(kept ([0-9a-f-]+)\)", log)
        assert once and int(once.group(1)) >= 1, log[-3000:]
        # run-once: the latest missed run is the one that ran; every earlier one since the stop was
        # dropped (deleted: it is in no history), none ran.
        kept = next(r for r in hist["run-once"] if r["id"] == once.group(2))
        assert kept["startedAt"] and _t(kept["scheduledFor"]) > stopped
        ran_since_stop = [r for r in hist["run-once"] if r.get("startedAt") and _t(r["scheduledFor"]) > stopped]
        assert min(_t(r["scheduledFor"]) for r in ran_since_stop) == _t(kept["scheduledFor"])
        assert re.search(rf"Missed runs of task {ids['skip']}: catch-up skip: [1-9]\d* dropped, 0 kept,", log)
        # Nothing ran twice: each execution is a different flow run.
        for policy in ("skip", "run-once", "run-all"):
            runs = [r["run"] for r in records(recs[policy])]
            assert len(runs) == len(set(runs)) and len(runs) > executed_before[policy]

        # The trigger survived the restart.
        (watched / "after-restart.txt").write_text("hello")
        _wait("the file trigger to run its task", lambda: records(recs["file"]))
    finally:
        if up.proc is not None and up.proc.poll() is None:
            up.stop()
    gone, alive = psutil.wait_procs(up.children, timeout=30)
    assert not alive, alive
