"""What every benchmark sets up the same way: a fresh home, a free port, SQLite or a
fresh PostgreSQL database (dropped afterwards), the Prefect environment with the
server's auth string, and a plain HTTP client of the Prefect API."""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import uuid
import tempfile
from pathlib import Path
from typing import Any


def prefect_http(settings: Any, timeout_s: float = 120) -> Any:
    """An ``httpx.Client`` of the Prefect API with its auth string and a CSRF token (for POSTs)."""
    import httpx

    headers = {}
    if settings.server.auth_string is not None:
        secret = settings.server.auth_string.get_secret_value()
        headers["Authorization"] = "Basic " + base64.b64encode(secret.encode()).decode()
    client = httpx.Client(base_url=settings.api_url, timeout=timeout_s, headers=headers)
    client_id = str(uuid.uuid4())
    # Not through the client: a client that made a request cannot be used in a with block.
    token = httpx.get(f"{settings.api_url}/csrf-token", params={"client": client_id}, headers=headers,
                      timeout=timeout_s)
    if token.status_code == 200:
        client.headers.update({"Prefect-Csrf-Token": token.json()["token"], "Prefect-Csrf-Client": client_id})
    return client


def add_postgres_option(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--postgres", metavar="URL", default=None,
                    help="run the server on a fresh PostgreSQL database at this server URL "
                         "(e.g. postgresql://postgres@127.0.0.1:5432); default SQLite")


async def pg_admin(url: str, sql: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(url.rstrip("/") + "/postgres")
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


class BenchHome:
    """A fresh bgtasks home (and PostgreSQL database when asked) for one benchmark run."""

    def __init__(self, name: str, postgres: str | None) -> None:
        from bench.worker import free_port

        self.postgres = postgres
        self.path = Path(tempfile.mkdtemp(prefix=f"bgtasks-bench-{name}-"))
        os.environ.update({"BGTASKS_HOME": str(self.path), "BGTASKS_SERVER_PORT": str(free_port())})
        for k in [k for k in os.environ if k.startswith("PREFECT_")]:
            del os.environ[k]
        self.dbname: str | None = None
        if postgres:
            self.dbname = f"bgtasks_bench_{name}_{os.getpid()}"
            asyncio.run(pg_admin(postgres, f'CREATE DATABASE "{self.dbname}"'))
            base = postgres.replace("postgresql://", "postgresql+asyncpg://").rstrip("/")
            os.environ["BGTASKS_SERVER_DATABASE_URL"] = f"{base}/{self.dbname}"
        # The demo handler records attempts under the temp directory.
        os.environ["BGTASKS_TASK_FILE_ROOTS"] = json.dumps([tempfile.gettempdir()])
        from bgtasks.settings import load_settings

        self.settings: Any = load_settings()
        self.settings.ensure_auth_string()  # the stack started next reads the same one
        os.environ.update(self.settings.prefect_env())

    @property
    def database(self) -> str:
        return "PostgreSQL" if self.postgres else "SQLite"

    def drop(self) -> None:
        if self.dbname and self.postgres:
            asyncio.run(pg_admin(self.postgres, f'DROP DATABASE IF EXISTS "{self.dbname}" WITH (FORCE)'))
