"""Every bad input is refused with an error naming the field, and leaves no deployment behind."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from bgtasks.errors import InvalidTask

pytestmark = pytest.mark.integration

_NOW = datetime.now(UTC)
_PAST = (_NOW - timedelta(hours=2)).isoformat()
_SOON = (_NOW + timedelta(hours=2)).isoformat()
_LATER = (_NOW + timedelta(hours=4)).isoformat()
ONCE = {"type": "one-time"}
EVERY = {"type": "periodic", "interval": 60_000}

CASES = [
    ("interval zero", {"schedule": {"type": "periodic", "interval": 0}}, "schedule.interval"),
    ("interval negative", {"schedule": {"type": "periodic", "interval": -5}}, "schedule.interval"),
    ("end before start", {"schedule": {**EVERY, "startTime": _LATER, "endTime": _SOON}}, "schedule.endTime"),
    ("one-time in the past", {"schedule": {"type": "one-time", "startTime": _PAST}}, "schedule.startTime"),
    ("periodic without interval", {"schedule": {"type": "periodic"}}, "schedule.interval"),
    ("interval and cron", {"schedule": {**EVERY, "cron": "* * * * *"}}, "schedule.cron"),
    ("bad cron", {"schedule": {"type": "periodic", "cron": "every day"}}, "schedule.cron"),
    ("bad timezone", {"schedule": {"type": "periodic", "cron": "0 3 * * *", "timezone": "Mars/Olympus"}}, "schedule.timezone"),
    ("negative retries", {"retryPolicy": {"maxRetries": -1}}, "retryPolicy.maxRetries"),
    ("absurd retries", {"retryPolicy": {"maxRetries": 100000}}, "retryPolicy.maxRetries"),
    ("multiplier below 1", {"retryPolicy": {"maxRetries": 2, "backoffMultiplier": 0.5}}, "retryPolicy.backoffMultiplier"),
    ("max below initial", {"retryPolicy": {"maxRetries": 2, "initialBackoffMs": 5000, "maxBackoffMs": 1000}}, "retryPolicy.maxBackoffMs"),
    ("bad retryOn pattern", {"retryPolicy": {"maxRetries": 2, "retryOn": {"messagePattern": "(unclosed"}}}, "retryPolicy.retryOn.messagePattern"),
    ("unknown priority", {"priority": "urgent"}, "priority"),
    ("unknown type", {"schedule": {"type": "weekly"}}, "schedule.type"),
    ("unknown handler", {"handler": "no-such-handler"}, "handler"),
    ("unknown field", {"colour": "blue"}, "colour"),
    ("unknown nested field", {"schedule": {**ONCE, "every": 5}}, "schedule.every"),
    ("zero timeout", {"timeoutMs": 0}, "timeoutMs"),
    ("blank name", {"name": "   "}, "name"),
    ("slash in name", {"name": "a/b"}, "name"),
    ("NUL in data", {"data": {"k": ["x\x00"]}}, "data.k.0"),
]


async def _bgtasks_deployments(client: Any) -> set[str]:
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterTags

    deps = await client.read_deployments(deployment_filter=DeploymentFilter(tags=DeploymentFilterTags(all_=["bgtasks"])))
    return {d.name for d in deps}


@pytest.mark.parametrize(("body", "field"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
async def test_bad_input_names_the_field_and_stores_nothing(manager: Any, client: Any, body: dict, field: str) -> None:
    before = await _bgtasks_deployments(client)
    full = {"name": "bad-input", "handler": "demo", "schedule": ONCE, **body}
    with pytest.raises(InvalidTask) as info:
        await manager.create(full)
    fields = [e["field"] for e in info.value.errors]
    assert field in fields, info.value.errors
    assert all(e["message"] for e in info.value.errors)
    assert await _bgtasks_deployments(client) == before


async def test_name_without_handler_lists_the_available_ones(manager: Any, client: Any) -> None:
    with pytest.raises(InvalidTask) as info:
        await manager.create({"name": "Mystery Job", "schedule": ONCE})
    [err] = info.value.errors
    assert err["field"] == "name"
    for known in ("cleanup", "data-sync", "demo"):
        assert known in err["message"]
    assert "Mystery Job" not in await _bgtasks_deployments(client)


async def test_duplicate_name_is_refused(manager: Any, client: Any) -> None:
    first = await manager.create({"name": "unique-name", "handler": "demo", "schedule": {**EVERY, "startTime": _SOON}})
    with pytest.raises(InvalidTask) as info:
        await manager.create({"name": "unique-name", "handler": "data-sync", "schedule": ONCE})
    assert info.value.errors[0]["field"] == "name" and first.id in info.value.errors[0]["message"]
