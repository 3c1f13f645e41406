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
