"""Settings that depend on the Prefect server's database."""

from __future__ import annotations

import pytest

from bgtasks.settings import ServerSettings, Settings


@pytest.mark.parametrize(("fields", "sqlite"), [
    ({}, True),  # the embedded default: a SQLite file under the home
    ({"database_url": "sqlite+aiosqlite:////srv/prefect.db"}, True),
    ({"database_url": "postgresql+asyncpg://postgres@127.0.0.1:5432/prefect"}, False),
    ({"api_url": "http://prefect.internal:4200/api"}, False),  # an external server: not known here
])
def test_on_sqlite(fields: dict, sqlite: bool) -> None:
    server = ServerSettings(**{"database_url": None, "api_url": None, **fields})  # not the environment's
    assert server.on_sqlite is sqlite
    late_runs = Settings(server=server).prefect_env().get("PREFECT_SERVER_SERVICES_LATE_RUNS_ENABLED")
    assert late_runs == ("false" if sqlite else None)


def test_a_running_stacks_push_settings_reach_other_commands(tmp_path, monkeypatch) -> None:
    """`bgtasks up --push emulator` leaves its push settings in the home while it runs: a
    command in another terminal takes them (below its own environment); a stack that is
    gone (its PID dead) leaves nothing behind that counts, and only BGTASKS_PUSH_* count."""
    import json
    import os
    import subprocess

    from bgtasks.settings import STACK_ENV_FILE, load_settings

    monkeypatch.setenv("BGTASKS_HOME", str(tmp_path))
    for key in ("BGTASKS_PUSH_PUBLIC_URL", "BGTASKS_PUSH_FCM_URL", "BGTASKS_API_PORT"):
        monkeypatch.delenv(key, raising=False)
    env = {"BGTASKS_PUSH_PUBLIC_URL": "http://127.0.0.1:4321", "BGTASKS_PUSH_FCM_URL": "https://127.0.0.1:1/v1",
           "BGTASKS_API_PORT": "1"}
    (tmp_path / STACK_ENV_FILE).write_text(json.dumps({"pid": os.getpid(), "env": env}))
    s = load_settings()
    assert s.push.public_url == "http://127.0.0.1:4321"
    assert s.api.port != 1

    monkeypatch.setenv("BGTASKS_PUSH_PUBLIC_URL", "https://api.example.com")
    assert load_settings().push.public_url == "https://api.example.com"  # the environment wins

    monkeypatch.delenv("BGTASKS_PUSH_PUBLIC_URL")
    monkeypatch.delenv("BGTASKS_PUSH_FCM_URL", raising=False)
    dead = subprocess.Popen(["true"])
    dead.wait()
    (tmp_path / STACK_ENV_FILE).write_text(json.dumps({"pid": dead.pid, "env": env}))
    assert load_settings().push.public_url is None
