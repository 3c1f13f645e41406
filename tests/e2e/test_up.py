"""The whole stack from `bgtasks up`: healthy UI, a task that runs, a clean stop on Ctrl-C."""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import psutil
import pytest

from tests.conftest import free_port

pytestmark = pytest.mark.e2e

BIN = Path(sys.executable).parent


def _lines(proc: subprocess.Popen[str]) -> queue.Queue[str]:
    q: queue.Queue[str] = queue.Queue()

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            q.put(line)
        q.put("")

    threading.Thread(target=pump, daemon=True).start()
    return q


def _wait_line(q: queue.Queue[str], needle: str, timeout_s: float) -> list[str]:
    seen: list[str] = []
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            line = q.get(timeout=max(0.1, deadline - time.monotonic()))
        except queue.Empty:
            break
        if line == "":
            raise AssertionError(f"bgtasks up exited: {''.join(seen)}")
        seen.append(line)
        if needle in line:
            return seen
    raise AssertionError(f"no {needle!r} within {timeout_s}s: {''.join(seen)}")


def test_bgtasks_up_serves_the_ui_runs_a_task_and_stops_cleanly(tmp_path: Path) -> None:
    port, api_port = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "BGTASKS_"))}
    env.update({"BGTASKS_HOME": str(tmp_path / "home"), "BGTASKS_SERVER_PORT": str(port),
                "BGTASKS_API_PORT": str(api_port), "COLUMNS": "200"})
    up = subprocess.Popen([str(BIN / "bgtasks"), "up"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    children: list[psutil.Process] = []
    try:
        out = _wait_line(_lines(up), "Press Ctrl-C to stop", 240)
        assert any(f"http://127.0.0.1:{port}" in line for line in out)
        children = psutil.Process(up.pid).children(recursive=True)
        assert len(children) >= 3  # server, worker (and its zygote), REST API

        ui = httpx.get(f"http://127.0.0.1:{port}/", timeout=30)
        assert ui.status_code == 200 and "<html" in ui.text.lower()
        settings = httpx.get(f"http://127.0.0.1:{port}/ui-settings", timeout=30).json()
        assert settings["api_url"] == f"http://127.0.0.1:{port}/api"  # the UI calls our port, not 4200
        assert httpx.get(f"http://127.0.0.1:{port}/api/health", timeout=30).json() is True

        def cli(*args: str) -> str:
            p = subprocess.run([str(BIN / "bgtasks"), *args], env=env, capture_output=True, text=True, timeout=300)
            assert p.returncode == 0, p.stderr
            return p.stdout

        task = json.loads(cli("task", "create", "e2e-demo", "--handler", "demo", "--every", "1h",
                              "--start", "2099-01-01T00:00:00Z", "-o", "json"))
        ran = json.loads(cli("task", "run", task["id"], "--wait", "-o", "json"))
        assert ran["result"]["success"]
        token = json.loads(cli("token", "create", "e2e", "--scope", "tasks:read", "-o", "json"))["token"]
        assert httpx.get(f"http://127.0.0.1:{api_port}/tasks/{task['id']}", timeout=30).status_code == 401
        via_api = httpx.get(f"http://127.0.0.1:{api_port}/tasks/{task['id']}", timeout=30,
                            headers={"Authorization": f"Bearer {token}"}).json()
        assert via_api["status"] == "completed" and via_api["result"]["success"]
    finally:
        up.send_signal(signal.SIGINT)  # what Ctrl-C sends
        try:
            code = up.wait(timeout=90)
        except subprocess.TimeoutExpired:
            up.kill()
            for c in children:
                if c.is_running():
                    c.kill()
            raise
    assert code == 0
    gone, alive = psutil.wait_procs(children, timeout=30)
    assert not alive, alive
