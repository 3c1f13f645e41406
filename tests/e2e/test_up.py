"""The whole stack from `bgtasks up`: healthy UI, a task that runs, a clean stop on Ctrl-C."""

from __future__ import annotations

from pathlib import Path

import httpx
import psutil
import pytest

from tests.e2e.up import Up, poll

pytestmark = pytest.mark.e2e


def test_bgtasks_up_serves_the_ui_runs_a_task_and_stops_cleanly(tmp_path: Path) -> None:
    """Started as the README's simulated-phones walk-through starts it (`--push emulator`), which
    it then follows step by step."""
    up = Up(tmp_path / "home")
    port, api_port = up.port, up.api_port
    try:
        up.start("--push", "emulator")
        assert any(f"http://127.0.0.1:{port}" in line for line in up.output)
        assert len(up.children) >= 4  # server, worker and its zygote, trigger daemon
        # The REST API is served by `bgtasks up` itself (one process fewer at rest).
        listening = {c.laddr.port for c in psutil.Process(up.proc.pid).net_connections("tcp")  # type: ignore[union-attr]
                     if c.status == psutil.CONN_LISTEN}
        assert api_port in listening and port not in listening

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
        _readme_walk_through(up)
    finally:
        code = up.stop()
    assert code == 0
    gone, alive = psutil.wait_procs(up.children, timeout=30)
    assert not alive, alive


def _readme_walk_through(up: Up) -> None:
    """README, "Try it with simulated phones": the same commands, in order."""
    phones = up.cli_json("device", "simulate", "--platform", "android", "--count", "2", "--label", "demo")
    assert [p["id"] for p in phones] == ["sim-android-1", "sim-android-2"]
    up.cli("device", "set", "sim-android-1", "--charging")
    task = up.cli_json("task", "create", "photos", "--handler", "sync", "--device-label", "demo",
                       "--requires-charging", "--timeout", "10m")
    waiting = poll("sim-android-2 to wait for its charger",
                   lambda: p if (p := up.cli_json("device", "phones", "sim-android-2"))["work"] else None, 120)
    assert waiting["work"][0]["waitingFor"] == "requiresCharging"
    assert "requiresCharging" in up.cli("device", "phones")
    up.cli("device", "set", "sim-android-2", "--charging")
    done = poll("the run to complete",
                lambda: t if (t := up.cli_json("task", "show", "photos")).get("result") else None, 180)
    assert done["id"] == task["id"] and done["status"] == "completed", done
    assert done["result"]["data"]["reported"] == ["sim-android-1", "sim-android-2"], done["result"]
