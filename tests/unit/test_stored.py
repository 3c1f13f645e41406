"""What bgtasks stores in Prefect is written and read one way (bgtasks.stored)."""

from __future__ import annotations

import inspect
from datetime import UTC, datetime, timedelta

import pytest
from pydantic import ValidationError

from bgtasks import stored
from bgtasks.models import CreateTaskOptions
from triggers.sensors import Change

SPEC = {"name": "nightly", "handler": "demo", "priority": "high", "data": {"k": [1, 2]},
        "schedule": {"type": "one-time", "startTime": "2020-01-01T00:00:00Z"},
        "constraints": {"requiresCharging": True}}


def test_a_definition_reads_back_as_written_even_once_its_start_time_has_passed() -> None:
    opts = CreateTaskOptions.model_validate({**SPEC, "schedule": {"type": "one-time",
                                            "startTime": (datetime.now(UTC) + timedelta(hours=1)).isoformat()}})
    params = stored.parameters_for(opts)
    assert set(params) == {stored.TASK_PARAM, stored.DATA_PARAM} and "data" not in params[stored.TASK_PARAM]
    assert stored.read(params) == opts == stored.decode(params[stored.TASK_PARAM], params[stored.DATA_PARAM])
    # A new task may not start in the past; a stored one whose time has passed still reads.
    past = stored.read({stored.TASK_PARAM: {k: v for k, v in SPEC.items() if k != "data"}})
    assert past is not None and past.schedule.start_time == datetime(2020, 1, 1, tzinfo=UTC)


def test_no_definition_is_none_and_a_broken_one_is_refused_or_skipped() -> None:
    assert stored.read(None) is None and stored.read({"data": 1}) is None and stored.peek({}) is None
    broken = {stored.TASK_PARAM: {"name": "x", "handler": "demo", "schedule": {"type": "sometimes"}}}
    with pytest.raises(ValidationError):
        stored.read(broken)
    assert stored.peek(broken) is None and stored.constraints_of(broken) is None


def test_constraints_are_those_that_require_something() -> None:
    cons = stored.constraints_of({stored.TASK_PARAM: {k: v for k, v in SPEC.items() if k != "data"}})
    assert cons is not None and cons.requires_charging
    none_required = {**SPEC, "constraints": {"requiresCharging": False}}
    assert stored.constraints_of({stored.TASK_PARAM: none_required}) is None


def test_tags_and_due_times() -> None:
    opts = CreateTaskOptions.model_validate(SPEC, context={"stored": True})
    tags = stored.tags_for(opts, "demo")
    assert tags[0] == stored.TAG and stored.tag_value(tags, "priority") == "high"
    assert stored.tag_value(tags, "handler") == "demo" and stored.tag_value(tags, "nope") is None
    due = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)
    tagged = [*tags, stored.due_tag(due)]
    assert stored.due_of(tagged) == due and stored.due_of(tags) is None
    assert stored.due_of([stored.DUE_TAG + "garbage"]) is None
    assert stored.without_due(tagged) == tags


def test_queues_rank_by_priority_and_unknown_ones_last() -> None:
    assert [stored.queue_rank(q) for q in ("high", "normal", "low", "other", None)] == [1, 2, 3, 4, 4]


def test_the_daemons_event_names_are_the_ones_triggers_expect() -> None:
    assert Change("network", "connected", "eth0").event == stored.event_name("network.connected")
    assert stored.automation_name("d1").startswith(stored.AUTOMATION_PREFIX)


def test_idempotency_keys() -> None:
    at = datetime(2026, 12, 3, tzinfo=UTC)
    assert stored.one_time_key("d1") == stored.one_time_key("d1") != stored.one_time_key("d2")
    assert stored.run_now_key() != stored.run_now_key()
    assert stored.catch_up_key("d1", at) == stored.catch_up_key("d1", at) != stored.catch_up_key("d1", at + timedelta(1))


def test_the_handler_flows_take_the_stored_parameters_by_their_names() -> None:
    from flows.demo import demo
    from flows.device import device_task

    for flow in (demo, device_task):
        params = inspect.signature(flow.fn).parameters
        assert stored.TASK_PARAM in params and stored.DATA_PARAM in params
