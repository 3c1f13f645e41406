"""Test-wide set-up: an isolated bgtasks home and Prefect environment.

Prefect reads its settings when it is imported, so the environment is put in
place here, before any test module imports Prefect. Integration tests get a real
Prefect server (session-scoped, SQLite in a temp home) from ``prefect_server``
and a real process worker from ``worker``; both are stopped by PID.
"""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
from pathlib import Path

_HOME = Path(tempfile.mkdtemp(prefix="bgtasks-test-"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


os.environ["BGTASKS_HOME"] = str(_HOME)
os.environ["BGTASKS_SERVER_PORT"] = str(free_port())
os.environ["BGTASKS_WORKER_QUERY_SECONDS"] = "1"
os.environ["BGTASKS_WORKER_PREFETCH_SECONDS"] = "1"
for _k in [k for k in os.environ if k.startswith("PREFECT_")]:
    del os.environ[_k]

from bgtasks.settings import load_settings  # noqa: E402

os.environ.update(load_settings().prefect_env())

pytest_plugins = ["tests.fixtures"]


def pytest_unconfigure(config: object) -> None:
    if os.environ.get("BGTASKS_TEST_KEEP_HOME"):  # debugging: keep the logs and databases
        print(f"\nbgtasks test home kept: {_HOME}")
        return
    shutil.rmtree(_HOME, ignore_errors=True)
