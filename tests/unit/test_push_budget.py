"""The push budget's arithmetic, the schedule warning, the feedback webhook's signature and
FCM's analytics label (pure functions; the integration tests run them against a worker)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from bgtasks.models import CreateTaskOptions
from bgtasks.settings import PushSettings
from mobile_push import budget
from mobile_push.dispatch import analytics_label_for
from mobile_push.feedback import sign, verify
from mobile_push.target_checks import budget_warnings, schedule_rate
from mobile_push.types import Platform

NOW = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)


def ago(minutes: float) -> datetime:
    return NOW - timedelta(minutes=minutes)


def test_a_device_under_its_budget_may_be_pushed_now() -> None:
    assert budget.next_slot([ago(50), ago(10)], 3, NOW) is None
    assert budget.next_slot([], 1, NOW) is None


def test_a_spent_budget_frees_up_when_the_oldest_push_in_the_hour_leaves_it() -> None:
    assert budget.next_slot([ago(10), ago(50), ago(30)], 3, NOW) == ago(50) + timedelta(hours=1)
    # Two over: the second oldest of the hour must leave too.
    assert budget.next_slot([ago(55), ago(45), ago(30), ago(10)], 2, NOW) == ago(30) + timedelta(hours=1)


def test_pushes_older_than_an_hour_do_not_count_and_zero_means_no_budget() -> None:
    assert budget.next_slot([ago(61), ago(70), ago(90)], 1, NOW) is None
    assert budget.next_slot([ago(1)] * 100, 0, NOW) is None


def test_the_budget_is_the_tasks_else_the_platforms() -> None:
    s = PushSettings(budget_ios_per_hour=3, budget_android_per_hour=20)
    assert budget.per_hour(Platform.IOS, s) == 3 and budget.per_hour("android", s) == 20
    assert budget.per_hour(Platform.IOS, s, task_override=6) == 6
    assert budget.per_hour(Platform.ANDROID, s, task_override=0) == 0


def opts(schedule: dict, target: dict | None = None) -> CreateTaskOptions:
    return CreateTaskOptions.model_validate({"name": "t", "schedule": schedule,
                                             "target": target or {"platform": "ios"}})


def test_a_schedules_densest_hour_is_measured_for_intervals_and_cron() -> None:
    assert schedule_rate(opts({"type": "periodic", "interval": 600_000}), NOW) == 6
    assert schedule_rate(opts({"type": "periodic", "cron": "*/15 * * * *"}), NOW) == 4
    # Nightly at 02:00 and 02:30: two in one hour, though only two a day.
    assert schedule_rate(opts({"type": "periodic", "cron": "0,30 2 * * *"}), NOW) == 2
    assert schedule_rate(opts({"type": "one-time"}), NOW) == 0
    # Expressions Prefect accepts but cronsim reads otherwise or not at all: no warning, no error.
    for cron in ("@hourly", "0 */5 * * * *", "0 0 * * * * 2099"):
        assert schedule_rate(opts({"type": "periodic", "cron": cron}), NOW) == 0


def test_a_schedule_over_a_platforms_budget_warns_and_names_it() -> None:
    s = PushSettings(budget_ios_per_hour=3, budget_android_per_hour=20)
    every_10 = {"type": "periodic", "interval": 600_000}
    [warning] = budget_warnings(opts(every_10), s, NOW)
    assert "6 runs an hour" in warning and "ios 3" in warning and "android" not in warning
    assert budget_warnings(opts(every_10, {"platform": "android"}), s, NOW) == []
    [both] = budget_warnings(opts({"type": "periodic", "interval": 60_000}, {"labels": ["all"]}), s, NOW)
    assert "ios 3" in both and "android 20" in both
    assert budget_warnings(opts(every_10, {"platform": "ios", "pushesPerHour": 6}), s, NOW) == []
    assert budget_warnings(opts(every_10, {"platform": "ios", "pushesPerHour": 0}), s, NOW) == []


def test_the_feedback_signature_verifies_only_with_the_secret_the_body_and_a_recent_time() -> None:
    body = b'{"event":"device.invalid"}'
    header = sign("s3cret", body, 1_000_000)
    assert verify("s3cret", body, header, now=1_000_010)
    assert not verify("other", body, header, now=1_000_010)
    assert not verify("s3cret", body + b" ", header, now=1_000_010)
    assert not verify("s3cret", body, header, now=1_000_000 + 3600)  # a replayed old call
    assert not verify("s3cret", body, "v1=abc", now=1_000_000)


def test_the_feedback_url_needs_its_secret() -> None:
    with pytest.raises(ValueError, match="BGTASKS_PUSH_FEEDBACK_SECRET"):
        PushSettings(feedback_url="https://backend.example/hooks/push")
    with pytest.raises(ValueError, match="http"):
        PushSettings(feedback_url="ftp://x", feedback_secret="k")


def test_the_analytics_label_is_the_task_name_in_fcms_alphabet() -> None:
    assert analytics_label_for("nightly-sync_2.0") == "nightly-sync_2.0"
    assert analytics_label_for("Sync photos (beta)") == "Sync-photos--beta-"
    assert len(analytics_label_for("x" * 100)) == 50


def test_a_run_without_a_timeout_waits_as_long_as_its_slowest_platform_needs() -> None:
    """iOS runs longer work in a BGProcessingTask (idle and charging): its wait is its own."""
    from mobile_push.dispatch import report_wait_s

    push = PushSettings(report_wait_s=600, report_wait_ios_s=14_400)
    assert report_wait_s(push, {Platform.ANDROID}) == 600
    assert report_wait_s(push, {Platform.IOS}) == 14_400
    assert report_wait_s(push, {Platform.ANDROID, Platform.IOS}) == 14_400
    assert report_wait_s(push, set()) == 600  # no device reached: nothing to wait for long
