"""Push budgets: how many background pushes a device may get per hour before bgtasks holds them.

iOS throttles background pushes beyond "two or three per hour" (Apple) and drops
what it throttles; FCM throttles collapsible messages to a device at a burst of
20 and then one per 3 minutes. bgtasks keeps the count itself, over the pushes a
service accepted for the device in the trailing hour (every task's), so a push
is never sent only to be dropped on the phone: it is *held*, a delivery state
with the time it will go, and sent then if the run is still waiting. Slots are
taken atomically (:meth:`mobile_push.reports.RunLedger.reserve`).

Budgets: ``BGTASKS_PUSH_BUDGET_IOS_PER_HOUR`` (default 3) and
``BGTASKS_PUSH_BUDGET_ANDROID_PER_HOUR`` (default 20) per platform, and a task's
``target.pushesPerHour`` over both; 0 turns the budget off. Pure (no I/O).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta

from bgtasks.settings import PushSettings
from mobile_push.types import Platform

WINDOW = timedelta(hours=1)


def per_hour(platform: Platform | str, settings: PushSettings, task_override: int | None = None) -> int:
    """The budget of one device of ``platform``: the task's, else the platform's (0: none)."""
    if task_override is not None:
        return task_override
    return settings.budget_ios_per_hour if Platform(platform) == Platform.IOS else settings.budget_android_per_hour


def next_slot(accepted: Iterable[datetime], budget: int, now: datetime) -> datetime | None:
    """When the device may be pushed again: ``None`` for now, else the moment the oldest push
    that must leave the trailing hour has left it."""
    if budget <= 0:
        return None
    recent = sorted(t for t in accepted if t > now - WINDOW)  # a time ahead of ours counts too
    if len(recent) < budget:
        return None
    return recent[len(recent) - budget] + WINDOW


def schedule_rate_per_hour(interval_ms: int | None, cron_times: list[datetime] | None = None) -> float:
    """The most runs a schedule starts in any hour: from its interval, or from a list of
    upcoming cron times (the densest hour among them)."""
    if interval_ms:
        return 3_600_000 / interval_ms
    best = 0
    times = sorted(cron_times or [])
    start = 0
    for end, t in enumerate(times):
        while t - times[start] >= WINDOW:
            start += 1
        best = max(best, end - start + 1)
    return float(best)


def schedule_warning(rate_per_hour: float, platforms: Iterable[Platform], settings: PushSettings,
                     task_override: int | None) -> str | None:
    """A sentence when a schedule would push a device more often than its budget allows."""
    over = []
    for platform in platforms:
        budget = per_hour(platform, settings, task_override)
        if budget and rate_per_hour > budget + 1e-9:
            over.append(f"{platform.value} {budget}")
    if not over:
        return None
    return (f"target: the schedule starts up to {rate_per_hour:g} runs an hour, more than the push budget per device "
            f"({', '.join(over)} an hour): pushes beyond it are held until the budget allows them "
            "(target.pushesPerHour, BGTASKS_PUSH_BUDGET_IOS_PER_HOUR / _ANDROID_PER_HOUR)")
