"""CLI durations and TaskSchedule -> Prefect schedules (pure)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from bgtasks.durations import parse_duration_ms
from bgtasks.models import TaskSchedule
from deployments.schedules import prefect_schedules


@pytest.mark.parametrize(("text", "ms"), [("500ms", 500), ("30s", 30_000), ("5m", 300_000), ("1h30m", 5_400_000), ("2d", 172_800_000), ("1.5", 1500)])
def test_durations(text: str, ms: int) -> None:
    assert parse_duration_ms(text) == ms


@pytest.mark.parametrize("text", ["", "0s", "five minutes", "5x", "1h 2", "-1s"])
def test_bad_durations(text: str) -> None:
    with pytest.raises(ValueError):
        parse_duration_ms(text)


NOW = datetime(2030, 5, 1, 12, 0, tzinfo=UTC)


def test_interval_becomes_an_anchored_interval_schedule() -> None:
    [s] = prefect_schedules(TaskSchedule.model_validate({"type": "periodic", "interval": 90_000}), NOW)
    assert s.schedule.interval == timedelta(seconds=90) and s.schedule.anchor_date == NOW and s.active


def test_interval_with_end_becomes_an_rrule_that_stops() -> None:
    sched = TaskSchedule.model_validate(
        {"type": "periodic", "interval": 60_000, "startTime": "2099-01-01T00:00:00Z", "endTime": "2099-01-01T00:05:00Z"}
    )
    [s] = prefect_schedules(sched, NOW)
    from dateutil.rrule import rrulestr

    times = list(rrulestr(s.schedule.rrule))
    assert len(times) == 6 and times[-1] == datetime(2099, 1, 1, 0, 5, tzinfo=UTC)


def test_cron_keeps_its_timezone_and_one_time_has_no_schedule() -> None:
    [s] = prefect_schedules(TaskSchedule.model_validate({"type": "periodic", "cron": "0 3 * * *", "timezone": "Asia/Tokyo"}), NOW)
    assert (s.schedule.cron, s.schedule.timezone) == ("0 3 * * *", "Asia/Tokyo")
    assert prefect_schedules(TaskSchedule.model_validate({"type": "one-time"}), NOW) == []
