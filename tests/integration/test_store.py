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



async def test_devices_deliveries_and_reports_round_trip(db_url: str) -> None:
    """The device registry and the run ledger on each database: what the device path writes."""
    import secrets

    from mobile_push.registry import DeviceIn, DeviceRegistry, DeviceUpdate
    from mobile_push.reports import ReportIn, ReportRejected, RunLedger

    store = await open_store(db_url)
    try:
        registry, ledger, tokens = DeviceRegistry(store), RunLedger(store), TokenStore(store)
        device = await registry.add(DeviceIn(id="phone-1", platform="ios", token=secrets.token_hex(32),
                                             topic="com.example.app", labels=["beta"]))
        assert (await registry.get("phone-1")).labels == ["beta"]
        await registry.mark_invalid(device.id, "BadDeviceToken")
        assert (await registry.get("phone-1")).state == "invalid"
        revived = await registry.update(device.id, DeviceUpdate(token=secrets.token_hex(32)))
        assert revived.state == "active" and revived.invalid_reason is None

        await ledger.record_delivery(run_id="run-1", task_id="task-1", device_id=device.id, transport="apns",
                                     outcome="delivered", attempts=1, message_id="m-1", error=None)
        await ledger.record_delivery(run_id="run-1", task_id="task-1", device_id=device.id, transport="apns",
                                     outcome="delivered", attempts=2, message_id=None, error=None)
        [delivery] = (await ledger.deliveries("run-1")).values()
        assert delivery.attempts == 3 and delivery.message_id == "m-1"
        report_token = await ledger.issue_token("run-1", device.id, "task-1")
        with pytest.raises(ReportRejected):
            await ledger.submit(device.id, "run-1", ReportIn(report_token="wrong", success=True))
        await ledger.submit(device.id, "run-1", ReportIn(report_token=report_token, success=True,
                                                          data={"n": [1, 2]}, duration_ms=5))
        with pytest.raises(ReportRejected):  # one report per token
            await ledger.submit(device.id, "run-1", ReportIn(report_token=report_token, success=False))
        [report] = (await ledger.reports("run-1")).values()
        assert report.success and report.data == {"n": [1, 2]} and report.duration_ms == 5

        _, secret = await tokens.create("phone", frozenset({Scope.DEVICES_REPORT}), device_id=device.id)
        assert await tokens.verify(secret) is not None
        await registry.remove(device.id)  # its tokens go with it
        assert await tokens.verify(secret) is None
    finally:
        await store.close()
