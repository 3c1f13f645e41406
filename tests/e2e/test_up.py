"""The whole stack from `bgtasks up`: healthy UI, a task that runs, a clean stop on Ctrl-C."""

from __future__ import annotations

from pathlib import Path

import httpx
import psutil
import pytest

from tests.e2e.up import Up

pytestmark = pytest.mark.e2e


def test_bgtasks_up_serves_the_ui_runs_a_task_and_stops_cleanly(tmp_path: Path) -> None:
    up = Up(tmp_path / "home")
    port, api_port = up.port, up.api_port
    try:
        up.start()
        assert any(f"http://127.0.0.1:{port}" in line for line in up.output)
        assert len(up.children) >= 3  # server, worker (and its zygote), REST API

        ui = httpx.get(f"http://127.0.0.1:{port}/", timeout=30)
        assert ui.status_code == 200 and "<html" in ui.text.lower()
        settings = httpx.get(f"http://127.0.0.1:{port}/ui-settings", timeout=30).json()
        assert settings["api_url"] == f"http://127.0.0.1:{port}/api"  # the UI calls our port, not 4200
        assert httpx.get(f"http://127.0.0.1:{port}/api/health", timeout=30).json() is True

        task = up.cli_json("task", "create", "e2e-demo", "--handler", "demo", "--every", "1h",
                           "--start", "2099-01-01T00:00:00Z")
        ran = up.cli_json("task", "run", task["id"], "--wait")
        assert ran["result"]["success"]
        token = up.cli_json("token", "create", "e2e", "--scope", "tasks:read")["token"]
        assert httpx.get(f"http://127.0.0.1:{api_port}/tasks/{task['id']}", timeout=30).status_code == 401
        via_api = httpx.get(f"http://127.0.0.1:{api_port}/tasks/{task['id']}", timeout=30,
                            headers={"Authorization": f"Bearer {token}"}).json()
        assert via_api["status"] == "completed" and via_api["result"]["success"]
    finally:
        code = up.stop()
    assert code == 0
    gone, alive = psutil.wait_procs(up.children, timeout=30)
    assert not alive, alive
