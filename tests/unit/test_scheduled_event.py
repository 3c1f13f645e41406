"""The Scheduled event Prefect's scheduler never emits: which runs lack it, and that the
worker's stand-in is the event the server's later state events follow (same id)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from uuid import uuid4

import pytest
from prefect.client.schemas.objects import FlowRun
from prefect.states import Scheduled

from bgtasks.policies.scheduled_event import FOLLOWS_WINDOW, missing_scheduled_event

NOW = datetime(2026, 11, 29, 14, 0, tzinfo=UTC)


def _run(auto: bool = True, age: timedelta = timedelta(minutes=1), name: str = "Scheduled") -> FlowRun:
    state = Scheduled(scheduled_time=NOW + timedelta(seconds=5), name=name)
    state.timestamp = NOW - age
    return FlowRun(flow_id=uuid4(), deployment_id=uuid4(), work_queue_id=uuid4(), name="brisk-otter",
                   auto_scheduled=auto, state=state, tags=["bgtasks", "type:periodic"])


def test_a_fresh_scheduler_run_gets_its_first_state_event_with_that_states_id_and_time() -> None:
    run = _run()
    assert run.state is not None
    event = missing_scheduled_event(run, run.state, NOW)
    assert event is not None
    assert event["event"] == "prefect.flow-run.Scheduled"
    assert event["id"] == run.state.id and event["occurred"] == run.state.timestamp
    assert event["resource"]["prefect.resource.id"] == f"prefect.flow-run.{run.id}"
    roles = {r["prefect.resource.id"]: r["prefect.resource.role"] for r in event["related"]}
    assert roles[f"prefect.deployment.{run.deployment_id}"] == "deployment"
    assert roles[f"prefect.flow.{run.flow_id}"] == "flow"
    assert roles["prefect.tag.bgtasks"] == "tag" and roles["prefect.tag.type:periodic"] == "tag"


@pytest.mark.parametrize(("run", "why"), [
    (_run(auto=False), "created through the API: the server emitted its Scheduled event"),
    (_run(age=FOLLOWS_WINDOW), "too old: no later state event follows it"),
    (_run(name="AwaitingConstraints"), "not the scheduler's state: set through the API, with its event"),
])
def test_no_event_where_none_is_missing(run: FlowRun, why: str) -> None:
    assert run.state is not None
    assert missing_scheduled_event(run, run.state, NOW) is None, why


def test_the_window_covers_the_servers_five_minutes() -> None:
    run = _run(age=timedelta(minutes=5))
    assert run.state is not None and missing_scheduled_event(run, run.state, NOW) is not None
