"""bgtasks' own database on real SQLite and real PostgreSQL: migrations and API tokens."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from bgtasks.auth import Scope, TokenStore
from bgtasks.store import open_store
from tests.pg import pg_database


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'bgtasks.db'}"
    else:
        with pg_database() as url:
            yield url


async def test_migrations_are_idempotent_and_tokens_round_trip(db_url: str) -> None:
    store = await open_store(db_url)
    await store.migrate()  # a second start finds the schema current
    tokens = TokenStore(store)
    record, secret = await tokens.create("web", frozenset({Scope.TASKS_READ, Scope.TASKS_WRITE}))
    assert secret.startswith("bgt_") and len(secret) > 40
    found = await tokens.verify(secret)
    assert found is not None and found.id == record.id and found.scopes == record.scopes
    assert await tokens.verify(secret + "x") is None
    assert await tokens.verify("not-a-token") is None
    await tokens.revoke(record.id)
    assert await tokens.verify(secret) is None
    listed = await tokens.list()
    assert [t.id for t in listed] == [record.id] and listed[0].revoked_at is not None
    await store.close()

    reopened = await open_store(db_url)  # survives a restart
    assert [t.name for t in await TokenStore(reopened).list()] == ["web"]
    await reopened.close()


async def test_bad_token_input_changes_nothing(db_url: str) -> None:
    store = await open_store(db_url)
    tokens = TokenStore(store)
    with pytest.raises(ValueError, match="name"):
        await tokens.create("  ", frozenset({Scope.TASKS_READ}))
    with pytest.raises(ValueError, match="devices:report"):
        await tokens.create("phone", frozenset({Scope.TASKS_WRITE}), device_id="phone-1")
    with pytest.raises(KeyError):
        await tokens.revoke("missing")
    assert await tokens.list() == []
    await store.close()

