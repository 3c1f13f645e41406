"""bgtasks' own database: what Prefect does not store.

API tokens (hashed) now; the device registry, push deliveries and device
reports of ``mobile_push`` later. SQLAlchemy 2 (async), schema changes through
Alembic migrations in ``bgtasks/store/migrations`` with their own version table
(``bgtasks_alembic_version``), so the tables may share a PostgreSQL database with
Prefect's.

The URL is ``BGTASKS_DATABASE_URL``; by default the Prefect database when that
is PostgreSQL, else a SQLite file ``<home>/bgtasks.db``. ``postgresql://`` and
``sqlite:///`` URLs are given their async drivers (asyncpg, aiosqlite).
"""

from __future__ import annotations

from bgtasks.store.db import Store, async_url, open_store

__all__ = ["Store", "async_url", "open_store"]
