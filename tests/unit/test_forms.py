"""The Prefect UI's creation form (flows.forms): plain defaults mean "not given", and the
values become the API's CreateTaskOptions, whose validation names a bad field."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from bgtasks.models import TaskPriority
from flows.forms import ConstraintsForm, RetryForm, ScheduleForm, TargetForm, TriggerForm, create_options


def _options(**given: object) -> dict:
    values: dict = {"name": "form", "schedule": ScheduleForm(), "description": "", "priority": TaskPriority.NORMAL,
                    "handler": "", "timeout_seconds": 0, "constraints": ConstraintsForm(),
                    "retry_policy": RetryForm(), "trigger": TriggerForm(), "target": TargetForm(), "data": {}}
    values.update(given)
    return create_options(**values).to_json_dict()


def test_the_defaults_are_the_apis_defaults() -> None:
    from bgtasks.models import CreateTaskOptions

    plain = CreateTaskOptions.model_validate({"name": "form", "schedule": {"type": "one-time"}}).to_json_dict()
    assert _options() == plain


def test_each_group_maps_onto_the_apis_fields() -> None:
    got = _options(
        schedule=ScheduleForm(type="periodic", every_seconds=3600, end_time="2030-01-01T00:00:00+00:00",
                              catch_up="run-once"),
        description="nightly", handler="demo", timeout_seconds=30, priority=TaskPriority.HIGH,
        constraints=ConstraintsForm(requires_wifi=True, deadline_seconds=60, on_deadline="fail",
                                    stop_when_constraints_lost=False),
        retry_policy=RetryForm(max_retries=3, retry_on_exceptions=["TimeoutError"]),
        data={"message": "hi"})
    assert got["schedule"]["interval"] == 3_600_000 and got["schedule"]["catchUp"] == "run-once"
    assert got["schedule"]["endTime"].startswith("2030-01-01T00:00:00")
    assert got["description"] == "nightly" and got["handler"] == "demo" and got["timeoutMs"] == 30_000
    assert got["priority"] == "high" and got["data"] == {"message": "hi"}
    assert got["constraints"]["requiresWifi"] is True and got["constraints"]["constraintDeadline"] == 60_000
    assert got["constraints"]["onDeadline"] == "fail" and got["constraints"]["stopWhenConstraintsLost"] is False
    assert got["retryPolicy"]["maxRetries"] == 3 and got["retryPolicy"]["retryOn"] == {"exceptions": ["TimeoutError"]}

    trig = _options(schedule=ScheduleForm(type="triggered"), trigger=TriggerForm(on="power.plugged"))
    assert trig["trigger"]["on"] == "power.plugged" and "path" not in trig["trigger"]
    assert trig["schedule"]["type"] == "triggered"
    dev = _options(target=TargetForm(labels=["beta"], platform="ios", pushes_per_hour=0))
    assert dev["target"]["labels"] == ["beta"] and dev["target"]["platform"] == "ios"
    assert dev["target"]["pushesPerHour"] == 0


def test_a_bad_value_names_the_apis_field() -> None:
    with pytest.raises(ValidationError) as bad:
        _options(schedule=ScheduleForm(type="periodic"))  # neither every nor cron
    assert "schedule" in str(bad.value)
    with pytest.raises(ValidationError) as bad:
        _options(schedule=ScheduleForm(start_time="tomorrow"))
    assert "startTime" in str(bad.value) or "start_time" in str(bad.value)
