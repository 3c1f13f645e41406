"""What every benchmark sets up the same way: a fresh home, a free port, SQLite or a
fresh PostgreSQL database (dropped afterwards), and the Prefect environment."""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
from pathlib import Path
from typing import Any


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
        from bgtasks.settings import load_settings

        self.settings: Any = load_settings()
        os.environ.update(self.settings.prefect_env())

    @property
    def database(self) -> str:
        return "PostgreSQL" if self.postgres else "SQLite"

    def drop(self) -> None:
        if self.dbname and self.postgres:
            asyncio.run(pg_admin(self.postgres, f'DROP DATABASE IF EXISTS "{self.dbname}" WITH (FORCE)'))
