"""Test-wide set-up: an isolated bgtasks home and Prefect environment.

Prefect reads its settings when it is imported, so the environment is put in
place here, before any test module imports Prefect. Integration tests get a real
Prefect server (session-scoped, SQLite in a temp home) from ``prefect_server``
and a real process worker from ``worker``; both are stopped by PID.

``BGTASKS_TEST_DATABASE=postgresql`` runs the same tests on PostgreSQL: the
session's Prefect server and bgtasks' own tables live in a database created for
the run on the machine's server (dropped at the end), and only the tests marked
``postgresql`` are collected: those where the database matters (persistence, stored
devices and tokens, several workers, schedules, automations, the server's doors and
CSRF tokens). Each expensive scenario runs once, on the database where it matters.
``make test`` runs the suite once on SQLite, then the marked tests again so.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import tempfile
from pathlib import Path
from typing import Any

_HOME = Path(tempfile.mkdtemp(prefix="bgtasks-test-"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


os.environ["BGTASKS_HOME"] = str(_HOME)
os.environ["BGTASKS_SERVER_PORT"] = str(free_port())
os.environ["BGTASKS_WORKER_QUERY_SECONDS"] = "1"
os.environ["BGTASKS_WORKER_PREFETCH_SECONDS"] = "1"
# Crash detection (bgtasks.crash): heartbeats every 30 s (Prefect's minimum), silent for 45 s
# -> Crashed. Shorter than the 90 s default, so the crash tests wait less.
os.environ["BGTASKS_WORKER_CRASH_AFTER_S"] = "45"
for _k in [k for k in os.environ if k.startswith("PREFECT_")]:
    del os.environ[_k]

DATABASE = os.environ.get("BGTASKS_TEST_DATABASE", "sqlite")
if DATABASE not in ("sqlite", "postgresql"):
    raise SystemExit(f"BGTASKS_TEST_DATABASE must be sqlite or postgresql, not {DATABASE!r}")
_PG_URL: str | None = None
if DATABASE == "postgresql":
    from tests.pg import create_database

    _PG_URL = create_database("bgtasks_suite")
    os.environ["BGTASKS_SERVER_DATABASE_URL"] = _PG_URL.replace("postgresql://", "postgresql+asyncpg://", 1)

# Workers and daemons in the tests' network namespaces reach the server by its address on a
# veth link (10.192.0.0/10, tests/integration/test_constraints_network.py).
os.environ["BGTASKS_SERVER_ALLOWED_HOSTS"] = json.dumps(["10.192.0.0/10"])
# Built-in handlers may touch files under the temp directory (tests record attempts there).
os.environ["BGTASKS_TASK_FILE_ROOTS"] = json.dumps([tempfile.gettempdir()])

from bgtasks.settings import load_settings  # noqa: E402

_settings = load_settings()
_settings.ensure_auth_string()  # the session's Prefect server and every client share it
os.environ.update(_settings.prefect_env())

pytest_plugins = ["tests.fixtures"]


def pytest_report_header(config: object) -> str:
    return f"bgtasks test database: {DATABASE}" + (f" ({_PG_URL})" if _PG_URL else "")


def pytest_collection_modifyitems(config: Any, items: list[Any]) -> None:
    """On PostgreSQL, keep the tests marked ``postgresql`` that use the session's server."""
    if DATABASE != "postgresql":
        return
    keep = [i for i in items if "prefect_server" in getattr(i, "fixturenames", ())
            and i.get_closest_marker("postgresql") is not None]
    dropped = [i for i in items if i not in keep]
    if dropped:
        config.hook.pytest_deselected(items=dropped)
    items[:] = keep


def pytest_unconfigure(config: object) -> None:
    if _PG_URL is not None:
        from tests.pg import drop_database

        drop_database(_PG_URL)
    if os.environ.get("BGTASKS_TEST_KEEP_HOME"):  # debugging: keep the logs and databases
        print(f"\nbgtasks test home kept: {_HOME}")
        return
    shutil.rmtree(_HOME, ignore_errors=True)
