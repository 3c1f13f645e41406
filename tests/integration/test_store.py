"""bgtasks' own database on real SQLite and real PostgreSQL: migrations and API tokens."""

from __future__ import annotations

import asyncio
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


async def test_progress_reports_keep_the_token_and_only_the_first_final_report_counts(db_url: str) -> None:
    import secrets

    from mobile_push.registry import DeviceIn, DeviceRegistry
    from mobile_push.reports import ReportIn, ReportRejected, RunLedger

    store = await open_store(db_url)
    try:
        ledger = RunLedger(store)
        device = await DeviceRegistry(store).add(DeviceIn(id="phone-2", platform="android",
                                                          token="t:" + secrets.token_urlsafe(140)))
        token = await ledger.issue_token("run-2", device.id, "task-2")
        first = await ledger.submit(device.id, "run-2", ReportIn(report_token=token, state="started"))
        assert (first.state, first.final, first.success, first.stops) == ("started", False, None, 0)
        for n in (1, 2):
            stop = await ledger.submit(device.id, "run-2", ReportIn(report_token=token, state="stopped",
                                                                     stop_reason="STOP_REASON_QUOTA"))
            assert (stop.state, stop.stops) == ("stopped", n)
            again = await ledger.submit(device.id, "run-2", ReportIn(report_token=token, state="started"))
            assert again.started_at == first.started_at  # when the work first began
        [progress] = (await ledger.reports("run-2")).values()
        assert not progress.final and progress.state == "started" and progress.stops == 2
        final = await ledger.submit(device.id, "run-2", ReportIn(report_token=token, state="failed", error="disk full"))
        assert (final.state, final.final, final.success, final.error, final.stops) == ("failed", True, False, "disk full", 2)
        for late in (ReportIn(report_token=token, state="started"), ReportIn(report_token=token, success=True)):
            with pytest.raises(ReportRejected) as refused:
                await ledger.submit(device.id, "run-2", late)
            assert refused.value.status == 409
        [kept] = (await ledger.reports("run-2")).values()
        assert (kept.state, kept.success, kept.error) == ("failed", False, "disk full")
    finally:
        await store.close()


async def test_two_runs_reaching_one_device_at_once_cannot_both_take_its_last_budget_slot(db_url: str) -> None:
    """The push budget's reservation is atomic on each database: two runs, each with a store of its
    own (two processes), ask for the one slot a device has left; one gets it, the other is held."""
    import secrets
    from datetime import UTC, datetime, timedelta

    from mobile_push import budget
    from mobile_push.registry import DeviceIn, DeviceRegistry
    from mobile_push.reports import SENDING, RunLedger

    first, second = await open_store(db_url), await open_store(db_url)
    try:
        device = await DeviceRegistry(first).add(DeviceIn(platform="ios", token=secrets.token_hex(32),
                                                          topic="com.example.app"))
        await RunLedger(first).record_delivery(run_id="earlier", task_id=None, device_id=device.id,
                                               transport="apns", outcome="delivered", attempts=1, message_id=None,
                                               error=None)  # one of the two an hour, just now

        def slot_of(_: str, times: list[datetime]) -> datetime | None:
            return budget.next_slot(times, 2, datetime.now(UTC))

        results = await asyncio.gather(*(RunLedger(store).reserve(run, None, [(device.id, "apns")], slot_of)
                                         for store, run in ((first, "run-a"), (second, "run-b"))))
        assert sorted(len(held) for held in results) == [0, 1]  # one slot: one run has it, one waits
        [held] = [h for h in results if h]
        assert held[device.id] > datetime.now(UTC) + timedelta(minutes=59)  # until the first push leaves the hour
        winner = "run-a" if not results[0] else "run-b"
        assert [d.outcome for d in (await RunLedger(first).deliveries(winner)).values()] == [SENDING]
    finally:
        await first.close()
        await second.close()
