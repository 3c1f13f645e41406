"""The warm worker never starts a run before it is due (it picks runs up to
prefetch_seconds early, and Prefect's server-side check rounds the wait to seconds)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from uuid import uuid4

from prefect.client.schemas.objects import FlowRun
from prefect.states import Scheduled

from bgtasks.policies.until_due import until_due


async def test_a_run_picked_up_early_waits_for_its_scheduled_time() -> None:
    due = datetime.now(UTC) + timedelta(milliseconds=400)
    run = FlowRun(flow_id=uuid4(), state=Scheduled(scheduled_time=due), expected_start_time=due - timedelta(hours=1))
    await until_due(run)
    assert datetime.now(UTC) >= due  # the state's time counts, not the (older) expected start

