"""TaskSchedule -> Prefect deployment schedules (pure).

- periodic with ``interval`` (ms): an interval schedule anchored at ``startTime``
  (default: creation time); with an ``endTime``, an RRULE with ``UNTIL`` instead,
  since Prefect's interval schedules have no end;
- periodic with ``cron``: a cron schedule in ``timezone`` (default UTC); an
  ``endTime`` is enforced when each run starts (runs past it are skipped);
- one-time: no schedule; the task's single flow run is created directly.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from prefect.client.schemas.actions import DeploymentScheduleCreate
from prefect.client.schemas.schedules import CronSchedule, IntervalSchedule, RRuleSchedule

from bgtasks.models import TaskSchedule, TaskType


def _rrule_time(t: datetime) -> str:
    return t.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")


def prefect_schedules(schedule: TaskSchedule, now: datetime) -> list[DeploymentScheduleCreate]:
    """The deployment schedules for ``schedule``; ``now`` anchors an unanchored interval."""
    if schedule.type != TaskType.PERIODIC:
        return []
    if schedule.cron is not None:
        spec = CronSchedule(cron=schedule.cron, timezone=schedule.timezone or "UTC")
    else:
        assert schedule.interval is not None
        anchor = schedule.start_time or now
        if schedule.end_time is not None:
            rule = (
                f"DTSTART:{_rrule_time(anchor)}\n"
                f"RRULE:FREQ=SECONDLY;INTERVAL={schedule.interval // 1000};"
                f"UNTIL={_rrule_time(schedule.end_time)}"
            )
            spec = RRuleSchedule(rrule=rule, timezone="UTC")
        else:
            spec = IntervalSchedule(
                interval=timedelta(milliseconds=schedule.interval),
                anchor_date=anchor,
                timezone="UTC",
            )
    return [DeploymentScheduleCreate(schedule=spec, active=True, slug="bgtasks")]
