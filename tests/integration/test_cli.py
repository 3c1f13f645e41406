"""The CLI end to end: `bgtasks task create ... -o json`, then ls, show, run, pause, resume, cancel, rm."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("worker")]

BGTASKS = str(Path(os.sys.executable).parent / "bgtasks")


def cli(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "200"}
    proc = subprocess.run([BGTASKS, *args], capture_output=True, text=True, timeout=300, env=env)
    if check:
        assert proc.returncode == 0, proc.stderr + proc.stdout
    return proc


def test_cli_create_ls_show_run_pause_resume_cancel_rm(prefect_server: Any) -> None:
    created = json.loads(cli(
        "task", "create", "cli-task", "--handler", "demo", "--every", "1h", "--start", "2099-01-01T00:00:00Z",
        "--priority", "high", "--retries", "2", "--backoff", "500ms", "--max-backoff", "2s", "--timeout", "30s",
        "--requires-network", "--data", '{"message": "from the CLI"}', "-o", "json",
    ).stdout)
    tid = created["id"]
    assert created["type"] == "periodic" and created["priority"] == "high"
    assert created["schedule"]["interval"] == 3_600_000
    assert created["retryPolicy"]["maxRetries"] == 2 and created["retryPolicy"]["initialBackoffMs"] == 500
    assert created["constraints"] == {"requiresNetwork": True} and created["timeoutMs"] == 30_000

    listed = json.loads(cli("task", "ls", "--priority", "high", "-o", "json").stdout)
    assert tid in [t["id"] for t in listed]
    assert tid not in [t["id"] for t in json.loads(cli("task", "ls", "--type", "one-time", "-o", "json").stdout)]
    table = cli("task", "ls").stdout
    assert "cli-task" in table

    ran = json.loads(cli("task", "run", "cli-task", "--wait", "-o", "json").stdout)
    assert ran["result"]["success"] and ran["result"]["data"]["message"] == "from the CLI"

    shown = json.loads(cli("task", "show", tid, "-o", "json").stdout)
    assert shown["status"] == "completed" and shown["history"][0]["id"] == ran["runId"]
    assert "cli-task" in cli("task", "show", "cli-task").stdout

    assert json.loads(cli("task", "pause", tid, "-o", "json").stdout)["paused"] is True
    refused = cli("task", "run", tid, check=False)
    assert refused.returncode == 1 and "paused" in refused.stderr
    assert json.loads(cli("task", "resume", tid, "-o", "json").stdout)["paused"] is False

    assert json.loads(cli("task", "cancel", tid, "-o", "json").stdout)["status"] == "cancelled"
    cli("task", "rm", tid, "--yes")
    gone = cli("task", "show", tid, check=False)
    assert gone.returncode == 1 and "no task" in gone.stderr


def test_cli_bad_input_is_one_red_line_and_exit_1(prefect_server: Any) -> None:
    proc = cli("task", "create", "bad", "--handler", "demo", "--every", "1h", "--retries", "-3", check=False)
    assert proc.returncode == 1
    assert "retryPolicy.maxRetries" in proc.stderr and "Traceback" not in proc.stderr
    proc = cli("task", "create", "Unknown Thing", check=False)
    assert proc.returncode == 1 and "available: cleanup, data-sync, demo" in " ".join(proc.stderr.split())
    proc = cli("task", "history", "any", "--limit", "1000", check=False)  # the API pages 200 at most
    assert proc.returncode == 1 and "--limit" in proc.stderr and "200" in proc.stderr and "Traceback" not in proc.stderr


def test_cli_reports_an_unreachable_server(tmp_path: Path) -> None:
    env = {**os.environ, "PREFECT_API_URL": "http://127.0.0.1:9/api"}
    proc = subprocess.run([BGTASKS, "task", "ls"], capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 1 and "bgtasks up" in proc.stderr


def test_cli_tokens_never_print_a_secret_and_revoke_takes_effect(api_process: Any) -> None:
    import httpx

    from bgtasks.auth import hash_token

    made = json.loads(cli("token", "create", "cli-token", "--scope", "tasks:read", "-o", "json").stdout)
    secret, token_id = made["token"], made["id"]
    headers = {"Authorization": f"Bearer {secret}"}
    assert httpx.get(f"{api_process.base}/tasks", headers=headers, timeout=60).status_code == 200
    for args in (("token", "ls"), ("token", "ls", "-o", "json")):
        out = cli(*args).stdout
        assert token_id in out and secret not in out and hash_token(secret) not in out
        assert secret[4:16] not in out  # not even a part of it
    revoked = cli("token", "revoke", token_id)
    assert token_id in revoked.stdout and secret not in revoked.stdout
    assert httpx.get(f"{api_process.base}/tasks", headers=headers, timeout=60).status_code == 401
    listed = {t["id"]: t for t in json.loads(cli("token", "ls", "-o", "json").stdout)}
    assert "revokedAt" in listed[token_id]


def test_cli_prints_markup_and_escapes_from_task_data_as_text(prefect_server: Any) -> None:
    """A task's data and description come from whoever created the task: the CLI shows them,
    it does not let them style or drive the terminal."""
    message = "[red]not red[/red] \x1b[2J\u202egpj.exe"
    created = json.loads(cli("task", "create", "cli-escapes", "--handler", "demo", "--data",
                             json.dumps({"message": message}), "-o", "json").stdout)
    cli("task", "run", created["id"], "--wait")
    shown = cli("task", "show", created["id"]).stdout
    assert "[red]not red[/red]" in shown  # markup stays text
    assert "\x1b" not in shown and "\u202e" not in shown  # control and bidi characters are made visible
    assert "\\x1b[2J" in shown or "\\u001b[2J" in shown
    as_json = cli("task", "show", created["id"], "-o", "json").stdout
    assert "\x1b" not in as_json and "\u202e" not in as_json
    assert json.loads(as_json)["result"]["data"]["message"] == message  # the JSON is still exact
    cli("task", "rm", created["id"], "--yes")
