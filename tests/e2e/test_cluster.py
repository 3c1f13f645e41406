"""The multi-host layout under a steady load while its parts die: nothing lost, nothing twice.

``bgtasks cluster up`` (the command users try it with) starts a new PostgreSQL database,
a Redis, two Prefect API replicas behind HAProxy, the services process, two hosts (a
worker and a trigger daemon each, with file triggers of their own directory) and two
REST API replicas; it restarts a part that dies, unless the part is held
(``<dir>/held/<part>``). Under periodic, run-now and file-triggered runs, the test
kills -9:

1. one Prefect API replica (HAProxy routes around it; clients retry);
2. the services process (restarted: the scheduler, the automations and the crashed-runs
   automation carry on; no triggered run lost or made twice);
3. one host: its worker, its daemon and its run, held down (its long run becomes Crashed
   and is retried on the other host; files dropped in its directory meanwhile start nothing,
   the file triggers are that host's), then brought back (its triggers resume).

Then every run is counted: each run-now and each file has exactly one run, every run
Completed, each with one attempt, except the killed one: two attempts, on the two hosts.
A task with ``runOn: eventHost`` runs on the host whose daemon saw the file, always.

Constraints across hosts (each host reads its own power tree): a run that needs charging
waits while no host charges, and runs on the host that does once it is plugged in: released
once, for that host, and never sent back to waiting by the other host's worker.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.power import write_power_tree

pytestmark = pytest.mark.e2e

BGTASKS = str(Path(sys.executable).parent / "bgtasks")
ONCE = {"type": "one-time", "startTime": "2099-01-01T00:00:00Z"}


def _wait(check: Any, timeout_s: float, what: str) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        got = check()
        if got:
            return got
        time.sleep(0.5)
    raise AssertionError(f"timed out after {timeout_s:g}s waiting for {what}")


def _records(path: Path) -> list[dict[str, Any]]:
    try:
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    except FileNotFoundError:
        return []


def _prefect_get(c: Cluster, path: str) -> Any:
    """GET on the Prefect API through HAProxy, with the cluster's auth string."""
    from triggers.prefect_api import auth_headers

    auth = (c.dir / "secrets" / "prefect-auth-string").read_text().strip()
    resp = httpx.get(c.state["prefect"] + path, headers=auth_headers(auth), timeout=60)
    resp.raise_for_status()
    return resp.json()


def _kill_home(home: Path) -> list[int]:
    """kill -9 every process of one host (its BGTASKS_HOME): worker, zygote, runs, daemon,
    as a power cut would."""
    killed = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            env = (entry / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if f"BGTASKS_HOME={home}".encode() in env:
            try:
                os.kill(int(entry.name), signal.SIGKILL)
                killed.append(int(entry.name))
            except ProcessLookupError:
                pass
    return killed


class Cluster:
    """``bgtasks cluster up`` in a subprocess, and its state file."""

    def __init__(self, tmp: Path) -> None:
        self.dir = tmp / "cluster"
        self.inbox = {h: tmp / f"inbox-{h}" for h in ("host-a", "host-b")}
        self.rec = tmp / "rec"
        self.power = {h: tmp / f"power-{h}" for h in ("host-a", "host-b")}  # each host's battery and charger
        for d in (*self.inbox.values(), self.rec):
            d.mkdir()
        for tree in self.power.values():
            write_power_tree(tree, percent=40, plugged=False)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("BGTASKS_", "PREFECT_"))}
        env.update({
            "BGTASKS_HOME": str(tmp / "home"),
            "BGTASKS_TASK_FILE_ROOTS": json.dumps([str(self.rec)]),
            "BGTASKS_WORKER_CRASH_AFTER_S": "45",  # Prefect's heartbeat is at least 30 s
            "BGTASKS_DAEMON_RULES_REFRESH_S": "1",
            "BGTASKS_DAEMON_SENSORS": '["file"]',
        })
        argv = [BGTASKS, "cluster", "up", "--dir", str(self.dir), "--prefect-port", "0", "--api-port", "0"]
        for host, inbox in self.inbox.items():  # each host's daemon watches its own directory only
            argv += ["--host-env", f"{host}:BGTASKS_DAEMON_ALLOWED_ROOTS={json.dumps([str(inbox)])}",
                     "--host-env", f"{host}:BGTASKS_DAEMON_POWER_ROOT={self.power[host]}",
                     "--host-env", f"{host}:BGTASKS_DAEMON_SENSORS={json.dumps(['file', 'power'])}",
                     "--host-env", f"{host}:BGTASKS_DAEMON_POWER_POLL_S=0.2"]
        self.log = tmp / "cluster-up.log"
        self.proc = subprocess.Popen(argv, env=env, stdout=self.log.open("wb"), stderr=subprocess.STDOUT,
                                     start_new_session=True)
        _wait(lambda: "is up" in self.log.read_text() or self.proc.poll() is not None, 300, "the cluster")
        assert self.proc.poll() is None, self.log.read_text()[-3000:]
        self.state = self.read_state()
        token = (self.dir / "secrets" / "api-token").read_text().strip()
        self.api = httpx.Client(base_url=self.state["api"], headers={"Authorization": f"Bearer {token}"},
                                timeout=60)

    def read_state(self) -> dict[str, Any]:
        return json.loads((self.dir / "cluster.json").read_text())

    def pid(self, part: str) -> int:
        return int(self.read_state()["parts"][part]["pid"])

    def kill(self, part: str) -> None:
        os.kill(self.pid(part), signal.SIGKILL)

    def restarted(self, part: str, times: int) -> bool:
        return self.read_state()["parts"][part]["restarts"] >= times

    def hold(self, part: str, held: bool) -> None:
        marker = self.dir / "held" / part
        marker.touch() if held else marker.unlink()

    def watching(self, host: str, task_id: str) -> bool:
        """The host's daemon (its current process) watches the task's directory."""
        try:
            state = json.loads((self.dir / "hosts" / host / "daemon-state.json").read_text())["_daemon"]
        except (OSError, ValueError, KeyError):
            return False
        return state["pid"] == self.pid(f"daemon-{host}") and task_id in json.dumps(state["rules"])

    def stop(self) -> None:
        self.api.close()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(180)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Any:
    c = Cluster(tmp_path_factory.mktemp("cluster"))
    try:
        yield c
    finally:
        c.stop()
    assert c.proc.returncode == 0, c.log.read_text()[-3000:]
    assert "dropped" in c.log.read_text()  # the database goes with the cluster


class Load(threading.Thread):
    """Run-now every 2 s and a file every 3 s, alternately in each host's directory."""

    def __init__(self, c: Cluster, now_task: str) -> None:
        super().__init__(daemon=True)
        self.c, self.now_task = c, now_task
        self.run_ids: list[str] = []
        self.files: dict[str, list[str]] = {"host-a": [], "host-b": []}
        self.unwatched: list[str] = []  # dropped while their host was down
        self.down: str | None = None
        self.errors: list[str] = []
        self.stop_event = threading.Event()

    def run(self) -> None:
        i = 0
        while not self.stop_event.wait(1.0):
            i += 1
            if i % 2 == 0:
                resp = self.c.api.post(f"/tasks/{self.now_task}/run")
                if resp.status_code == 202:
                    self.run_ids.append(resp.json()["runId"])
                else:
                    self.errors.append(f"run-now {resp.status_code} {resp.text[:200]}")
            if i % 3 == 0:
                host = ("host-a", "host-b")[(i // 3) % 2]
                name = f"f{i}.txt"
                (self.c.inbox[host] / name).write_text(name)
                (self.unwatched if host == self.down else self.files[host]).append(name)


def _runs_of(c: Cluster, task_id: str) -> list[dict[str, Any]]:
    return c.api.get(f"/tasks/{task_id}/history", params={"limit": 200}).json()


def test_a_constrained_run_waits_for_a_host_where_its_constraints_hold(cluster: Cluster) -> None:
    c = cluster
    resp = c.api.post("/tasks", json={"name": "needs-charging", "handler": "demo", "schedule": ONCE,
                                      "constraints": {"requiresCharging": True},
                                      "data": {"recordTo": str(c.rec / "charging")}})
    assert resp.status_code == 201, resp.text
    task_id = resp.json()["id"]
    runs = []
    for _ in range(4):
        r = c.api.post(f"/tasks/{task_id}/run")
        assert r.status_code == 202, r.text
        runs.append(r.json()["runId"])

    # Neither host charges: every run waits, saying on which host its constraint failed.
    def waiting() -> list[dict[str, Any]] | None:
        got = c.api.get(f"/tasks/{task_id}").json().get("waiting") or []
        return got if {w["runId"] for w in got} == set(runs) else None

    for w in _wait(waiting, 120, "the four runs to wait"):
        assert "on host-a" in w["reason"] or "on host-b" in w["reason"], w
    assert _records(c.rec / "charging") == []

    # host-b is plugged in: its daemon releases them for host-b, where they run; host-a's
    # worker, on battery, leaves them to host-b instead of making them wait again.
    write_power_tree(c.power["host-b"], percent=40, plugged=True)
    done = _wait(lambda: len(got := _records(c.rec / "charging")) >= 4 and got, 180, "the runs on host-b")
    assert sorted(r["run"] for r in done) == sorted(runs) and {r["host"] for r in done} == {"host-b"}, done
    assert {r["attempt"] for r in done} == {1}
    for run_id in runs:  # released once, for host-b, and never made to wait again
        states = sorted(_prefect_get(c, f"/flow_run_states/?flow_run_id={run_id}"), key=lambda st: st["timestamp"])
        releases = [i for i, st in enumerate(states) if (st["message"] or "").startswith("Constraints hold on")]
        assert len(releases) == 1 and "host-b" in states[releases[0]]["message"], states
        assert "AwaitingConstraints" not in [st["name"] for st in states[releases[0]:]], states
    write_power_tree(c.power["host-b"], percent=40, plugged=False)


def test_nothing_is_lost_or_run_twice_when_parts_of_the_cluster_die(cluster: Cluster) -> None:
    c = cluster
    rec = c.rec

    def create(body: dict[str, Any]) -> str:
        resp = c.api.post("/tasks", json=body)
        assert resp.status_code == 201, resp.text
        return str(resp.json()["id"])

    demo = {"handler": "demo", "retryPolicy": {"maxRetries": 2, "initialBackoffMs": 1000, "jitter": 0}}
    periodic = create({**demo, "name": "every-5s", "schedule": {"type": "periodic", "interval": 5000},
                       "data": {"recordTo": str(rec / "periodic")}})
    now = create({**demo, "name": "run-now", "schedule": ONCE, "data": {"recordTo": str(rec / "now")}})
    files = {host: create({**demo, "name": f"files-{host}", "schedule": {"type": "triggered"},
                           "trigger": {"on": "file.created", "path": str(c.inbox[host]), "pattern": "*.txt",
                                       "debounceMs": 0, "runOn": "eventHost" if host == "host-a" else "any"},
                           "data": {"recordTo": str(rec / f"files-{host}")}})
             for host in ("host-a", "host-b")}
    long = create({**demo, "name": "long", "schedule": ONCE,
                   "data": {"recordTo": str(rec / "long"), "sleepSeconds": 600, "sleepRuns": 1}})
    for host, task_id in files.items():
        _wait(lambda: c.watching(host, task_id), 60, f"{host}'s daemon to watch its directory")

    load = Load(c, now)
    load.start()
    try:
        _wait(lambda: len(_records(rec / "now")) >= 3 and _records(rec / "files-host-a"), 120, "the first runs")

        # 1. An API replica dies: HAProxy routes around it; the supervisor restarts it.
        c.kill("server-api-1")
        _wait(lambda: c.restarted("server-api-1", 1), 60, "server-api-1 to be restarted")
        seen = len(_records(rec / "now"))
        _wait(lambda: len(_records(rec / "now")) >= seen + 3, 120, "runs after the replica's death")

        # 2. The services process dies and is restarted.
        c.kill("server-services")
        _wait(lambda: c.restarted("server-services", 1), 60, "server-services to be restarted")
        seen_a, seen_p = len(_records(rec / "files-host-a")), len(_records(rec / "periodic"))
        _wait(lambda: len(_records(rec / "files-host-a")) > seen_a and len(_records(rec / "periodic")) > seen_p,
              120, "triggered and periodic runs after the services' restart")

        # 3. A host dies with its long run; held down until the run is retried elsewhere.
        assert c.api.post(f"/tasks/{long}/run").status_code == 202
        [first] = _wait(lambda: _records(rec / "long"), 120, "the long run to start")
        victim = first["host"]
        other = "host-b" if victim == "host-a" else "host-a"
        for part in (f"worker-{victim}", f"daemon-{victim}"):
            c.hold(part, True)
        load.down = victim
        assert _kill_home(c.dir / "hosts" / victim)
        retried = _wait(lambda: len(_records(rec / "long")) >= 2 and _records(rec / "long"), 240,
                        "the long run to be Crashed and retried")
        assert [r["host"] for r in retried] == [victim, other], retried
        for part in (f"worker-{victim}", f"daemon-{victim}"):
            c.hold(part, False)
        _wait(lambda: c.restarted(f"daemon-{victim}", 1) and c.watching(victim, files[victim]), 120,
              f"{victim} to come back")
        load.down = None
        seen = len(_records(rec / f"files-{victim}"))
        _wait(lambda: len(_records(rec / f"files-{victim}")) > seen, 120, f"{victim}'s file triggers to resume")
    finally:
        load.stop_event.set()
        load.join()

    # Every run the load asked for ends; then count them all.
    def settled() -> bool:
        done = {r["id"] for r in _runs_of(c, now) if r["state"] == "Completed"}
        seen = {h: {p.rsplit("/", 1)[-1] for r in _records(rec / f"files-{h}") for p in r["event"]["payload"]["paths"]}
                for h in files}
        return (done >= set(load.run_ids) and all(seen[h] >= set(load.files[h]) for h in files)
                and _runs_of(c, long)[0]["state"] == "Completed")

    _wait(settled, 300, "every run to end")
    assert load.errors == [], load.errors
    # Run-now: one run per request, each Completed once with one attempt.
    now_runs = {r["id"]: r for r in _runs_of(c, now)}
    assert sorted(now_runs) == sorted(load.run_ids)
    assert {r["state"] for r in now_runs.values()} == {"Completed"}
    attempts = Counter(r["run"] for r in _records(rec / "now"))
    assert sorted(attempts) == sorted(load.run_ids) and set(attempts.values()) == {1}, attempts
    # Files: one run per file its host's daemon saw, none for those dropped while it was down.
    for host, task_id in files.items():
        got = _records(rec / f"files-{host}")
        seen_files = Counter(p.rsplit("/", 1)[-1] for r in got for p in r["event"]["payload"]["paths"])
        assert sorted(seen_files) == sorted(load.files[host]) and set(seen_files.values()) == {1}, (
            host, seen_files, load.files[host])
        assert not set(seen_files) & set(load.unwatched)
        runs = _runs_of(c, task_id)
        assert len(runs) == len(got) and {r["state"] for r in runs} == {"Completed"}, runs
        if host == "host-a":  # runOn eventHost: always where the file was seen
            assert {r["host"] for r in got} == {"host-a"}, got
    # Periodic: each run once.
    periodic_attempts = Counter(r["run"] for r in _records(rec / "periodic"))
    assert periodic_attempts and set(periodic_attempts.values()) == {1}, periodic_attempts
    # The killed run: Crashed by the automation, retried once (the same flow run), Completed.
    [long_run] = _runs_of(c, long)
    assert long_run["state"] == "Completed", long_run
    assert [r["run"] for r in _records(rec / "long")] == [long_run["id"]] * 2
