"""Restart: 1,000 tasks of every kind survive a stop and start of the whole stack.

Issue 8 point 3 at full size (``tests/e2e/test_restart.py`` is the small test of
the same thing). Starts ``bgtasks up`` (Prefect server + UI, warm worker, trigger
daemon, REST API) in a fresh home on free ports, with a fake power tree that says
"on battery" (``BGTASKS_DAEMON_POWER_ROOT``), and creates ``--tasks`` tasks through
the Python API (``TaskManager.create``, 4 at a time: SQLite locks under bursts),
all on the ``demo`` handler. For 1,000:

- 350 one-time, hours to weeks ahead, priorities high/normal/low in turn;
- 300 periodic every ``--every-s`` (15 min), anchors (``startTime``) spread over
  one interval so their runs are evenly spread in time; catch-up policy in turn
  ``skip`` (every other one left unset: the default), ``run-once``, ``run-all``;
- 100 periodic, paused after creation (interval or hourly cron, policies in turn);
- 150 triggered: ``file.arrived`` on 50 directories under the allowed root,
  ``power.plugged``, ``network.connected`` (none fires during the bench);
- 100 waiting for constraints: one-time now with ``requiresCharging``, while the
  fake power tree says on battery.

It waits until every waiting run waits and the daemon watches every file rule,
snapshots every task (the definition the API shows, the Prefect deployment,
schedules and trigger automations, the waiting and one-time runs, the pending
periodic runs), stops the stack (Ctrl-C, as a user would), leaves it down for
``--down-s``, starts it again and measures:

- create time and rate; stack stop time; stack start time (to "ready");
- definitions identical after the restart (and every difference); Prefect
  objects identical; paused tasks still paused with nothing scheduled; waiting
  runs still waiting (same run ids); one-time runs still scheduled (same ids, times);
- missed runs: the periodic runs snapshotted before the stop that were due
  between the stop and the restart's "ready"; what became of each (deleted by
  the catch-up policy, started, still waiting) per policy; the worker's
  "Missed runs of task ...: catch-up ..." log lines (dropped / kept / created);
  the runs catch-up created; how many missed runs started within ``--observe-s``
  after the restart, against the baseline: Prefect without a catch-up policy
  starts every missed run at once;
- resume: per active periodic task, the time after "ready" until none of its
  runs due before the restart is still waiting and its next run is scheduled;
  the lateness of runs due after the restart;
- runs that started after the restart where none should (paused, one-time in
  the future, triggered, waiting tasks); a file dropped after the restart
  starts its triggered task;
- warnings and errors in ``<home>/logs``.

Writes a table to stdout and the numbers as JSON to ``--out``
(``build/bench/restart.json``). Stops everything by PID at the end, also on an
error or Ctrl-C. Exit 1 when something did not come back as it was.

    .venv/bin/python bench/restart.py                          # 1,000 tasks, 120 s down
    .venv/bin/python bench/restart.py --tasks 100 --down-s 60  # quicker
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.common import BenchHome, add_postgres_option  # noqa: E402
from bench.soak import Up, scan_logs  # noqa: E402
from bench.worker import free_port, pct  # noqa: E402

BIN = Path(sys.executable).parent
#: Share of each kind in ``--tasks`` (the issue's mix for 1,000).
MIX = (("one-time", 0.35), ("periodic", 0.30), ("paused", 0.10), ("triggered", 0.15), ("waiting", 0.10))
POLICIES = ("skip", "run-once", "run-all")
PRIORITIES = ("high", "normal", "low")
#: What must come back identical (status, runs and times move on by design); as tests/e2e/test_restart.py.
DEFINITION = ("id", "name", "type", "priority", "handler", "paused", "schedule", "constraints", "retryPolicy",
              "timeoutMs", "trigger", "data", "createdAt", "description")
CREATE_CONCURRENCY = 4
#: A create still waiting after this long counts as an error (the server is stuck, not slow).
CREATE_TIMEOUT_S = 300
READ_CONCURRENCY = 8
PAGE = 200
AWAITING = "AwaitingConstraints"
PENDING_NAMES = ("Scheduled", "Late", "Pending")
MISSED_LINE = re.compile(r"Missed runs of task (\S+): catch-up (\S+): (\d+) dropped, (\d+) kept, (\d+) created")


@dataclass
class Made:
    kind: str                 # one-time, periodic, paused, triggered, waiting
    name: str
    body: dict[str, Any]
    policy: str = ""          # periodic and paused: the effective catch-up policy
    id: str = ""


@dataclass
class Report:
    data: dict[str, Any] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    def problem(self, text: str) -> None:
        self.problems.append(text)
        print(f"  PROBLEM: {text}", flush=True)


def log(text: str) -> None:
    print(f"[{datetime.now():%H:%M:%S}] {text}", flush=True)


def iso(t: datetime) -> str:
    return t.astimezone(UTC).isoformat().replace("+00:00", "Z")


def counts_for(n: int) -> dict[str, int]:
    out = {kind: int(round(n * share)) for kind, share in MIX}
    out["one-time"] += n - sum(out.values())
    return out


def plan_tasks(n: int, every_s: float, watched: Path, now: datetime) -> list[Made]:
    """The task bodies (CreateTaskOptions JSON), by kind, deterministic for a given ``now``."""
    counts = counts_for(n)
    out: list[Made] = []
    for i in range(counts["one-time"]):
        at = now + timedelta(hours=2) + timedelta(minutes=(i * 617) % (30 * 24 * 60))  # 2 h to ~30 days ahead
        out.append(Made("one-time", f"rs-once-{i:04}", {
            "schedule": {"type": "one-time", "startTime": iso(at)}, "priority": PRIORITIES[i % 3]}))
    k = counts["periodic"]
    for i in range(k):
        policy = POLICIES[i % 3]
        # Anchors over one interval, in the past: runs evenly spread, one due every every_s / k seconds.
        anchor = now - timedelta(seconds=every_s * (i + 0.5) / k)
        schedule: dict[str, Any] = {"type": "periodic", "interval": int(every_s * 1000), "startTime": iso(anchor)}
        if policy != "skip" or i % 2:  # half of the skip ones leave it unset: the default
            schedule["catchUp"] = policy
        out.append(Made("periodic", f"rs-every-{policy}-{i:04}", {
            "schedule": schedule, "priority": PRIORITIES[(i // 3) % 3]}, policy=policy))
    for i in range(counts["paused"]):
        policy = POLICIES[i % 3]
        if i % 2:
            schedule = {"type": "periodic", "cron": "0 * * * *", "catchUp": policy}
        else:
            schedule = {"type": "periodic", "interval": int(every_s * 1000),
                        "startTime": iso(now - timedelta(seconds=every_s * i / max(1, counts["paused"]))),
                        "catchUp": policy}
        out.append(Made("paused", f"rs-paused-{i:04}", {"schedule": schedule, "priority": PRIORITIES[i % 3]},
                        policy=policy))
    dirs = max(1, counts["triggered"] // 3)
    for i in range(counts["triggered"]):
        which = i % 3
        if which == 0:
            d = watched / f"d{(i // 3) % dirs:03}"
            d.mkdir(parents=True, exist_ok=True)
            trigger: dict[str, Any] = {"on": "file.arrived", "path": str(d), "pattern": "*" if i % 2 else "*.json"}
        elif which == 1:
            trigger = {"on": "power.plugged"}
        else:
            trigger = {"on": "network.connected"}
        out.append(Made("triggered", f"rs-on-{trigger['on']}-{i:04}", {
            "schedule": {"type": "triggered"}, "trigger": trigger, "priority": PRIORITIES[i % 3]}))
    for i in range(counts["waiting"]):
        out.append(Made("waiting", f"rs-charger-{i:04}", {
            "schedule": {"type": "one-time"}, "constraints": {"requiresCharging": True},
            "priority": PRIORITIES[i % 3]}))
    for m in out:
        m.body = {"name": m.name, "handler": "demo", "description": f"bench/restart {m.kind}", **m.body}
        if m.kind in ("periodic", "paused", "one-time") and int(m.name[-4:]) % 5 == 0:
            m.body["retryPolicy"] = {"maxRetries": 2, "initialBackoffMs": 1000}
            m.body["data"] = {"message": m.name}
    # Interleave the kinds, as a real mix would arrive.
    out.sort(key=lambda m: (int(m.name[-4:]) * 7919) % 1009)
    return out


# ---- the Prefect API ----------------------------------------------------------------


async def read_all_runs(client: Any, flt: Any, sort: Any = None) -> list[Any]:
    from prefect.client.schemas.sorting import FlowRunSort

    out: list[Any] = []
    while True:
        page = await client.read_flow_runs(flow_run_filter=flt, sort=sort or FlowRunSort.EXPECTED_START_TIME_ASC,
                                           limit=PAGE, offset=len(out))
        out.extend(page)
        if len(page) < PAGE:
            return out


async def read_all_deployments(client: Any) -> list[Any]:
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterTags

    from bgtasks.stored import TAG

    out: list[Any] = []
    while True:
        page = await client.read_deployments(
            deployment_filter=DeploymentFilter(tags=DeploymentFilterTags(all_=[TAG])), limit=PAGE, offset=len(out))
        out.extend(page)
        if len(page) < PAGE:
            return out


def runs_filter(**kw: Any) -> Any:
    """A FlowRunFilter of the tasks' runs: ``tags``, ``states`` (names), ``types`` (state types),
    ``ids``, ``deployments``, ``expected_after``/``expected_before``, ``started_after``."""
    from prefect.client.schemas.filters import (
        FlowRunFilter,
        FlowRunFilterDeploymentId,
        FlowRunFilterExpectedStartTime,
        FlowRunFilterId,
        FlowRunFilterStartTime,
        FlowRunFilterState,
        FlowRunFilterStateName,
        FlowRunFilterStateType,
        FlowRunFilterTags,
    )
    from prefect.client.schemas.objects import StateType

    from bgtasks.stored import TAG

    f = FlowRunFilter(tags=FlowRunFilterTags(all_=[TAG, *kw.get("tags", [])]))
    if kw.get("states") or kw.get("types"):
        f.state = FlowRunFilterState(
            name=FlowRunFilterStateName(any_=list(kw["states"])) if kw.get("states") else None,
            type=FlowRunFilterStateType(any_=[StateType(t) for t in kw["types"]]) if kw.get("types") else None)
    if kw.get("ids") is not None:
        f.id = FlowRunFilterId(any_=list(kw["ids"]))
    if kw.get("deployments") is not None:
        f.deployment_id = FlowRunFilterDeploymentId(any_=list(kw["deployments"]))
    if kw.get("expected_after") or kw.get("expected_before"):
        f.expected_start_time = FlowRunFilterExpectedStartTime(after_=kw.get("expected_after"),
                                                               before_=kw.get("expected_before"))
    if kw.get("started_after"):
        f.start_time = FlowRunFilterStartTime(after_=kw["started_after"])
    return f


async def runs_by_id(client: Any, ids: list[str]) -> dict[str, Any]:
    from uuid import UUID

    out: dict[str, Any] = {}
    for i in range(0, len(ids), PAGE):
        chunk = [UUID(x) for x in ids[i:i + PAGE]]
        for r in await read_all_runs(client, runs_filter(ids=chunk)):
            out[str(r.id)] = r
    return out


# ---- create -------------------------------------------------------------------------


async def create_all(client: Any, pool: str, watched: Path, plan: list[Made], progress: dict[str, Any]) -> list[str]:
    """Create every task (4 at a time), pause the paused ones; the errors (each retried once).
    ``progress`` gets the count done and the seconds so far (reported if the bench stops early)."""
    from bgtasks.manager import TaskManager

    mgr = TaskManager(client, pool, allowed_roots=[watched])
    sem = asyncio.Semaphore(CREATE_CONCURRENCY)
    errors: list[str] = []
    done = 0

    async def one(m: Made) -> None:
        nonlocal done
        async with sem:
            for attempt in (1, 2):
                try:
                    m.id = (await asyncio.wait_for(mgr.create(m.body), CREATE_TIMEOUT_S)).id
                    break
                except Exception as exc:  # noqa: BLE001 - counted, retried once, reported
                    errors.append(f"create {m.name} (attempt {attempt}): {type(exc).__name__}: {str(exc)[:200]}")
                    try:  # the first attempt may have been stored after all
                        m.id = await mgr.resolve(m.name)
                        break
                    except Exception:  # noqa: BLE001
                        await asyncio.sleep(1)
            if m.id and m.kind == "paused":
                try:
                    await mgr.pause(m.id)
                except Exception as exc:  # noqa: BLE001
                    errors.append(f"pause {m.name}: {type(exc).__name__}: {str(exc)[:200]}")
            done += 1
            progress.update(done=done, seconds=round(time.monotonic() - t0, 1))
            if done % 100 == 0:
                log(f"  {done} created")

    t0 = time.monotonic()
    await asyncio.gather(*(one(m) for m in plan))
    return errors


# ---- snapshots ----------------------------------------------------------------------


def _jsonable(x: Any) -> Any:
    return json.loads(json.dumps(x, default=str))


async def snapshot_tasks(client: Any, pool: str, made: list[Made]) -> dict[str, Any]:
    """Per task: the definition the API shows, its waiting run ids, and its Prefect objects."""
    from bgtasks.manager import TaskManager
    from bgtasks.stored import automation_name

    mgr = TaskManager(client, pool)
    sem = asyncio.Semaphore(READ_CONCURRENCY)
    deps = {str(d.id): d for d in await read_all_deployments(client)}
    out: dict[str, Any] = {"definitions": {}, "waiting": {}, "prefect": {}, "errors": [], "deployments": len(deps)}

    async def one(m: Made) -> None:
        async with sem:
            try:
                t = await mgr.get(m.id)
            except Exception as exc:  # noqa: BLE001 - a task that does not come back is a finding
                out["errors"].append(f"{m.name}: {type(exc).__name__}: {str(exc)[:200]}")
                return
            view = t.model_dump(mode="json", by_alias=True)
            out["definitions"][m.id] = {k: view.get(k) for k in DEFINITION}
            out["waiting"][m.id] = sorted(w.run_id for w in (t.waiting or []))
            dep = deps.get(m.id)
            if dep is None:
                out["errors"].append(f"{m.name}: no deployment in the paged listing")
                return
            autos = []
            if m.kind == "triggered":
                for a in await client.read_automations_by_name(automation_name(m.id)):
                    autos.append({"id": str(a.id), "enabled": a.enabled,
                                  "trigger": _jsonable(a.trigger.model_dump(mode="json")),
                                  "actions": _jsonable([x.model_dump(mode="json") for x in a.actions])})
            out["prefect"][m.id] = _jsonable({
                "name": dep.name, "paused": dep.paused, "tags": sorted(dep.tags or []),
                "parameters": dep.parameters, "description": dep.description, "entrypoint": dep.entrypoint,
                "pool": dep.work_pool_name, "queue": dep.work_queue_name,
                "schedules": sorted(({"id": str(s.id), "active": s.active,
                                      "schedule": s.schedule.model_dump(mode="json")} for s in dep.schedules or []),
                                    key=lambda s: s["id"]),
                "automations": sorted(autos, key=lambda a: a["id"]),
            })

    await asyncio.gather(*(one(m) for m in made if m.id))
    return out


async def snapshot_runs(client: Any, horizon: datetime) -> dict[str, Any]:
    """The one-time and waiting runs (all), the pending periodic runs due before ``horizon``,
    and the runs in flight."""
    one_time = await read_all_runs(client, runs_filter(tags=["type:one-time"], types=["SCHEDULED"]))
    periodic = await read_all_runs(client, runs_filter(tags=["type:periodic"], states=PENDING_NAMES,
                                                       expected_before=horizon))
    flying = await read_all_runs(client, runs_filter(types=["RUNNING", "PENDING"]))
    return {
        "one_time": {str(r.id): {"task": str(r.deployment_id), "state": r.state.name,
                                 "expected": iso(r.expected_start_time)} for r in one_time},
        "periodic": {str(r.id): {"task": str(r.deployment_id), "state": r.state.name,
                                 "expected": r.expected_start_time} for r in periodic},
        "in_flight": {str(r.id): {"task": str(r.deployment_id), "state": r.state.name} for r in flying},
    }


def diff(a: Any, b: Any, path: str = "") -> list[str]:
    """Where two JSON values differ, as ``path: before -> after`` lines."""
    if isinstance(a, dict) and isinstance(b, dict):
        out: list[str] = []
        for k in sorted(set(a) | set(b)):
            out += diff(a.get(k), b.get(k), f"{path}.{k}" if path else str(k))
        return out
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        return [x for i, (p, q) in enumerate(zip(a, b)) for x in diff(p, q, f"{path}[{i}]")]
    return [] if a == b else [f"{path}: {json.dumps(a, default=str)[:160]} -> {json.dumps(b, default=str)[:160]}"]


# ---- after the restart: watch the periodic tasks --------------------------------------


@dataclass
class Observed:
    started: dict[str, dict[str, Any]] = field(default_factory=dict)  # run id -> task, expected, start, tags
    resumed: dict[str, float] = field(default_factory=dict)             # task -> s after ready
    polls: int = 0
    errors: list[str] = field(default_factory=list)


async def observe(client: Any, active: set[str], since: datetime, ready: datetime, until_mono: float,
                  obs: Observed, interval_s: float, every_s: float = 5.0) -> None:
    """Poll the periodic runs until ``until_mono``: which started, and when each active task
    resumed (no run due before ``ready`` still waiting, a next run scheduled)."""
    while time.monotonic() < until_mono:
        now = datetime.now(UTC)
        try:
            runs = await read_all_runs(client, runs_filter(tags=["type:periodic"], expected_after=since,
                                                          expected_before=now + timedelta(seconds=interval_s + 60)))
        except Exception as exc:  # noqa: BLE001 - a slow poll is noted, the next one tries again
            obs.errors.append(f"{type(exc).__name__}: {str(exc)[:160]}")
            await asyncio.sleep(every_s)
            continue
        obs.polls += 1
        overdue: set[str] = set()
        upcoming: set[str] = set()
        for r in runs:
            dep = str(r.deployment_id)
            name = r.state.name if r.state else ""
            if r.start_time is not None and str(r.id) not in obs.started:
                obs.started[str(r.id)] = {"task": dep, "expected": r.expected_start_time, "start": r.start_time,
                                          "tags": list(r.tags or [])}
            if name in PENDING_NAMES and r.start_time is None:
                if r.expected_start_time <= ready:
                    overdue.add(dep)
                elif r.expected_start_time > now and name == "Scheduled":
                    upcoming.add(dep)
        t = (datetime.now(UTC) - ready).total_seconds()
        for dep in active - set(obs.resumed):
            if dep not in overdue and dep in upcoming:
                obs.resumed[dep] = t
        await asyncio.sleep(every_s)


# ---- the bench ----------------------------------------------------------------------


def leftovers(up: Up) -> list[str]:
    out = []
    for p in up.known.values():
        try:
            if p.is_running() and p.status() != psutil.STATUS_ZOMBIE:
                out.append(f"{p.pid} {' '.join(p.cmdline())[:120]}")
        except psutil.Error:
            pass
    return out


def stop_stack(up: Up) -> tuple[float, int | None, list[str]]:
    """Ctrl-C to ``bgtasks up``; (seconds until it exited, its exit code, processes left before the kill)."""
    up.parts()  # every descendant known, to check and kill by PID
    assert up.proc is not None
    t0 = time.monotonic()
    up.proc.send_signal(signal.SIGINT)
    try:
        code: int | None = up.proc.wait(timeout=120)
    except subprocess.TimeoutExpired:
        code = None
    stop_s = time.monotonic() - t0
    deadline = time.monotonic() + 10
    while leftovers(up) and time.monotonic() < deadline:
        time.sleep(0.2)
    left = leftovers(up)
    up.stop()  # kills whatever is left, by PID
    return stop_s, code, left


def wait_daemon_rules(state: Path, ids: list[str], timeout_s: float = 300) -> float:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout_s:
        try:
            if set(ids) <= set(json.loads(state.read_text())["_daemon"]["rules"]):
                return time.monotonic() - t0
        except (OSError, ValueError, KeyError):
            pass
        time.sleep(0.5)
    raise SystemExit(f"the daemon did not pick up the {len(ids)} file rules within {timeout_s:g} s")


async def wait_waiting(client: Any, ids: set[str], timeout_s: float = 900) -> float:
    """Until every waiting task has a run in AwaitingConstraints."""
    t0 = time.monotonic()
    while True:
        runs = await read_all_runs(client, runs_filter(states=[AWAITING]))
        have = {str(r.deployment_id) for r in runs} & ids
        if len(have) == len(ids):
            return time.monotonic() - t0
        if time.monotonic() - t0 > timeout_s:
            raise SystemExit(f"only {len(have)} of {len(ids)} waiting tasks wait after {timeout_s:g} s")
        await asyncio.sleep(2)


def s_stats(xs: list[float]) -> dict[str, Any]:
    if not xs:
        return {"n": 0}
    return {"n": len(xs), "p50": round(pct(xs, 0.5), 1), "p95": round(pct(xs, 0.95), 1), "max": round(max(xs), 1)}


def fmt_stats(st: dict[str, Any]) -> str:
    return "-" if not st.get("n") else f"p50 {st['p50']:g} s, p95 {st['p95']:g} s, max {st['max']:g} s (n={st['n']})"


async def bench(args: Any, home: BenchHome, up: Up, rep: Report) -> None:
    from prefect.client.orchestration import get_client

    settings = home.settings
    pool = settings.worker.pool
    watched = home.path / "watched"
    watched.mkdir()
    d = rep.data

    log(f"starting bgtasks up in {home.path} ...")
    up.start()
    d["first_start_s"] = round(up.startup_s, 1)
    log(f"up in {up.startup_s:.1f} s; creating {args.tasks} tasks, {CREATE_CONCURRENCY} at a time")

    plan = plan_tasks(args.tasks, args.every_s, watched, datetime.now(UTC))
    by_kind = Counter(m.kind for m in plan)
    d["mix"] = dict(by_kind)
    async with get_client() as client:
        t0 = time.monotonic()
        d["create_progress"] = {}
        errors = await create_all(client, pool, watched, plan, d["create_progress"])
        create_s = time.monotonic() - t0
    made = [m for m in plan if m.id]
    d["create"] = {"tasks": len(made), "seconds": round(create_s, 1), "per_s": round(len(made) / create_s, 1),
                   "errors": errors}
    log(f"created {len(made)} in {create_s:.1f} s ({len(made) / create_s:.1f}/s), {len(errors)} errors")
    for e in errors[:10]:
        print(f"    {e}")
    if len(made) < len(plan):
        rep.problem(f"{len(plan) - len(made)} tasks could not be created")
    kind_of = {m.id: m for m in made}
    ids = {k: {m.id for m in made if m.kind == k} for k in by_kind}

    async with get_client() as client:
        log("waiting until every waiting run waits and the daemon watches every file rule ...")
        d["settle_waiting_s"] = round(await wait_waiting(client, ids["waiting"]), 1)
        file_ids = [m.id for m in made if m.kind == "triggered" and m.body["trigger"]["on"].startswith("file.")]
        d["settle_rules_s"] = round(wait_daemon_rules(home.path / "daemon-state.json", file_ids), 1)
        log("snapshot of every task ...")
        t0 = time.monotonic()
        before = await snapshot_tasks(client, pool, made)
        d["snapshot_s"] = round(time.monotonic() - t0, 1)
        for e in before["errors"]:
            rep.problem(f"before the stop: {e}")
        runs_before = await snapshot_runs(client, datetime.now(UTC) + timedelta(seconds=args.down_s + 900))

    worker_log = home.path / "logs" / "worker.log"
    before_log = worker_log.read_text(errors="replace") if worker_log.exists() else ""
    d["catch_up_lines_before_stop"] = len(MISSED_LINE.findall(before_log))

    # ---- stop, down, start ----
    log("stopping the stack (Ctrl-C) ...")
    stop_at = datetime.now(UTC)
    stop_s, code, left = stop_stack(up)
    d["stop"] = {"seconds": round(stop_s, 1), "exit_code": code, "left_running": left}
    log(f"stopped in {stop_s:.1f} s (exit {code}); down for {args.down_s:g} s")
    if code != 0:
        rep.problem(f"bgtasks up exited {code} on Ctrl-C")
    if left:
        rep.problem(f"{len(left)} processes still running 10 s after bgtasks up exited: {left}")
    time.sleep(args.down_s)
    log("starting the stack again ...")
    t_launch = time.monotonic()
    up.start()
    ready = datetime.now(UTC)
    d["restart_s"] = round(time.monotonic() - t_launch, 1)
    log(f"ready in {d['restart_s']:.1f} s; observing the periodic tasks for {args.observe_s:g} s")

    grace = settings.worker.misfire_grace_s
    d["misfire_grace_s"] = grace
    active = ids["periodic"]
    obs = Observed()
    async with get_client() as client:
        watcher = asyncio.create_task(observe(client, active, stop_at - timedelta(seconds=args.every_s), ready,
                                              time.monotonic() + args.observe_s, obs, args.every_s))
        t0 = time.monotonic()
        after = await snapshot_tasks(client, pool, made)
        d["snapshot_after_s"] = round(time.monotonic() - t0, 1)
        runs_after_snap = await snapshot_runs(client, datetime.now(UTC))
        await watcher
        # ---- outcomes ----
        missed = {rid: r for rid, r in runs_before["periodic"].items()
                  if stop_at <= r["expected"] <= ready}
        final = await runs_by_id(client, list(missed))
        in_flight_after = await runs_by_id(client, list(runs_before["in_flight"]))
        since_ready = await read_all_runs(client, runs_filter(started_after=ready))
        catch_up_runs = await read_all_runs(client, runs_filter(tags=["bgtasks:catch-up"]))
        paused_all = await read_all_runs(client, runs_filter(deployments=list(ids["paused"])))
        paused_runs = [r for r in paused_all if r.state is not None and r.state.type.value == "SCHEDULED"]
        paused_started = [r for r in paused_all if r.start_time is not None]
        # A file dropped after the restart starts its triggered task.
        file_task = next((m for m in made if m.kind == "triggered" and m.body["trigger"]["on"] == "file.arrived"),
                         None)
        trigger_s = None
        if file_task is not None:
            t0 = time.monotonic()
            (Path(file_task.body["trigger"]["path"]) / "after-restart.json").write_text("{}\n")  # any pattern
            while time.monotonic() - t0 < 180:
                got = await read_all_runs(client, runs_filter(deployments=[file_task.id]))
                if any(r.start_time is not None for r in got):
                    trigger_s = time.monotonic() - t0
                    break
                await asyncio.sleep(1)
            if trigger_s is None:
                rep.problem(f"a file dropped after the restart did not start {file_task.name} within 180 s")
        d["file_trigger_after_restart_s"] = None if trigger_s is None else round(trigger_s, 1)

    # `bgtasks task ls` (what a user sees), once.
    ls = subprocess.run([str(BIN / "bgtasks"), "task", "ls", "-o", "json"], env=up.env, capture_output=True,
                        text=True, timeout=600)
    d["task_ls_count"] = len(json.loads(ls.stdout)) if ls.returncode == 0 else f"exit {ls.returncode}: {ls.stderr[-300:]}"
    if d["task_ls_count"] != len(made):
        rep.problem(f"`bgtasks task ls` lists {d['task_ls_count']} of {len(made)} tasks")

    # ---- compare ----
    for e in after["errors"]:
        rep.problem(f"after the restart: {e}")
    same = [i for i in before["definitions"] if after["definitions"].get(i) == before["definitions"][i]]
    diffs = {i: diff(before["definitions"][i], after["definitions"].get(i)) for i in before["definitions"]
             if i not in same}
    d["definitions"] = {"identical": len(same), "of": len(made), "differences": {
        kind_of[i].name: v[:5] for i, v in list(diffs.items())[:20]}}
    if diffs:
        rep.problem(f"{len(diffs)} task definitions differ after the restart")
    p_same = [i for i in before["prefect"] if after["prefect"].get(i) == before["prefect"][i]]
    p_diffs = {i: diff(before["prefect"][i], after["prefect"].get(i)) for i in before["prefect"] if i not in p_same}
    d["prefect_objects"] = {"identical": len(p_same), "of": len(before["prefect"]),
                            "deployments_before": before["deployments"], "deployments_after": after["deployments"],
                            "differences": {kind_of[i].name: v[:5] for i, v in list(p_diffs.items())[:20]}}
    if p_diffs:
        rep.problem(f"{len(p_diffs)} Prefect deployments/automations differ after the restart")
    paused_ok = [i for i in ids["paused"] if (after["definitions"].get(i) or {}).get("paused") is True
                 and (after["prefect"].get(i) or {}).get("paused") is True]
    d["paused"] = {"still_paused": len(paused_ok), "of": len(ids["paused"]), "scheduled_runs": len(paused_runs),
                   "runs_that_started": len(paused_started),
                   "examples": [{"task": kind_of[str(r.deployment_id)].name, "run": str(r.id), "state": r.state.name,
                                 "created": iso(r.created), "expected": iso(r.expected_start_time),
                                 "started": iso(r.start_time) if r.start_time else None,
                                 "auto_scheduled": r.auto_scheduled}
                                for r in (paused_started + paused_runs)[:10]]}
    if len(paused_ok) != len(ids["paused"]) or paused_runs or paused_started:
        rep.problem(f"paused: {len(paused_ok)}/{len(ids['paused'])} still paused, {len(paused_runs)} runs scheduled, "
                    f"{len(paused_started)} runs started since creation (the pause follows the create by < 1 s)")
    w_same = [i for i in ids["waiting"] if before["waiting"].get(i) and after["waiting"].get(i) == before["waiting"][i]]
    d["waiting"] = {"same_runs_waiting": len(w_same), "of": len(ids["waiting"]),
                    "lost": {kind_of[i].name: [before["waiting"].get(i), after["waiting"].get(i)]
                             for i in ids["waiting"] if i not in w_same}}
    if len(w_same) != len(ids["waiting"]):
        rep.problem(f"waiting: {len(ids['waiting']) - len(w_same)} tasks' waiting runs changed")
    ot_before = {r: v for r, v in runs_before["one_time"].items() if v["task"] in ids["one-time"]}
    ot_after = {r: v for r, v in runs_after_snap["one_time"].items() if v["task"] in ids["one-time"]}
    d["one_time"] = {"same_runs_scheduled": sum(1 for r, v in ot_before.items() if ot_after.get(r) == v),
                     "of": len(ot_before), "tasks": len(ids["one-time"])}
    if d["one_time"]["same_runs_scheduled"] != len(ot_before) or len(ot_before) != len(ids["one-time"]):
        rep.problem(f"one-time: {d['one_time']}")

    # Unexpected starts after the restart.
    unexpected: Counter[str] = Counter()
    for r in since_ready:
        m = kind_of.get(str(r.deployment_id))
        if r.start_time is None or r.start_time < ready:
            continue  # the start-time filter also matches runs that have not started
        if m is None or m.kind == "periodic" or (m is file_task):
            continue
        unexpected[m.kind] += 1
    d["unexpected_starts_after_restart"] = dict(unexpected)
    if unexpected:
        rep.problem(f"runs started after the restart where none should: {dict(unexpected)}")
    d["in_flight_at_stop"] = {rid: {"task": kind_of[v["task"]].name if v["task"] in kind_of else v["task"],
                                    "before": v["state"],
                                    "after": in_flight_after[rid].state.name if rid in in_flight_after else "deleted"}
                              for rid, v in runs_before["in_flight"].items()}

    # ---- missed runs ----
    window_s = (ready - stop_at).total_seconds()
    cut = ready - timedelta(seconds=grace)
    per: dict[str, Counter[str]] = defaultdict(Counter)
    starts_after: list[float] = []
    for rid, r in missed.items():
        m = kind_of.get(r["task"])
        policy = m.policy if m else "?"
        c = per[policy]
        c["missed"] += 1
        c["beyond grace" if r["expected"] < cut else "within grace"] += 1
        now_r = final.get(rid)
        started = obs.started.get(rid)
        start = started["start"] if started else (now_r.start_time if now_r is not None else None)
        if now_r is None and start is None:
            c["deleted"] += 1
        elif start is not None:
            dt = (start - ready).total_seconds()
            c["started"] += 1
            if dt <= args.observe_s:
                c["started in window"] += 1
                starts_after.append(dt)
        else:
            c["still waiting"] += 1
    created = [r for r in catch_up_runs if r.created and r.created >= stop_at]
    for r in created:
        m = kind_of.get(str(r.deployment_id))
        c = per[m.policy if m else "?"]
        c["created by catch-up"] += 1
        if r.start_time is not None:
            c["created, started"] += 1
            starts_after.append((r.start_time - ready).total_seconds())
    new_log = worker_log.read_text(errors="replace")[len(before_log):] if worker_log.exists() else ""
    lines = MISSED_LINE.findall(new_log)
    by_log: dict[str, Counter[str]] = defaultdict(Counter)
    for _task, policy, dropped, kept, made_n in lines:
        by_log[policy]["tasks"] += 1
        by_log[policy]["dropped"] += int(dropped)
        by_log[policy]["kept"] += int(kept)
        by_log[policy]["created"] += int(made_n)
    m_total = len(missed)
    burst_60 = sum(1 for x in starts_after if x <= 60)
    d["missed"] = {
        "window_s": round(window_s, 1), "total": m_total,
        "beyond_grace": sum(1 for r in missed.values() if r["expected"] < cut),
        "per_policy": {k: dict(v) for k, v in sorted(per.items())},
        "worker_log": {k: dict(v) for k, v in sorted(by_log.items())},
        "worker_log_lines": len(lines),
        "started_in_window": len(starts_after), "started_first_60s": burst_60,
        "observe_s": args.observe_s,
        "baseline_no_policy": m_total,
        "start_offsets_s": s_stats(starts_after),
    }
    if per.get("skip", Counter())["started"] > per.get("skip", Counter())["within grace"]:
        rep.problem("skip: more missed runs started than were within the grace")

    # ---- resume ----
    resumed = [obs.resumed[i] for i in active if i in obs.resumed]
    with_missed = {r["task"] for r in missed.values()}
    late_after = [(v["start"] - v["expected"]).total_seconds() for v in obs.started.values()
                  if v["expected"] > ready and v["task"] in active]
    d["resume"] = {
        "tasks": len(active), "resumed": len(resumed),
        "all_s": s_stats(resumed),
        "with_missed_runs_s": s_stats([obs.resumed[i] for i in with_missed if i in obs.resumed]),
        "not_resumed": sorted(kind_of[i].name for i in active if i not in obs.resumed)[:20],
        "lateness_of_runs_due_after_restart_s": s_stats(late_after),
        "observer_polls": obs.polls, "observer_errors": obs.errors[:5],
    }
    if len(resumed) != len(active):
        rep.problem(f"{len(active) - len(resumed)} periodic tasks had not resumed after {args.observe_s:g} s")


def print_report(rep: Report, args: Any, home: BenchHome) -> None:
    d = rep.data
    n = d.get("create", {}).get("tasks", 0)
    print(f"\nRestart of the whole stack: {n} tasks, {home.database}, {os.cpu_count()} cores (shared, noisy), "
          f"down {args.down_s:g} s, periodic every {args.every_s:g} s, misfire grace {d.get('misfire_grace_s')} s")
    rows: list[tuple[str, str]] = []
    if "create" in d:
        c = d["create"]
        rows.append(("mix", ", ".join(f"{k} {v}" for k, v in d["mix"].items())))
        rows.append(("create (Python API, 4 at a time)", f"{c['seconds']:g} s, {c['per_s']:g} tasks/s, "
                                                         f"{len(c['errors'])} errors"))
    if "stop" in d:
        s = d["stop"]
        rows.append(("stack stop (Ctrl-C -> exited)", f"{s['seconds']:g} s, exit {s['exit_code']}, "
                                                      f"{len(s['left_running'])} processes left"))
    if "restart_s" in d:
        rows.append(("stack start (launch -> ready)", f"{d['restart_s']:g} s (first start {d['first_start_s']:g} s)"))
    if "definitions" in d:
        rows.append(("definitions identical", f"{d['definitions']['identical']} / {d['definitions']['of']}"))
        p = d["prefect_objects"]
        rows.append(("Prefect objects identical", f"{p['identical']} / {p['of']} (deployments, schedules, "
                                                  "automations)"))
        rows.append(("paused still paused", f"{d['paused']['still_paused']} / {d['paused']['of']}, "
                                            f"{d['paused']['scheduled_runs']} runs scheduled, "
                                            f"{d['paused']['runs_that_started']} runs ever started"))
        rows.append(("waiting runs still waiting", f"{d['waiting']['same_runs_waiting']} / {d['waiting']['of']} "
                                                   "(same run ids)"))
        o = d["one_time"]
        rows.append(("one-time runs still scheduled", f"{o['same_runs_scheduled']} / {o['of']} (same ids, times)"))
        rows.append(("unexpected starts after restart", str(d["unexpected_starts_after_restart"] or "none")))
        rows.append(("file trigger after restart", "-" if d["file_trigger_after_restart_s"] is None
                     else f"ran {d['file_trigger_after_restart_s']:g} s after the drop"))
        rows.append(("`bgtasks task ls` lists", f"{d['task_ls_count']} tasks"))
    if "missed" in d:
        m = d["missed"]
        rows.append(("missed periodic runs", f"{m['total']} due in the {m['window_s']:g} s from Ctrl-C to ready "
                                             f"({m['beyond_grace']} beyond the grace at ready)"))
        rows.append(("baseline, no catch-up policy", f"all {m['baseline_no_policy']} start at once"))
        rows.append((f"bgtasks: started within {m['observe_s']:g} s",
                     f"{m['started_in_window']} ({m['started_first_60s']} in the first 60 s); "
                     f"start after ready: {fmt_stats(m['start_offsets_s'])}"))
        rows.append(("worker log catch-up lines", str(m["worker_log_lines"])))
        r = d["resume"]
        rows.append(("periodic tasks resumed", f"{r['resumed']} / {r['tasks']}: {fmt_stats(r['all_s'])}"))
        rows.append(("  of those with missed runs", fmt_stats(r["with_missed_runs_s"])))
        rows.append(("lateness, runs due after ready", fmt_stats(r["lateness_of_runs_due_after_restart_s"])))
    if "create" not in d and d.get("create_progress"):
        rows.append(("create, when the bench stopped", f"{d['create_progress']['done']} of {args.tasks} in "
                                                      f"{d['create_progress']['seconds']:g} s"))
    w = max(len(a) for a, _ in rows) if rows else 0
    for a, b in rows:
        print(f"  {a:{w}}  {b}")
    if "missed" in d:
        keys = ("missed", "beyond grace", "within grace", "deleted", "started", "started in window",
                "still waiting", "created by catch-up", "created, started")
        print(f"\n  missed runs per catch-up policy (from the Prefect API)\n  {'policy':9} "
              + " ".join(f"{k:>12}" for k in ("missed", "beyond grace", "within", "deleted", "started",
                                                "in window", "waiting", "created", "created+run")))
        for pol, c in d["missed"]["per_policy"].items():
            print(f"  {pol:9} " + " ".join(f"{c.get(k, 0):>12}" for k in keys))
        print(f"\n  worker log, 'Missed runs of task ...' lines after the restart\n  {'policy':9} "
              + " ".join(f"{k:>8}" for k in ("tasks", "dropped", "kept", "created")))
        for pol, c in d["missed"]["worker_log"].items():
            print(f"  {pol:9} " + " ".join(f"{c.get(k, 0):>8}" for k in ("tasks", "dropped", "kept", "created")))
    for key, label in (("definitions", "definition differences"), ("prefect_objects", "Prefect object differences")):
        for name, lines in (d.get(key, {}).get("differences") or {}).items():
            print(f"  {label}: {name}")
            for ln in lines:
                print(f"      {ln}")
    for ex in d.get("paused", {}).get("examples") or []:
        print(f"  paused task's run: {ex}")
    if d.get("waiting", {}).get("lost"):
        print(f"  waiting runs changed: {d['waiting']['lost']}")
    if d.get("in_flight_at_stop"):
        print(f"  runs in flight at the stop: {d['in_flight_at_stop']}")
    if d.get("logs"):
        print("\n  logs (<home>/logs): warning/error records")
        for f, info in d["logs"].items():
            if info["counts"]:
                print(f"    {f}: {info['counts']}")
                for ex in info["examples"][:6]:
                    print(f"        {ex}")
    print(f"\n  home (logs, database): {home.path}")
    if rep.problems:
        print("\n  PROBLEMS:")
        for p in rep.problems:
            print(f"    - {p}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tasks", type=int, default=1000, help="tasks to create (the mix scales)")
    ap.add_argument("--down-s", type=float, default=120, help="how long the stack stays down")
    ap.add_argument("--every-s", type=float, default=900, help="periodic tasks' interval (default 15 min)")
    ap.add_argument("--observe-s", type=float, default=300,
                    help="how long after the restart the periodic tasks are watched")
    ap.add_argument("--out", type=Path, default=ROOT / "build" / "bench" / "restart.json")
    add_postgres_option(ap)
    args = ap.parse_args()
    if args.tasks < 10:
        ap.error("--tasks: at least 10 (one of each kind)")

    for k in [k for k in os.environ if k.startswith("BGTASKS_")]:
        del os.environ[k]
    os.environ["BGTASKS_API_PORT"] = str(free_port())
    home = BenchHome("restart", args.postgres)
    power = home.path / "power"
    from tests.power import write_power_tree

    write_power_tree(power, percent=70, plugged=False)  # on battery: "requires charging" waits
    env = {**os.environ, "BGTASKS_DAEMON_ALLOWED_ROOTS": json.dumps([str(home.path / "watched")]),
           "BGTASKS_DAEMON_POWER_ROOT": str(power), "COLUMNS": "200"}
    os.environ.update({k: env[k] for k in ("BGTASKS_DAEMON_ALLOWED_ROOTS", "BGTASKS_DAEMON_POWER_ROOT")})
    up = Up(home.path, env)
    rep = Report()
    rep.data.update({"tasks": args.tasks, "down_s": args.down_s, "every_s": args.every_s, "database": home.database,
                     "cores": os.cpu_count(), "home": str(home.path), "started": iso(datetime.now(UTC))})

    def on_term(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    failed: str | None = None
    try:
        asyncio.run(bench(args, home, up, rep))
    except KeyboardInterrupt:
        failed = "interrupted"
    except SystemExit as exc:
        failed = str(exc)
    except Exception as exc:  # noqa: BLE001 - reported with what was measured so far
        import traceback

        traceback.print_exc()
        failed = f"{type(exc).__name__}: {exc}"
    finally:
        if up.proc is not None and up.proc.poll() is None:
            log("stopping the stack ...")
        up.stop()  # Ctrl-C, then kills by PID whatever is left
        left = leftovers(up)
        if left:
            rep.problem(f"processes left after the end: {left}")
        try:
            home.drop()
        except Exception as exc:  # noqa: BLE001
            print(f"dropping the database: {exc}", file=sys.stderr)
    if failed:
        rep.problem(f"the bench stopped early: {failed}")
        if up.output:
            print("bgtasks up's last output:\n" + "".join(up.output[-15:]), file=sys.stderr)
    rep.data["logs"] = scan_logs(home.path / "logs", set())
    rep.data["problems"] = rep.problems
    print_report(rep, args, home)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(rep.data, indent=2, default=str) + "\n")
    print(f"  JSON: {args.out}")
    return 1 if rep.problems else 0


if __name__ == "__main__":
    sys.exit(main())
