"""Checks of a device target at task creation: FCM's four collapse keys, and the push budget.

FCM keeps at most four distinct collapse keys per device ("If you exceed this
number, FCM only keeps four collapse keys, with no guarantees about which ones
are kept"): a fifth would make FCM drop some task's pending push at random. So
a new task whose collapse key would be the fifth distinct one for any FCM
device its target reaches today (counting the collapse keys of the live tasks
whose targets reach the same device) is refused, naming the device and the
four keys. Devices registered later are not re-checked: the rule holds for the
devices a target names at creation.

A schedule that would push a device more often than its budget allows is not
refused (holds are the budget's purpose) but warned about.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from bgtasks.errors import FieldProblem
from bgtasks.models import CreateTaskOptions, TaskTarget, TaskType
from bgtasks.settings import PushSettings
from mobile_push import budget
from mobile_push.registry import DeviceRegistry
from mobile_push.types import Platform, Transport

#: FCM's limit of distinct collapse keys per device.
FCM_COLLAPSE_KEYS = 4


async def check_collapse_keys(registry: DeviceRegistry, new: TaskTarget,
                              live: Iterable[tuple[str, TaskTarget]]) -> None:
    """Refuse ``new`` (FieldProblem on ``target.collapseKey``) when its key would be the fifth
    distinct one of an FCM device; ``live`` is ``(task name, target)`` of the live tasks."""
    if new.collapse_key is None:
        return
    reached, _, _ = await registry.resolve(new.device_ids, new.labels, new.platform)
    fcm = {d.id for d in reached if d.transport == Transport.FCM}
    if not fcm:
        return
    keys: dict[str, dict[str, str]] = {i: {} for i in fcm}  # device -> key -> a task using it
    for name, target in live:
        if target.collapse_key is None or target.collapse_key == new.collapse_key:
            continue
        devices, _, _ = await registry.resolve(target.device_ids, target.labels, target.platform)
        for d in devices:
            if d.id in keys:
                keys[d.id].setdefault(target.collapse_key, name)
    for device_id in sorted(keys):
        used = keys[device_id]
        if len(used) >= FCM_COLLAPSE_KEYS:
            listed = ", ".join(f"{k!r} ({task})" for k, task in sorted(used.items()))
            raise FieldProblem("target.collapseKey", (
                f"device {device_id} already gets {len(used)} other collapse keys through FCM: {listed}; FCM "
                f"keeps at most {FCM_COLLAPSE_KEYS} per device and drops the others' pending pushes at random: "
                "reuse one of them or leave collapseKey out"))


def schedule_rate(opts: CreateTaskOptions, now: datetime) -> float:
    """The most runs the task's schedule starts in an hour (0 for one-time and triggered tasks)."""
    s = opts.schedule
    if s.type != TaskType.PERIODIC:
        return 0.0
    if s.cron is None:
        return budget.schedule_rate_per_hour(s.interval)
    from cronsim import CronSim, CronSimError

    if len(s.cron.split()) != 5:
        return 0.0  # macros and seconds/years fields read otherwise by cronsim: no warning, never a wrong one
    try:
        it = CronSim(s.cron, now.astimezone(ZoneInfo(s.timezone or "UTC")))
        times = []
        for t in it:  # a week of occurrences at most, and no more than 2,000
            if t > now + timedelta(days=7) or len(times) >= 2000:
                break
            times.append(t.astimezone(UTC))
    except (CronSimError, ValueError):
        return 0.0  # Prefect accepted it (the model checked); only the warning is skipped
    return budget.schedule_rate_per_hour(None, times)


def budget_warnings(opts: CreateTaskOptions, settings: PushSettings, now: datetime) -> list[str]:
    """A warning when the schedule would exceed a target device's push budget."""
    target = opts.target
    if target is None:
        return []
    platforms = [Platform(target.platform)] if target.platform else [Platform.IOS, Platform.ANDROID]
    warning = budget.schedule_warning(schedule_rate(opts, now), platforms, settings, target.pushes_per_hour)
    return [warning] if warning else []
