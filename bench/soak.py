"""Soak: mixed load against the embedded stack for ``--minutes``; count every run.

Starts ``bgtasks up`` (Prefect server + UI, warm worker, trigger daemon, REST API)
in a fresh home on free ports, creates the tasks through the REST API, and for
``--minutes`` keeps up a mixed load, all ``demo`` handler runs:

- periodic: one task per ``--periodic`` interval (default 5, 7 and 10 s);
- run-now bursts: ``--burst`` runs of a one-time task at once, every ``--burst-every`` s;
- triggered: a ``file.created`` task watching a directory of the home; one file
  dropped every ``--drop-every`` s;
- injected failures: run-now of a *flaky* task (fails its first 2 attempts,
  ``maxRetries`` 3, 1 s backoff: must end Completed after exactly 3 attempts) every
  ``--flaky-every`` s, and of a *broken* task (always fails, ``maxRetries`` 1: must
  end Failed after exactly 2 attempts) every ``--broken-every`` s.

Then it stops the load and drains (``--drain-s`` at most) until every expected run
is final, stops the stack by PID and reports.

Counting. The demo handler appends one JSON line per attempt (flow run id,
attempt number, triggering event) to a file per task (``data.recordTo``); the
flow runs (state, scheduled and actual start) are read from the Prefect API.
Expected runs:

- run-now, flaky, broken: the run ids the REST API returned;
- periodic: every slot ``anchor + k * interval`` up to the end of the load (the
  bench sets the anchor), whether or not Prefect created a run for it;
- triggered: every dropped file (found in the run's ``event.payload.paths``).

Lost = an expected run (or slot, or file) that did not end in its expected state
(Completed; Failed for broken) with its expected attempts by the end of the drain.
Duplicated = a flow run whose handler ran the same attempt more than once, a
periodic slot with more than one run, or a file with more than one run. Lateness
= flow run ``start_time`` - ``expected_start_time`` of the periodic runs. A
run-now request the REST API refused (a 5xx, a reset connection) is an expected
run that was lost. The soak passes (exit 0) only with nothing lost, nothing
duplicated and no REST API error.

RSS (psutil) every ``--sample-every`` s of: the server (``prefect server start`` and
its descendants), the worker (the worker process and its zygote; not the forked
run children, which live about a second: their count is sampled apart), the
trigger daemon and the REST API. Growth trend = least-squares slope, MiB per
hour, over all samples and over the second half of the load (start-up excluded).

Writes a table to stdout, ``--out`` (PNG: RSS and lateness over time) and the
numbers as JSON next to it. Exits 1 when a run was lost or duplicated, 2 when the
stack stopped during the soak (``bgtasks up`` stops everything when a part dies).

``--cluster``: the same load on ``bgtasks cluster up`` (docs/scaling.md) instead, with a
kill -9 of an API replica, the services process, host-b (worker and daemon), the other API
replica, the services process again and host-a's worker, at even intervals; a run whose
attempt such a kill cut short has one attempt more, counted as "retried after a kill".

    .venv/bin/python bench/soak.py                 # 30 minutes
    .venv/bin/python bench/soak.py --minutes 3     # a quick check
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.worker import free_port, pct  # noqa: E402

BIN = Path(sys.executable).parent
FINAL = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}
FLAKY_FAILS = 2      # the flaky task fails this many attempts, then succeeds
FLAKY_RETRIES = 3
BROKEN_RETRIES = 1   # the broken task always fails: 1 + BROKEN_RETRIES attempts, then Failed


# ---- the stack ------------------------------------------------------------------


class StackDied(RuntimeError):
    """``bgtasks up`` exited before the soak was over."""


class Up:
    """``bgtasks up`` as our child in its own session; stopped by PID."""

    def __init__(self, home: Path, env: dict[str, str]) -> None:
        self.home, self.env = home, env
        self.proc: subprocess.Popen[str] | None = None
        self.output: list[str] = []
        self.known: dict[int, psutil.Process] = {}  # every descendant seen, to kill what outlives a stop
        self.startup_s = 0.0

    def start(self, timeout_s: float = 300, argv: list[str] | None = None, ready: str = "Press Ctrl-C to stop") -> None:
        t0 = time.monotonic()
        self.proc = subprocess.Popen([str(BIN / "bgtasks"), *(argv or ["up"])], env=self.env, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True, start_new_session=True)
        lines: queue.Queue[str] = queue.Queue()

        def pump() -> None:  # keeps all of up's output, also after start-up (why it stopped)
            assert self.proc is not None and self.proc.stdout is not None
            for line in self.proc.stdout:
                self.output.append(line)
                lines.put(line)
            lines.put("")

        threading.Thread(target=pump, daemon=True).start()
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                line = lines.get(timeout=max(0.1, deadline - time.monotonic()))
            except queue.Empty:
                break
            if line == "":
                raise SystemExit(f"bgtasks up exited:\n{''.join(self.output)}")
            if ready in line:
                self.startup_s = time.monotonic() - t0
                self.parts()
                return
        raise SystemExit(f"bgtasks up not ready within {timeout_s:g} s:\n{''.join(self.output)}")

    def check(self) -> None:
        """Raise :class:`StackDied` when ``bgtasks up`` has exited (it stops all when a part dies)."""
        if self.proc is not None and self.proc.poll() is not None:
            raise StackDied(f"bgtasks up exited ({self.proc.returncode}) during the soak; its last output:\n"
                            + "".join(self.output[-15:]))

    def parts(self) -> dict[str, psutil.Process]:
        """The stack's parts by name (server, worker, daemon, api), from ``up``'s children."""
        out: dict[str, psutil.Process] = {}
        if self.proc is None:
            return out
        try:
            children = psutil.Process(self.proc.pid).children()
        except psutil.NoSuchProcess:
            return out
        for child in children:
            try:
                argv = child.cmdline()
                self.known[child.pid] = child
                for d in child.children(recursive=True):
                    self.known[d.pid] = d
            except psutil.Error:
                continue
            if "server" in argv and "start" in argv:
                out["server"] = child
            elif "worker" in argv and "start" in argv:
                out["worker"] = child
            elif "triggers.daemon" in argv or "daemon" in argv:
                out["daemon"] = child
            elif "api" in argv:
                out["api"] = child
        return out

    def stop(self) -> int | None:
        """SIGINT (as Ctrl-C would), then SIGKILL by PID to whatever is left."""
        if self.proc is None:
            return None
        code = None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                code = self.proc.wait(timeout=120)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        else:
            code = self.proc.returncode
        for p in self.known.values():
            try:
                if p.is_running():
                    p.kill()
            except psutil.Error:
                pass
        return code

    def groups(self) -> dict[str, list[psutil.Process]]:
        return {name: [p] for name, p in self.parts().items()}

    def note(self) -> str:
        return "`bgtasks up`"


class ClusterUp:
    """``bgtasks cluster up`` (2 Prefect API replicas behind HAProxy, the services process, 2
    hosts, 2 REST API replicas, a new PostgreSQL database, a Redis) as our child; it restarts
    a part that dies. :data:`KILLS`: parts killed -9 at even intervals during the load (a host's
    worker with its zygote and runs, as a crash of that machine would; ``host-b``: its worker
    and its daemon)."""

    KILLS = ("server-api-1", "server-services", "host-b", "server-api-2", "server-services", "worker-host-a")

    def __init__(self, home: Path, env: dict[str, str], postgres: str) -> None:
        self.home, self.dir, self.postgres = home, home / "cluster", postgres
        self.env = env
        self.inner = Up(home, env)  # the subprocess, its output and the stop by PID
        self.kills: list[tuple[str, float]] = []  # (what, epoch)
        self.killed_hosts: list[tuple[str, float]] = []  # (host, epoch): whose attempts may be cut short
        self.startup_s = 0.0

    def start(self, timeout_s: float = 300) -> None:
        (self.home / "inbox").mkdir(exist_ok=True)
        (self.home / "inbox-host-b").mkdir(exist_ok=True)
        # --keep: the logs are read after the stop; the database is dropped here then.
        argv = ["cluster", "up", "--dir", str(self.dir), "--postgres", self.postgres,
                "--prefect-port", "0", "--api-port", "0", "--keep"]
        # The triggered task's directory is host-a's: host-b's daemon watches another one.
        for host, d in (("host-a", "inbox"), ("host-b", "inbox-host-b")):
            argv += ["--host-env", f"{host}:BGTASKS_DAEMON_ALLOWED_ROOTS={json.dumps([str(self.home / d)])}"]
        self.inner.start(timeout_s, argv=argv, ready="is up")
        self.startup_s = self.inner.startup_s

    @property
    def proc(self) -> subprocess.Popen[str] | None:
        return self.inner.proc

    def state(self) -> dict[str, Any]:
        return json.loads((self.dir / "cluster.json").read_text())

    def check(self) -> None:
        self.inner.check()

    def groups(self) -> dict[str, list[psutil.Process]]:
        """The parts by kind (server: API replicas and services; worker; daemon; api)."""
        out: dict[str, list[psutil.Process]] = defaultdict(list)
        try:
            parts = self.state()["parts"]
        except (OSError, ValueError):
            return out
        for name, part in parts.items():
            kind = ("server" if name.startswith("server-") else "worker" if name.startswith("worker-")
                    else "daemon" if name.startswith("daemon-") else "api" if name.startswith("api-") else None)
            try:
                if kind and part["pid"]:
                    p = psutil.Process(part["pid"])
                    out[kind].append(p)
                    self.inner.known[p.pid] = p
                    for d in p.children(recursive=True):
                        self.inner.known[d.pid] = d
            except psutil.Error:
                continue
        return out

    def kill(self, what: str) -> None:
        names = [f"worker-{what}", f"daemon-{what}"] if what.startswith("host-") else [what]
        parts = self.state()["parts"]
        victims = []
        for name in names:
            try:
                p = psutil.Process(parts[name]["pid"])
                victims += [p] + (p.children(recursive=True) if name.startswith("worker-") else [])
            except psutil.Error:
                pass
        for p in victims:
            try:
                p.kill()
            except psutil.Error:
                pass
        now = time.time()
        self.kills.append((what, now))
        host = what.removeprefix("worker-")
        if host.startswith("host-"):
            self.killed_hosts.append((host, now))

    def kill_during(self, start: float, end: float, halt: threading.Event) -> threading.Thread:
        """A thread that kills ``KILLS`` one by one at even intervals between ``start`` and ``end``."""
        every = (end - start) / (len(self.KILLS) + 1)

        def run() -> None:
            for i, what in enumerate(self.KILLS, 1):
                if halt.wait(max(0.0, start + i * every - time.time())):
                    return
                self.kill(what)
                print(f"  kill -9 {what} at {(time.time() - start) / 60:.1f} min", flush=True)

        t = threading.Thread(target=run, daemon=True)
        t.start()
        return t

    def settings(self) -> Any:
        """What :func:`read_runs` needs: the Prefect API through HAProxy and its auth string."""
        from types import SimpleNamespace

        from pydantic import SecretStr

        auth = (self.dir / "secrets" / "prefect-auth-string").read_text().strip()
        return SimpleNamespace(api_url=self.state()["prefect"], server=SimpleNamespace(auth_string=SecretStr(auth)))

    def stop(self) -> int | None:
        from bgtasks.cluster import drop_database

        try:
            database = self.state().get("database")
        except (OSError, ValueError):
            database = None
        code = self.inner.stop()
        if database:
            drop_database(database)
        return code

    def note(self) -> str:
        return "`bgtasks cluster up` (2 Prefect API replicas, services, 2 hosts, 2 REST API replicas)"


def rss_of(procs: list[psutil.Process]) -> float:
    total = 0
    for p in procs:
        try:
            total += p.memory_info().rss
        except psutil.Error:
            pass
    return total / 2**20


class Sampler(threading.Thread):
    """RSS of each part every ``every_s`` seconds (MiB), with the time since ``t0``."""

    def __init__(self, up: Up | ClusterUp, every_s: float) -> None:
        super().__init__(daemon=True)
        self.up, self.every_s = up, every_s
        self.t0 = time.time()
        self.samples: list[dict[str, Any]] = []
        self.halt = threading.Event()
        self.dead: set[str] = set()

    def sample(self) -> dict[str, Any]:
        groups = self.up.groups()
        row: dict[str, Any] = {"t": time.time() - self.t0}
        for name in ("server", "worker", "daemon", "api"):
            if not groups.get(name):
                self.dead.add(name)
        row_rss: dict[str, list[psutil.Process]] = defaultdict(list)
        runs: list[psutil.Process] = []
        for name, procs in groups.items():
            for p in procs:
                if name == "worker":  # the worker and its zygote; the forked runs apart
                    zygotes = [k for k in _children(p) if _cmd_has(k, "bgtasks.zygote")]
                    runs += [r for z in zygotes for r in _children(z)]
                    row_rss[name] += [p] + zygotes
                else:
                    try:
                        row_rss[name] += [p] + p.children(recursive=True)
                    except psutil.Error:
                        pass
        for name, procs in row_rss.items():
            row[name] = rss_of(procs)
        if "worker" in groups:
            row["run_children"] = len(runs)
            row["run_children_rss"] = rss_of(runs)
        return row

    def run(self) -> None:
        while not self.halt.is_set():
            self.samples.append(self.sample())
            self.halt.wait(self.every_s)


def _cmd_has(p: psutil.Process, word: str) -> bool:
    try:
        return word in p.cmdline()
    except psutil.Error:
        return False


def _children(p: psutil.Process) -> list[psutil.Process]:
    try:
        return p.children()
    except psutil.Error:
        return []


# ---- the load -------------------------------------------------------------------


@dataclass
class Task:
    kind: str            # periodic, burst, flaky, broken, triggered
    id: str
    record: Path
    interval_s: float = 0.0
    anchor: datetime | None = None


@dataclass
class Ledger:
    """What the bench asked for, as it asked (thread-safe appends)."""

    runs: dict[str, list[tuple[str, float]]] = field(default_factory=lambda: defaultdict(list))  # kind -> (id, t)
    drops: list[tuple[str, float]] = field(default_factory=list)                               # (file name, t)
    api_errors: list[str] = field(default_factory=list)
    refused: Counter[str] = field(default_factory=Counter)  # kind -> run-now requests answered with an error
    unsent: int = 0  # run-now requests still queued in the bench when the load ended (cancelled)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def run_created(self, kind: str, run_id: str) -> None:
        with self.lock:
            self.runs[kind].append((run_id, time.time()))

    def error(self, what: str, kind: str | None = None) -> None:
        """A REST API error; ``kind``: a run-now of that kind was asked for and not made."""
        with self.lock:
            self.api_errors.append(what)
            if kind is not None:
                self.refused[kind] += 1


class Api:
    """bgtasks' REST API with a bearer token."""

    def __init__(self, base: str, token: str) -> None:
        self.http = httpx.Client(base_url=base, headers={"Authorization": f"Bearer {token}"}, timeout=180,
                                 limits=httpx.Limits(max_connections=64))

    def create(self, body: dict[str, Any]) -> str:
        r = self.http.post("/tasks", json=body)
        if r.status_code != 201:
            raise SystemExit(f"creating {body['name']}: {r.status_code} {r.text}")
        return str(r.json()["id"])

    def run_now(self, task: Task, ledger: Ledger) -> None:
        try:
            r = self.http.post(f"/tasks/{task.id}/run")
        except httpx.HTTPError as exc:
            ledger.error(f"run {task.kind}: {type(exc).__name__}: {exc}", task.kind)
            return
        if r.status_code != 202:
            ledger.error(f"run {task.kind}: {r.status_code} {r.text[:200]}", task.kind)
            return
        ledger.run_created(task.kind, r.json()["runId"])


def iso(t: datetime) -> str:
    return t.astimezone(UTC).isoformat().replace("+00:00", "Z")


def create_tasks(api: Api, home: Path, args: Any) -> tuple[list[Task], Path]:
    rec = home / "records"
    rec.mkdir()
    inbox = home / "inbox"
    inbox.mkdir(exist_ok=True)
    tasks: list[Task] = []
    # Periodic anchors a little ahead, so that the first slot is one Prefect can still create.
    anchor = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=20)
    for s in args.periodic:
        name = f"soak-periodic-{s:g}s"
        t = Task("periodic", "", rec / f"{name}.jsonl", interval_s=s, anchor=anchor)
        schedule: dict[str, Any] = {"type": "periodic", "interval": int(s * 1000), "startTime": iso(anchor)}
        if args.catch_up:
            schedule["catchUp"] = args.catch_up
        t.id = api.create({"name": name, "handler": "demo", "schedule": schedule, "data": {"recordTo": str(t.record)}})
        tasks.append(t)
    far = "2099-01-01T00:00:00Z"  # one-time tasks run only when asked (run-now)
    for kind, data, policy in (
        ("burst", {}, None),
        ("flaky", {"failTimes": FLAKY_FAILS, "errorType": "ConnectionError"},
         {"maxRetries": FLAKY_RETRIES, "initialBackoffMs": 1000, "backoffMultiplier": 1, "jitter": 0}),
        ("broken", {"fail": True, "errorMessage": "injected: always fails"},
         {"maxRetries": BROKEN_RETRIES, "initialBackoffMs": 1000, "backoffMultiplier": 1, "jitter": 0}),
    ):
        t = Task(kind, "", rec / f"soak-{kind}.jsonl")
        body: dict[str, Any] = {"name": f"soak-{kind}", "handler": "demo",
                                "schedule": {"type": "one-time", "startTime": far},
                                "data": {**data, "recordTo": str(t.record)}}
        if policy:
            body["retryPolicy"] = policy
        t.id = api.create(body)
        tasks.append(t)
    t = Task("triggered", "", rec / "soak-triggered.jsonl")
    t.id = api.create({"name": "soak-triggered", "handler": "demo", "schedule": {"type": "triggered"},
                       "trigger": {"on": "file.created", "path": str(inbox), "pattern": "*.txt"},
                       "data": {"recordTo": str(t.record)}})
    tasks.append(t)
    return tasks, inbox


def run_load(api: Api, tasks: list[Task], inbox: Path, args: Any, ledger: Ledger, until: float, up: Up | ClusterUp) -> None:
    """Fire the non-periodic load on its cadence until ``until`` (epoch seconds)."""
    by_kind = {t.kind: t for t in tasks}
    start = time.time()
    cadence = [  # (kind, first at, every)
        ("drop", 5.0, args.drop_every),
        ("flaky", 10.0, args.flaky_every),
        ("broken", 20.0, args.broken_every),
        ("burst", 30.0, args.burst_every),
    ]
    due = {kind: start + first for kind, first, _ in cadence}
    pool = ThreadPoolExecutor(max_workers=max(8, args.burst + 4))
    burst_slots = threading.Semaphore(args.burst_concurrency or max(1, args.burst))
    futures = []

    def burst_one() -> None:
        with burst_slots:
            api.run_now(by_kind["burst"], ledger)

    n_drop = 0
    try:
        while True:
            now = time.time()
            if now >= until:
                break
            up.check()
            for kind, _, every in cadence:
                if every <= 0 or now < due[kind]:
                    continue
                due[kind] += every
                if kind == "drop":
                    n_drop += 1
                    name = f"drop-{n_drop:05}.txt"
                    (inbox / name).write_text(f"soak {n_drop}\n")
                    with ledger.lock:
                        ledger.drops.append((name, time.time()))
                elif kind == "burst":
                    futures += [pool.submit(burst_one) for _ in range(args.burst)]
                else:
                    futures.append(pool.submit(api.run_now, by_kind[kind], ledger))
            time.sleep(max(0.05, min(due.values()) - time.time()) if due else 0.5)
    finally:
        # Requests in flight finish; those still queued here (the API fell behind) are not sent.
        pool.shutdown(wait=True, cancel_futures=True)
        ledger.unsent = sum(1 for f in futures if f.cancelled())


# ---- reading back ---------------------------------------------------------------


def read_records(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:
            pass  # a line being written
    return out


def parse_time(s: str | None) -> datetime | None:
    return datetime.fromisoformat(s.replace("Z", "+00:00")) if s else None


def read_runs(settings: Any, deployment_id: str, before: datetime) -> list[dict[str, Any]]:
    """Flow runs of a deployment expected to start before ``before`` (deduplicated by id)."""
    from bench.common import prefect_http

    runs: dict[str, dict[str, Any]] = {}
    offset = 0
    with prefect_http(settings) as http:
        while True:
            body = {"flow_runs": {"deployment_id": {"any_": [deployment_id]},
                                  "expected_start_time": {"before_": iso(before)}},
                    "sort": "EXPECTED_START_TIME_ASC", "limit": 200, "offset": offset}
            for attempt in range(5):
                r = http.post("/flow_runs/filter", json=body)
                if r.status_code == 200:
                    break
                time.sleep(2 + attempt * 3)  # SQLite "database is locked" -> 503: try again
            r.raise_for_status()
            page = r.json()
            for fr in page:
                runs[fr["id"]] = fr
            if len(page) < 200:
                return list(runs.values())
            offset += 200


# ---- counting (pure) ------------------------------------------------------------


@dataclass
class Count:
    expected: int = 0
    completed: int = 0       # ended in the expected state with the expected attempts
    lost: int = 0
    duplicated: int = 0
    wrong_attempts: int = 0  # final in the expected state, but not after the expected attempts
    extra: int = 0           # runs nobody asked for (reported, not counted as lost or duplicated)
    retried_after_kill: int = 0  # ok, with one more attempt per attempt a kill -9 cut short (cluster)
    states: Counter[str] = field(default_factory=Counter)
    lost_ids: list[str] = field(default_factory=list)
    duplicated_ids: list[str] = field(default_factory=list)


def attempts_by_run(records: list[dict[str, Any]]) -> dict[str, list[int]]:
    return {run: [int(r.get("attempt", 0)) for r in recs] for run, recs in records_by_run(records).items()}


KILL_WINDOW_S = 60  # an attempt started this long before its host's kill -9 may have been cut short by it


def cut_short(records: list[dict[str, Any]], killed_hosts: Sequence[tuple[str, float]]) -> int:
    """How many of one run's attempts (but its last) started on a host shortly before a kill -9 of
    that host's worker: each such attempt Crashed and was retried, one attempt more than asked."""
    attempts = sorted(records, key=lambda r: int(r.get("attempt", 0)))[:-1]
    n = 0
    for r in attempts:
        at = parse_time(r.get("at"))
        if at and any(r.get("host") == h and 0 <= t - at.timestamp() <= KILL_WINDOW_S for h, t in killed_hosts):
            n += 1
    return n


def records_by_run(records: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in records:
        out[str(r.get("run"))].append(r)
    return out


def judge(count: Count, run_id: str, run: dict[str, Any] | None, attempts: list[int], want_state: str,
          want_attempts: int, cut: int = 0) -> None:
    """One expected run: completed, lost, duplicated or wrong attempts. ``cut``: attempts a kill
    -9 of their host cut short (each adds one attempt)."""
    state = run["state_type"] if run else "MISSING"
    count.states[state] += 1
    if len(attempts) != len(set(attempts)):
        count.duplicated += 1
        count.duplicated_ids.append(run_id)
    if state != want_state:
        count.lost += 1
        count.lost_ids.append(run_id)
    elif sorted(set(attempts)) == list(range(1, want_attempts + 1)):
        count.completed += 1
    elif cut and sorted(set(attempts)) == list(range(1, want_attempts + cut + 1)):
        count.completed += 1
        count.retried_after_kill += 1
    else:
        count.wrong_attempts += 1
        count.lost_ids.append(run_id)


def count_asked(ids: list[str], runs: list[dict[str, Any]], records: list[dict[str, Any]], want_state: str,
                want_attempts: int, killed_hosts: Sequence[tuple[str, float]] = ()) -> Count:
    """Runs the bench created by run-now."""
    c = Count(expected=len(ids))
    by_id = {r["id"]: r for r in runs}
    att, recs = attempts_by_run(records), records_by_run(records)
    for i in ids:
        judge(c, i, by_id.get(i), att.get(i, []), want_state, want_attempts, cut_short(recs.get(i, []), killed_hosts))
    c.extra = len(set(by_id) - set(ids))
    c.states["(not asked for)"] = c.extra
    return c


def count_periodic(task: Task, runs: list[dict[str, Any]], records: list[dict[str, Any]], cutoff: datetime,
                   killed_hosts: Sequence[tuple[str, float]] = ()) -> tuple[Count, list[tuple[float, float]]]:
    """Every slot up to ``cutoff``: one run, Completed, one attempt. Returns lateness samples
    ``(scheduled time epoch, start - scheduled in s)``."""
    assert task.anchor is not None
    c = Count()
    att, recs = attempts_by_run(records), records_by_run(records)
    slots: dict[int, list[dict[str, Any]]] = defaultdict(list)
    early = stray = 0
    for r in runs:
        exp = parse_time(r["expected_start_time"])
        assert exp is not None
        k = round((exp - task.anchor).total_seconds() / task.interval_s)
        if exp < task.anchor - timedelta(seconds=1):
            early += 1  # before the task's startTime: its first run should be at startTime
        elif abs((exp - task.anchor).total_seconds() - k * task.interval_s) > 1.0:
            stray += 1
        else:
            slots[k].append(r)
    last = int((cutoff - task.anchor).total_seconds() // task.interval_s)
    lateness: list[tuple[float, float]] = []
    for k in range(0, last + 1):
        c.expected += 1
        here = slots.get(k, [])
        if len(here) > 1:
            c.duplicated += 1
            c.duplicated_ids.append(f"slot {k}: " + ", ".join(r["id"] for r in here))
        run = here[0] if here else None
        if run is None:
            c.states["MISSING"] += 1
            c.lost += 1
            c.lost_ids.append(f"slot {k} ({iso(task.anchor + timedelta(seconds=k * task.interval_s))}): no run")
            continue
        judge(c, run["id"], run, att.get(run["id"], []), "COMPLETED", 1, cut_short(recs.get(run["id"], []), killed_hosts))
        start, exp = parse_time(run.get("start_time")), parse_time(run["expected_start_time"])
        if start and exp:
            lateness.append((exp.timestamp(), (start - exp).total_seconds()))
    c.extra = early + stray
    if early:
        c.states["(before startTime)"] = early
    if stray:
        c.states["(off any slot)"] = stray
    return c, lateness


def count_triggered(drops: list[tuple[str, float]], runs: list[dict[str, Any]], records: list[dict[str, Any]],
                    killed_hosts: Sequence[tuple[str, float]] = ()) -> tuple[Count, list[float]]:
    """Every dropped file: exactly one run (its event lists the file), Completed. Returns
    the latencies drop -> run start (s)."""
    c = Count(expected=len(drops))
    by_id = {r["id"]: r for r in runs}
    att, recs = attempts_by_run(records), records_by_run(records)
    runs_of = files_of_runs(runs, records)
    latency: list[float] = []
    for name, t in drops:
        ids = sorted(runs_of.get(name, set()))
        if len(ids) > 1:
            c.duplicated += 1
            c.duplicated_ids.append(f"{name}: {', '.join(ids)}")
        if not ids:
            c.states["NO RUN"] += 1
            c.lost += 1
            c.lost_ids.append(f"{name}: no run")
            continue
        judge(c, ids[0], by_id.get(ids[0]), att.get(ids[0], []), "COMPLETED", 1,
              cut_short(recs.get(ids[0], []), killed_hosts))
        start = parse_time((by_id.get(ids[0]) or {}).get("start_time"))
        if start:
            latency.append(start.timestamp() - t)
    matched = {i for ids in runs_of.values() for i in ids}
    c.extra = len(set(by_id) - matched)
    c.states["(no file of ours)"] = c.extra
    return c, latency


def files_of_runs(runs: list[dict[str, Any]], records: list[dict[str, Any]]) -> dict[str, set[str]]:
    """File name -> the triggered runs whose event lists it: from the runs' ``event`` parameter
    (also runs that never started) and from the handler's records."""
    out: dict[str, set[str]] = defaultdict(set)
    events = [(r["id"], (r.get("parameters") or {}).get("event")) for r in runs]
    events += [(str(rec.get("run")), rec.get("event")) for rec in records]
    for run_id, event in events:
        for p in ((event or {}).get("payload") or {}).get("paths") or []:
            out[Path(p).name].add(run_id)
    return out


def slope_per_hour(points: list[tuple[float, float]]) -> float | None:
    """Least-squares slope of (seconds, MiB) in MiB per hour."""
    if len(points) < 3:
        return None
    n = len(points)
    mx = sum(x for x, _ in points) / n
    my = sum(y for _, y in points) / n
    sxx = sum((x - mx) ** 2 for x, _ in points)
    if sxx == 0:
        return None
    return sum((x - mx) * (y - my) for x, y in points) / sxx * 3600


# ---- logs ------------------------------------------------------------------------

#: The first line of a log record: Prefect's ``HH:MM:SS.mmm | LEVEL | ...`` or uvicorn's ``LEVEL: ...``.
RECORD_START = re.compile(r"^(\d\d:\d\d:\d\d\.\d+ \| *(?P<p>[A-Z]+) *\||(?P<u>[A-Z]+):  )")
#: What the injected failures log by design (besides lines naming their flow runs).
INJECTED = re.compile(r"demo failure on attempt|injected: always fails")


def log_records(text: str) -> list[tuple[str, list[str]]]:
    """(level, lines) per record; lines that start no record (tracebacks) belong to the one before."""
    out: list[tuple[str, list[str]]] = []
    for line in text.splitlines():
        m = RECORD_START.match(line)
        if m:
            out.append((m.group("p") or m.group("u") or "", [line]))
        elif out:
            out[-1][1].append(line)
        else:
            out.append(("", [line]))
    return out


def scan_logs(logs: Path, injected_runs: set[str]) -> dict[str, Any]:
    """Per log: counts of WARNING/ERROR/CRITICAL records, tracebacks, "database is locked";
    records about the injected failures (their flow runs by name, or their messages) counted
    apart; the first distinct other ones as examples (first line ... last line)."""
    names = re.compile("|".join(re.escape(f"'{n}'") for n in sorted(injected_runs))) if injected_runs else None
    out: dict[str, Any] = {}
    for f in sorted(logs.glob("*.log")):
        counts: Counter[str] = Counter()
        examples: list[str] = []
        seen: set[str] = set()
        for level, lines in log_records(f.read_text(errors="replace")):
            text = "\n".join(lines)
            locked = "database is locked" in text
            if level not in ("WARNING", "ERROR", "CRITICAL") and not locked:
                continue
            injected = bool(INJECTED.search(text) or (names and names.search(lines[0])))
            suffix = " (injected failures)" if injected else ""
            counts[level.lower() + suffix] += 1
            if any(ln.startswith("Traceback") for ln in lines):
                counts["with traceback" + suffix] += 1
            if locked:
                counts["database is locked" + suffix] += 1
            if injected:
                continue
            key = re.sub(r"'[a-z]+-[a-z]+'|[0-9a-f]{8}-[0-9a-f-]{27}|\d+", "#", lines[0].split("|", 2)[-1])[:120]
            if key not in seen and len(examples) < 10:
                seen.add(key)
                tail = next((ln for ln in reversed(lines[1:])
                             if ln.strip() and not ln[0].isspace() and not ln.startswith("(Background")), "")
                examples.append(lines[0][:240] + (f"  ...  {tail.strip()[:200]}" if tail else ""))
        out[f.name] = {"counts": dict(counts), "examples": examples}
    return out


# ---- report ----------------------------------------------------------------------


def rss_table(samples: list[dict[str, Any]], load_start: float, load_end: float) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    mid = (load_start + load_end) / 2
    for name in ("server", "worker", "daemon", "api"):
        pts = [(s["t"], s[name]) for s in samples if name in s]
        if not pts:
            continue
        during = [p for p in pts if load_start <= p[0] <= load_end] or pts
        out[name] = {
            "first_mib": round(pts[0][1], 1), "last_mib": round(pts[-1][1], 1),
            "max_mib": round(max(y for _, y in pts), 1),
            "slope_mib_per_h": _round(slope_per_hour(during)),
            "slope_2nd_half_mib_per_h": _round(slope_per_hour([p for p in during if p[0] >= mid])),
            "samples": len(pts),
        }
    return out


def _round(x: float | None, nd: int = 1) -> float | None:
    return None if x is None else round(x, nd)


def percentiles(xs: list[float]) -> dict[str, float | None]:
    if not xs:
        return {"p50": None, "p95": None, "p99": None, "max": None, "n": 0}
    return {"p50": round(pct(xs, 0.50), 3), "p95": round(pct(xs, 0.95), 3), "p99": round(pct(xs, 0.99), 3),
            "max": round(max(xs), 3), "n": len(xs)}


def plot(path: Path, samples: list[dict[str, Any]], lateness: dict[str, list[tuple[float, float]]],
         t0: float, load: tuple[float, float], title: str, kills: Sequence[tuple[str, float]] = ()) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(10, 8), sharex=True)
    for name in ("server", "worker", "daemon", "api"):
        pts = [(s["t"] / 60, s[name]) for s in samples if name in s]
        if pts:
            ax1.plot([x for x, _ in pts], [y for _, y in pts], label=name + (" + zygote" if name == "worker" else ""))
    ax1.set_ylabel("RSS (MiB)")
    ax1.set_ylim(bottom=0)
    ax1.legend(loc="upper left", fontsize="small")
    ax1.set_title(title, fontsize="medium")
    for name, pts in lateness.items():
        ax2.scatter([(x - t0) / 60 for x, _ in pts], [y for _, y in pts], s=6, label=name)
    ax2.set_ylabel("lateness (s): start - scheduled")
    ax2.set_xlabel("minutes since the stack was up")
    ax2.axhline(0, color="grey", linewidth=0.5)
    ax2.legend(loc="upper left", fontsize="small")
    for ax in (ax1, ax2):
        for x in load:
            ax.axvline(x / 60, color="grey", linestyle=":", linewidth=0.8)
        for what, x in kills:  # kill -9 of a part (cluster)
            ax.axvline(x / 60, color="red", linestyle="--", linewidth=0.8)
            if ax is ax1:
                ax.annotate(what, (x / 60, 0), rotation=90, fontsize="x-small", color="red",
                            xytext=(2, 4), textcoords="offset points")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def print_report(rep: dict[str, Any]) -> None:
    print(f"\nSoak: {rep['minutes']:g} min of mixed load on {rep['stack']} ({rep['database']}, "
          f"{rep['cores']} cores, worker limit {rep['worker_limit']}), drain {rep['drain_s']:.0f} s")
    print(f"load: periodic every {', '.join(f'{s:g}' for s in rep['load']['periodic_s'])} s; "
          f"{rep['load']['burst']} run-now every {rep['load']['burst_every_s']:g} s "
          f"({rep['load']['burst_concurrency']} in flight at most); a file every "
          f"{rep['load']['drop_every_s']:g} s; flaky every {rep['load']['flaky_every_s']:g} s; "
          f"broken every {rep['load']['broken_every_s']:g} s")
    print(f"\n{'runs':34} {'expected':>8} {'ok':>6} {'lost':>5} {'dup':>4} {'wrong attempts':>15} {'extra':>6}"
          "  final states")
    for name, c in rep["counts"].items():
        states = ", ".join(f"{k} {v}" for k, v in sorted(c["states"].items()) if v)
        if c["retried_after_kill"]:
            states += f"; retried after a kill {c['retried_after_kill']}"
        print(f"{name:34} {c['expected']:8} {c['completed']:6} {c['lost']:5} {c['duplicated']:4} "
              f"{c['wrong_attempts']:15} {c['extra']:6}  {states}")
    t = rep["totals"]
    print(f"{'total':34} {t['expected']:8} {t['completed']:6} {t['lost']:5} {t['duplicated']:4} "
          f"{t['wrong_attempts']:15} {t['extra']:6}")
    print("ok = ended Completed (broken: Failed) after the expected attempts; lost includes wrong attempts; "
          "extra = runs not asked for (not counted as lost or duplicated)")
    if rep["kills"]:
        print(f"kill -9 (minutes since the stack was up): "
              f"{'; '.join(f'{what} at {t / 60:.1f}' for what, t in rep['kills'])}; a part is started again 2 s "
              f"after it dies; 'retried after a kill' = ok with one attempt more per attempt the kill cut short "
              f"({t['retried_after_kill']} runs)")
    print(f"REST API errors while creating runs: {len(rep['api_errors'])}; run-now requests not sent "
          f"(queued in the bench when the load ended): {rep['unsent']}")
    for e, n in Counter(e[:120] for e in rep["api_errors"]).most_common(5):
        print(f"  {n} x {e}")

    print(f"\n{'latency (s)':44} {'p50':>8} {'p95':>8} {'p99':>8} {'max':>8} {'n':>6}")
    for name, p in rep["latency"].items():
        if p["n"]:
            print(f"{name:44} {p['p50']:8.2f} {p['p95']:8.2f} {p['p99']:8.2f} {p['max']:8.2f} {p['n']:6}")
        else:
            print(f"{name:44} {'-':>8}")

    print(f"\n{'RSS (MiB)':22} {'first':>7} {'last':>7} {'max':>7} {'slope MiB/h':>12} {'2nd half MiB/h':>15}")
    for name, r in rep["rss"].items():
        label = "worker + zygote" if name == "worker" else name
        s1 = "-" if r["slope_mib_per_h"] is None else f"{r['slope_mib_per_h']:+.1f}"
        s2 = "-" if r["slope_2nd_half_mib_per_h"] is None else f"{r['slope_2nd_half_mib_per_h']:+.1f}"
        print(f"{label:22} {r['first_mib']:7.1f} {r['last_mib']:7.1f} {r['max_mib']:7.1f} {s1:>12} {s2:>15}")
    rc = rep["run_children"]
    print(f"run children (forked per run, not in the worker's RSS): at most {rc['max']} alive at a sample, "
          f"at most {rc['max_rss_mib']:.0f} MiB together")
    if rep["dead_parts"]:
        print(f"PARTS THAT DIED DURING THE SOAK: {', '.join(rep['dead_parts'])}")

    print("\nlogs (<home>/logs): warning/error records; '(injected failures)' = about the flaky and broken runs")
    for f, info in rep["logs"].items():
        counts = ", ".join(f"{k} {v}" for k, v in sorted(info["counts"].items())) or "none"
        print(f"  {f}: {counts}")
        for ex in info["examples"][:6]:
            print(f"      {ex}")
    print(f"\nhome (logs, records, database): {rep['home']}")
    print(f"plot: {rep['png']}\nnumbers: {rep['json']}")
    verdict = "OK" if passed(rep) else "FAIL"
    print(f"\n{verdict}: {t['lost']} lost, {t['duplicated']} duplicated of {t['expected']} expected runs, "
          f"{len(rep['api_errors'])} REST API errors")


def passed(rep: dict[str, Any]) -> bool:
    """Nothing lost, nothing duplicated, and the REST API answered every request (an error, a 5xx
    above all, is a failure even when the client could retry it)."""
    t = rep["totals"]
    return not t["lost"] and not t["duplicated"] and not rep["api_errors"]


# ---- main ------------------------------------------------------------------------


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--minutes", type=float, default=30, help="how long the load lasts")
    ap.add_argument("--periodic", type=lambda s: [float(x) for x in s.split(",")], default=[5.0, 7.0, 10.0],
                    help="periodic tasks' intervals in seconds, comma-separated (default 5,7,10)")
    ap.add_argument("--burst", type=int, default=20, help="run-now runs per burst")
    ap.add_argument("--burst-every", type=float, default=60)
    ap.add_argument("--burst-concurrency", type=int, default=0,
                    help="at most this many of a burst's requests in flight at once (default: all)")
    ap.add_argument("--drop-every", type=float, default=20, help="a file into the triggered task's directory")
    ap.add_argument("--flaky-every", type=float, default=30)
    ap.add_argument("--broken-every", type=float, default=120)
    ap.add_argument("--catch-up", default=None, metavar="POLICY",
                    help="the periodic tasks' schedule.catchUp (skip, run-once, run-all); default: the task "
                         "default. Runs a policy drops count as lost (MISSING): the stack fell behind")
    ap.add_argument("--sample-every", type=float, default=10, help="RSS sampling period (s)")
    ap.add_argument("--drain-s", type=float, default=300, help="at most this long for the last runs to end")
    ap.add_argument("--out", type=Path, default=ROOT / "build" / "bench" / "soak.png")
    ap.add_argument("--postgres", metavar="URL", default=None,
                    help="run the server on a fresh PostgreSQL database at this server URL; default SQLite")
    ap.add_argument("--cluster", action="store_true",
                    help="the multi-host layout (bgtasks cluster up, on --postgres or the local PostgreSQL) "
                         "instead of bgtasks up, with a kill -9 of an API replica, the services process and a "
                         "host's worker at even intervals")
    args = ap.parse_args()
    if args.cluster and not args.postgres:
        args.postgres = "postgresql://postgres@127.0.0.1:5432"
    if min(args.periodic) < 1:
        ap.error("--periodic: intervals of at least 1 s")

    # A clean environment: nothing of the caller's bgtasks or Prefect settings.
    for k in [k for k in os.environ if k.startswith("BGTASKS_")]:
        del os.environ[k]
    os.environ["BGTASKS_API_PORT"] = str(free_port())
    from bench.common import BenchHome

    home = BenchHome("soak", None if args.cluster else args.postgres)
    settings = home.settings
    env = {**os.environ, "BGTASKS_DAEMON_ALLOWED_ROOTS": json.dumps([str(home.path)]), "COLUMNS": "200"}
    up: Up | ClusterUp = Up(home.path, env)
    if args.cluster:  # the cluster makes its own database, secrets and Prefect settings
        env = {k: v for k, v in env.items() if not k.startswith("PREFECT_")}
        env.pop("BGTASKS_DAEMON_ALLOWED_ROOTS")
        up = ClusterUp(home.path, env, args.postgres)
    database = "PostgreSQL" if args.cluster else home.database
    sampler = Sampler(up, args.sample_every)
    ledger = Ledger()

    def on_term(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    code: int | None = None
    try:
        print(f"starting {up.note()} in {home.path} ...", flush=True)
        up.start()
        sampler.t0 = time.time()
        sampler.start()
        print(f"up in {up.startup_s:.1f} s; creating the tasks", flush=True)
        prefect: Any = settings  # where the flow runs are read
        if isinstance(up, ClusterUp):
            api = Api(up.state()["api"], (up.dir / "secrets" / "api-token").read_text().strip())
            prefect = up.settings()
            daemon_state = up.dir / "hosts" / "host-a" / "daemon-state.json"
        else:
            tok = subprocess.run([str(BIN / "bgtasks"), "token", "create", "soak", "-o", "json"], env=env,
                                 capture_output=True, text=True, timeout=120)
            if tok.returncode != 0:
                raise SystemExit(f"bgtasks token create: {tok.stderr}")
            api = Api(f"http://{settings.api.host}:{os.environ['BGTASKS_API_PORT']}", json.loads(tok.stdout)["token"])
            daemon_state = home.path / "daemon-state.json"
        tasks, inbox = create_tasks(api, home.path, args)
        from bench.triggers import wait_rules

        wait_rules(daemon_state, [t.id for t in tasks if t.kind == "triggered"])
        load_start = time.time()
        load_end = load_start + args.minutes * 60
        cutoff = datetime.fromtimestamp(load_end, UTC)
        print(f"load for {args.minutes:g} min, until {cutoff:%H:%M:%S} UTC", flush=True)
        if isinstance(up, ClusterUp):
            up.kill_during(load_start, load_end, sampler.halt)
        run_load(api, tasks, inbox, args, ledger, load_end, up)
        load_end = time.time()  # the last run-now requests have returned

        print(f"load over ({sum(len(v) for v in ledger.runs.values())} run-now, {len(ledger.drops)} files, "
              f"{len(ledger.api_errors)} API errors, {ledger.unsent} not sent); draining ...", flush=True)
        drain_start = time.time()

        def collect_all() -> dict[str, tuple[list[dict[str, Any]], list[dict[str, Any]]]]:
            try:
                return collect(prefect, tasks, cutoff)
            except httpx.TransportError:
                time.sleep(2)
                up.check()  # the server is gone because the stack stopped: say so
                raise

        results = collect_all()
        while not drained(results, tasks, ledger) and time.time() - drain_start < args.drain_s:
            time.sleep(10)
            up.check()
            results = collect_all()
        drain_s = time.time() - drain_start
        sampler.halt.set()
        sampler.join(args.sample_every + 30)
    except StackDied as exc:
        sampler.halt.set()
        up.stop()
        home.drop()
        print(f"\nFAIL: {exc}", file=sys.stderr)
        for f, info in scan_logs(home.path / "logs", set()).items():
            print(f"  {f}: {info['counts']}", file=sys.stderr)
            for ex in info["examples"][:6]:
                print(f"      {ex}", file=sys.stderr)
        print(f"home (logs, records, database): {home.path}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\ninterrupted: stopping the stack", file=sys.stderr)
        sampler.halt.set()
        up.stop()
        home.drop()
        return 130
    finally:
        if up.proc is not None and up.proc.poll() is None:
            code = up.stop()
    print(f"stopped (exit {code})", flush=True)
    killed_hosts = up.killed_hosts if isinstance(up, ClusterUp) else []
    logs = up.dir / "logs" if isinstance(up, ClusterUp) else home.path / "logs"

    # ---- counts
    counts: dict[str, dict[str, Any]] = {}
    lateness_pts: dict[str, list[tuple[float, float]]] = {}
    lateness_all: list[float] = []
    latency: dict[str, dict[str, Any]] = {}
    for t in tasks:
        runs, records = results[t.id]
        if t.kind == "periodic":
            c, late = count_periodic(t, runs, records, cutoff, killed_hosts)
            name = f"periodic every {t.interval_s:g} s"
            lateness_pts[name] = late
            lateness_all += [y for _, y in late]
            latency[f"lateness, {name}"] = percentiles([y for _, y in late])
        elif t.kind == "triggered":
            c, lat = count_triggered(ledger.drops, runs, records, killed_hosts)
            name = "triggered (one per file)"
            latency["file dropped -> run started"] = percentiles(lat)
        else:
            ids = [i for i, _ in ledger.runs[t.kind]]
            want_state, want_att, name = {
                "burst": ("COMPLETED", 1, f"run-now bursts ({args.burst} at once)"),
                "flaky": ("COMPLETED", FLAKY_FAILS + 1, f"flaky (Completed on attempt {FLAKY_FAILS + 1})"),
                "broken": ("FAILED", BROKEN_RETRIES + 1, f"broken (Failed after {BROKEN_RETRIES + 1} attempts)"),
            }[t.kind]
            c = count_asked(ids, runs, records, want_state, want_att, killed_hosts)
            # A run-now the API refused was asked for and never made: lost, not "not expected".
            c.expected += ledger.refused[t.kind]
            c.lost += ledger.refused[t.kind]
            if t.kind == "burst":
                by_id = {r["id"]: r for r in runs}
                lat = []
                for i, created in ledger.runs["burst"]:
                    st = parse_time((by_id.get(i) or {}).get("start_time"))
                    if st:
                        lat.append(st.timestamp() - created)
                latency["run-now (burst) API call -> run started"] = percentiles(lat)
        counts[name] = {**{k: v for k, v in c.__dict__.items() if k != "states"}, "states": dict(c.states)}
    injected_runs = {r["name"] for t in tasks if t.kind in ("flaky", "broken") for r in results[t.id][0]}
    latency = {"lateness, all periodic runs": percentiles(lateness_all), **latency}
    totals = {k: sum(c[k] for c in counts.values()) for k in ("expected", "completed", "lost", "duplicated",
                                                              "wrong_attempts", "extra", "retried_after_kill")}
    samples = sampler.samples
    t0 = sampler.t0
    out_png = args.out.resolve()
    out_json = out_png.with_suffix(".json")
    rep: dict[str, Any] = {
        "minutes": args.minutes, "database": database, "stack": up.note(),
        "kills": [(what, round(t - t0, 1)) for what, t in getattr(up, "kills", [])], "cores": os.cpu_count(),
        "worker_limit": settings.worker.limit, "drain_s": drain_s, "startup_s": round(up.startup_s, 1),
        "when": iso(datetime.fromtimestamp(load_start, UTC)),
        "load": {"periodic_s": args.periodic, "burst": args.burst, "burst_every_s": args.burst_every,
                 "drop_every_s": args.drop_every, "flaky_every_s": args.flaky_every,
                 "broken_every_s": args.broken_every, "burst_concurrency": args.burst_concurrency or args.burst,
                 "catch_up": args.catch_up or "(task default)"},
        "counts": counts, "totals": totals, "api_errors": ledger.api_errors, "unsent": ledger.unsent, "latency": latency,
        "rss": rss_table(samples, load_start - t0, load_end - t0),
        "run_children": {"max": max((s.get("run_children", 0) for s in samples), default=0),
                         "max_rss_mib": max((s.get("run_children_rss", 0.0) for s in samples), default=0.0)},
        "dead_parts": sorted(sampler.dead), "logs": scan_logs(logs, injected_runs),
        "home": str(home.path), "png": str(out_png), "json": str(out_json),
        "samples": samples,
        "lateness_points": {k: [(round(x - t0, 2), round(y, 3)) for x, y in v] for k, v in lateness_pts.items()},
    }
    home.drop()
    out_json.parent.mkdir(parents=True, exist_ok=True)
    out_json.write_text(json.dumps(rep, indent=1, default=str))
    print_report(rep)
    plot(out_png, samples, lateness_pts, t0, (load_start - t0, load_end - t0),
         f"bgtasks {'cluster ' if args.cluster else ''}soak: {args.minutes:g} min, {database}, "
         f"{totals['expected']} runs expected, {totals['lost']} lost, {totals['duplicated']} duplicated",
         rep["kills"])
    return 0 if passed(rep) else 1


def collect(settings: Any, tasks: list[Task],
            cutoff: datetime) -> dict[str, tuple[list[dict[str, Any]], list[dict[str, Any]]]]:
    """Per task: its flow runs expected to start by the end of the load (periodic) or soon after
    (the rest), and its handler's records."""
    out = {}
    for t in tasks:
        before = cutoff + timedelta(seconds=t.interval_s / 2) if t.kind == "periodic" else cutoff + timedelta(hours=1)
        out[t.id] = (read_runs(settings, t.id, before), read_records(t.record))
    return out


def drained(results: dict[str, tuple[list[dict[str, Any]], list[dict[str, Any]]]], tasks: list[Task],
            ledger: Ledger) -> bool:
    """Every run read is final, every run asked for exists and every dropped file has a record."""
    for t in tasks:
        runs, records = results[t.id]
        if any(r["state_type"] not in FINAL for r in runs):
            return False
        if t.kind in ("burst", "flaky", "broken"):
            if {i for i, _ in ledger.runs[t.kind]} - {r["id"] for r in runs}:
                return False
        if t.kind == "triggered" and {name for name, _ in ledger.drops} - set(files_of_runs(runs, records)):
            return False
    return True


if __name__ == "__main__":
    sys.exit(main())
