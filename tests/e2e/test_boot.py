"""Restore on boot, from the service files themselves: the systemd units that
``bgtasks service install --user`` writes are run by a small runner that reads, of
each unit, only Environment=, EnvironmentFile= (the 0600 file of secrets),
WorkingDirectory=, UMask=, ExecStartPre/ExecStart/ExecStartPost (in the units'
After= order) and, to stop them in reverse, KillSignal= and TimeoutStopSec=; then
they are stopped and started again as a reboot would. What it does not prove:
systemd itself does not run here (no PID 1 systemd in the sandbox), so Type=,
Restart=, Wants=/PartOf=, User= and the sandbox options (ProtectSystem=, ...) are
not exercised; ``systemd-analyze verify`` and ``security`` check their syntax and
rating (tests/integration/test_service_files.py, tests/security/).

After the "reboot": paused tasks stay paused, a run waiting for its constraints
keeps waiting, a periodic task's missed runs follow its catch-up policy, and the
daemon re-learns its rules (a file dropped after the reboot starts its task).
"""

from __future__ import annotations

import getpass
import json
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from bgtasks import service
from bgtasks.settings import Settings
from tests.conftest import free_port
from tests.e2e.up import poll
from tests.fixtures import records
from tests.power import write_power_tree

pytestmark = pytest.mark.e2e

BIN = Path(sys.executable).parent


class Unit:
    """One generated systemd unit, run as systemd would run it (the parts this test needs)."""

    def __init__(self, name: str, text: str, log: Path) -> None:
        self.name, self.log = name, log
        self.env: dict[str, str] = {}
        self.pre: list[list[str]] = []
        self.post: list[list[str]] = []
        self.start_argv: list[str] = []
        self.cwd = "/"
        self.umask = 0o022
        self.kill_signal, self.stop_timeout = signal.SIGTERM, 30.0
        for line in text.splitlines():
            key, _, value = line.partition("=")
            if key == "Environment":
                k, _, v = shlex.split(value)[0].partition("=")
                self.env[k] = v.replace("%%", "%")
            elif key == "EnvironmentFile":
                for assignment in Path(value.replace("%%", "%")).read_text().splitlines():
                    if "=" in assignment and not assignment.startswith("#"):
                        k, _, v = assignment.partition("=")
                        self.env[k] = shlex.split(v)[0]
            elif key == "UMask":
                self.umask = int(value, 8)
            elif key == "ExecStartPre":
                self.pre.append(shlex.split(value))
            elif key == "ExecStart":
                self.start_argv = shlex.split(value)
            elif key == "ExecStartPost":
                self.post.append(shlex.split(value))
            elif key == "WorkingDirectory":
                self.cwd = value
            elif key == "KillSignal":
                self.kill_signal = signal.Signals[value]
            elif key == "TimeoutStopSec":
                self.stop_timeout = float(value)
        self.proc: subprocess.Popen[bytes] | None = None

    def _run(self, argv: list[str]) -> None:
        subprocess.run(argv, env=self.env, cwd=self.cwd, check=True, timeout=300, umask=self.umask,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def start(self) -> None:
        for argv in self.pre:
            self._run(argv)
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(self.start_argv, env=self.env, cwd=self.cwd, stdin=subprocess.DEVNULL,
                                         stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                                         umask=self.umask)
        for argv in self.post:
            self._run(argv)

    def stop(self) -> None:
        """KillMode=mixed: the signal to the main process, SIGKILL to the group after the timeout."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(self.kill_signal)
        try:
            self.proc.wait(timeout=self.stop_timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)  # what is left of its group (systemd's cgroup)
        except ProcessLookupError:
            pass


class Machine:
    """The units of one install, in start order; ``boot()`` and ``shutdown()``."""

    def __init__(self, plan: Any, logs: Path) -> None:
        logs.mkdir(parents=True, exist_ok=True)
        for d in plan.dirs:  # as `bgtasks service install` makes them
            Path(d).mkdir(parents=True, exist_ok=True)
        for f in plan.files:  # the environment file of secrets; units are read from the plan
            if not f.path.endswith((".service", ".target")):
                Path(f.path).write_bytes(f.content)
                os.chmod(f.path, f.mode)
        by_name = {Path(f.path).name: f.text() for f in plan.files}
        self.units = [Unit(u, by_name[u], logs / f"{u}.log") for u in plan.units]

    def boot(self) -> None:
        for unit in self.units:
            unit.start()

    def shutdown(self) -> None:
        for unit in reversed(self.units):  # After= order reversed: API, daemon, worker, server
            unit.stop()

    def cli(self, *args: str) -> Any:
        env = self.units[0].env
        p = subprocess.run([str(BIN / "bgtasks"), *args, "-o", "json"], env=env, capture_output=True, text=True,
                           timeout=300)
        assert p.returncode == 0, p.stderr
        return json.loads(p.stdout)


def _healthy(url: str) -> bool:
    try:
        return httpx.get(url, timeout=5).status_code == 200
    except httpx.HTTPError:
        return False


def _wait(what: str, check: Any, timeout_s: float = 240) -> Any:
    return poll(what, check, timeout_s)


def test_the_installed_services_restore_everything_after_a_reboot(tmp_path: Path, monkeypatch: Any) -> None:
    home, power, inbox = tmp_path / "home", tmp_path / "power", tmp_path / "inbox"
    write_power_tree(power, percent=70, plugged=False)
    inbox.mkdir()
    port, api_port = free_port(), free_port()
    installing_shell = {
        "BGTASKS_HOME": str(home), "BGTASKS_SERVER_PORT": str(port), "BGTASKS_API_PORT": str(api_port),
        "BGTASKS_WORKER_MISFIRE_GRACE_S": "2", "BGTASKS_DAEMON_POWER_ROOT": str(power),
        "BGTASKS_DAEMON_ALLOWED_ROOTS": json.dumps([str(tmp_path)]),
        "BGTASKS_TASK_FILE_ROOTS": json.dumps([str(tmp_path)]),
    }
    for k, v in installing_shell.items():
        monkeypatch.setenv(k, v)
    target = service.Target(flavour="linux", scope="user", python=sys.executable, user=getpass.getuser(),
                            user_home=str(tmp_path), hostname="boot-test")
    settings = Settings()
    settings.ensure_auth_string()  # as `bgtasks service install` does before writing the units
    plan = service.plan(settings, target, installing_shell)
    machine = Machine(plan, tmp_path / "journal")
    rec_periodic, rec_file = tmp_path / "periodic.jsonl", tmp_path / "file.jsonl"
    try:
        machine.boot()
        _wait("the REST API (Type=exec: started is not ready)", lambda: _healthy(f"http://127.0.0.1:{api_port}/health"))
        every = machine.cli("task", "create", "every-5s", "--handler", "demo", "--every", "5s", "--catch-up",
                            "run-once", "--data", json.dumps({"recordTo": str(rec_periodic)}))
        paused = machine.cli("task", "create", "paused", "--handler", "demo", "--cron", "0 * * * *")
        machine.cli("task", "pause", paused["id"])
        waiting = machine.cli("task", "create", "needs-charger", "--handler", "demo", "--requires-charging",
                              "--priority", "high")
        on_file = machine.cli("task", "create", "on-file", "--handler", "demo", "--on", "file.arrived",
                              "--path", str(inbox), "--data", json.dumps({"recordTo": str(rec_file)}))
        _wait("a first periodic run", lambda: records(rec_periodic))
        before = _wait("the run waiting for a charger", lambda: machine.cli("task", "show", waiting["id"]).get("waiting"))
        machine.shutdown()
        time.sleep(20)  # powered off: runs fall due meanwhile (time passing, not synchronisation)
        machine.boot()

        assert machine.cli("task", "show", paused["id"])["paused"] is True
        after = machine.cli("task", "show", waiting["id"]).get("waiting")
        assert after and [w["runId"] for w in after] == [w["runId"] for w in before]
        worker_log = (tmp_path / "journal" / "bgtasks-worker.service.log")
        _wait("the catch-up of the periodic task's missed runs",
              lambda: f"Missed runs of task {every['id']}: catch-up run-once" in worker_log.read_text())
        n = len(records(rec_periodic))
        _wait("the periodic task to run again", lambda: len(records(rec_periodic)) > n)
        assert {t["id"] for t in machine.cli("task", "ls")} >= {every["id"], paused["id"], waiting["id"], on_file["id"]}
        (inbox / "after-reboot.txt").write_text("hi")  # the daemon re-learnt its file rule
        got = _wait("the file trigger to run its task", lambda: records(rec_file))
        assert "after-reboot.txt" in json.dumps(got[0]["event"])
    finally:
        machine.shutdown()
    for unit in machine.units:
        assert unit.proc is not None and unit.proc.poll() is not None, unit.name
