"""The spec's data model: JSON names, defaults, validation naming the field."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from pydantic import ValidationError

from bgtasks.models import (
    BackgroundTask,
    CreateTaskOptions,
    RetryPolicy,
    TaskResult,
    TaskSchedule,
    field_errors,
)
from tests.spec_example import SPEC_EXAMPLE



def test_spec_example_parses_with_spec_defaults() -> None:
    opts = CreateTaskOptions.model_validate(SPEC_EXAMPLE)
    assert opts.schedule.interval == 3_600_000
    assert opts.retry_policy == RetryPolicy(max_retries=3, backoff_multiplier=2, initial_backoff_ms=1000, max_backoff_ms=60_000)
    assert opts.constraints.requires_network is True and opts.constraints.requires_wifi is False
    out = opts.to_json_dict()
    assert out["retryPolicy"]["maxBackoffMs"] == 60_000 and out["schedule"]["interval"] == 3_600_000
    assert CreateTaskOptions.model_validate(out) == opts


def test_policy_defaults_are_the_specs() -> None:
    p = RetryPolicy.model_validate({"maxRetries": 1})
    assert (p.backoff_multiplier, p.initial_backoff_ms, p.max_backoff_ms) == (2, 1000, 60000)


def test_interval_ms_alias_is_accepted() -> None:
    assert TaskSchedule.model_validate({"type": "periodic", "intervalMs": 5000}).interval == 5000


def test_times_are_utc_iso_with_z() -> None:
    paris = datetime(2030, 1, 1, 12, 0, tzinfo=__import__("zoneinfo").ZoneInfo("Europe/Paris"))
    s = TaskSchedule.model_validate({"type": "one-time", "startTime": paris.isoformat()})
    assert s.start_time.tzinfo == UTC and s.to_json_dict()["startTime"] == "2030-01-01T11:00:00Z"
    r = TaskResult(success=True, executed_at=paris, duration=5)
    assert r.to_json_dict() == {"success": True, "executedAt": "2030-01-01T11:00:00Z", "duration": 5}


def test_background_task_json_uses_spec_names() -> None:
    now = datetime.now(UTC)
    t = BackgroundTask(id="x", name="n", type="one-time", status="pending", priority="high", created_at=now, scheduled_for=now)
    body = t.to_json_dict()
    assert {"id", "name", "type", "status", "priority", "createdAt", "scheduledFor"} <= set(body)
    assert "created_at" not in body and "result" not in body


def test_naive_times_are_refused() -> None:
    with pytest.raises(ValidationError) as info:
        TaskSchedule.model_validate({"type": "one-time", "startTime": "2030-01-01T10:00:00"})
    assert field_errors(info.value)[0]["field"] == "startTime"


@pytest.mark.parametrize(
    ("body", "field", "words"),
    [
        ({"schedule": {"type": "periodic", "interval": 0}}, "schedule.interval", "positive"),
        ({"schedule": {"type": "periodic", "interval": 999}}, "schedule.interval", "at least"),
        ({"schedule": {"type": "periodic"}}, "schedule.interval", "interval"),
        ({"schedule": {"type": "one-time", "interval": 5000}}, "schedule.interval/cron", "periodic"),
        ({"schedule": {"type": "periodic", "interval": 1500, "endTime": "2099-01-01T00:00:00Z"}}, "schedule.interval", "whole seconds"),
        ({"schedule": {"type": "periodic", "interval": 5000, "endTime": "2001-01-01T00:00:00Z"}}, "schedule.endTime", "past"),
        ({"schedule": {"type": "periodic", "interval": 5000, "timezone": "UTC"}}, "schedule.timezone", "cron"),
        ({"schedule": {"type": "triggered"}}, "trigger", "needs a trigger"),
        ({"trigger": {"on": "power.plugged"}}, "trigger", "only tasks of schedule type 'triggered'"),
        ({"schedule": {"type": "triggered", "interval": 5000}, "trigger": {"on": "power.plugged"}},
         "schedule.interval/cron", "trigger"),
        ({"schedule": {"type": "triggered"}, "trigger": {"on": "file.created"}}, "trigger.path", "directory"),
        ({"schedule": {"type": "triggered"}, "trigger": {"on": "file.created", "path": "in/box"}},
         "trigger.path", "relative"),
        ({"schedule": {"type": "triggered"}, "trigger": {"on": "sunrise"}}, "trigger.on", "file.created"),
        ({"schedule": {"type": "triggered"}, "trigger": {"on": "power.plugged", "networkType": "wifi"}},
         "trigger.networkType", "network.connected"),
        ({"target": {}}, "target.deviceIds", "deviceIds"),
        ({"target": {"platform": "windows"}}, "target.platform", "android"),
        ({"retryPolicy": {"maxRetries": 101}}, "retryPolicy.maxRetries", "100"),
        ({"retryPolicy": {"maxRetries": 1, "jitter": 2}}, "retryPolicy.jitter", "1"),
        ({"retryPolicy": {"maxRetries": 1, "retryOn": {}}}, "retryPolicy.retryOn.retryOn", "exceptions"),
        ({"retryPolicy": {"maxRetries": 1, "retryOn": {"exceptions": ["not a name"]}}}, "retryPolicy.retryOn.exceptions", "exception"),
        ({"priority": "HIGH"}, "priority", "high"),
        ({"timeoutMs": -1}, "timeoutMs", "greater"),
    ],
)
def test_validation_names_the_field(body: dict, field: str, words: str) -> None:
    full = {"name": "t", "schedule": {"type": "one-time"}, **body}
    with pytest.raises(ValidationError) as info:
        CreateTaskOptions.model_validate(full)
    errors = field_errors(info.value)
    assert any(e["field"] == field and words in e["message"] for e in errors), errors


def test_one_time_start_in_the_past_only_beyond_grace() -> None:
    recent = (datetime.now(UTC) - timedelta(seconds=10)).isoformat()
    CreateTaskOptions.model_validate({"name": "t", "schedule": {"type": "one-time", "startTime": recent}})
    old = (datetime.now(UTC) - timedelta(hours=1)).isoformat()
    with pytest.raises(ValidationError):
        CreateTaskOptions.model_validate({"name": "t", "schedule": {"type": "one-time", "startTime": old}})
    # A stored definition stays readable after its time has passed.
    CreateTaskOptions.model_validate({"name": "t", "schedule": {"type": "one-time", "startTime": old}}, context={"stored": True})


def test_a_collapse_key_is_at_most_64_bytes_in_utf8_not_64_characters() -> None:
    """iOS devices get it as apns-collapse-id (directly or through FCM), which APNs counts in bytes."""
    base = {"name": "wake", "handler": "demo", "schedule": {"type": "one-time"}, "target": {"platform": "ios"}}
    ok = CreateTaskOptions.model_validate({**base, "target": {"platform": "ios", "collapseKey": "é" * 32}})
    assert ok.target is not None and len(ok.target.collapse_key.encode()) == 64
    with pytest.raises(ValidationError) as info:
        CreateTaskOptions.model_validate({**base, "target": {"platform": "ios", "collapseKey": "é" * 33}})
    [err] = field_errors(info.value)
    assert err["field"] == "target.collapseKey" and "66 bytes" in err["message"]
