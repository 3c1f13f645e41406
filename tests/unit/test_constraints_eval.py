"""The pure constraint evaluation: (constraints, snapshot) -> what fails, and why."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from bgtasks.models import TaskConstraints, field_errors
from triggers.constraints import HostSnapshot, describe, unmet
from bgtasks.stored import due_tag
from triggers.constraints.waiting import FAR, deadline_of, due_of, original_due, release_order, waiting_until

from triggers.sensors import IdleState, InterfaceKind, NetworkSnapshot, PowerState, StorageSnapshot

WIFI = NetworkSnapshot(connected=True, interface="wlan0", kind=InterfaceKind.WIFI, metered=False)
LTE = NetworkSnapshot(connected=True, interface="wwan0", kind=InterfaceKind.CELLULAR, metered=True)
NONE = NetworkSnapshot(connected=False)
PLUGGED = PowerState(has_battery=True, percent=80, plugged=True, charging=True, battery_low=False)
LOW = PowerState(has_battery=True, percent=12, plugged=False, charging=False, battery_low=True)


def idle(is_idle: bool, cpu: float | None = None) -> IdleState:
    return IdleState(idle=is_idle, cpu_percent=cpu, psi_some_avg10=None, user_idle_s=None, streak=0,
                     cpu_busy_s=0.0, cpu_total_s=0.0)


def names(cons: dict[str, Any], snap: dict[str, Any]) -> list[str]:
    return [u.constraint for u in unmet(TaskConstraints.model_validate(cons), HostSnapshot(**snap))]


@pytest.mark.parametrize(
    ("cons", "snap", "failing"),
    [
        ({}, {}, []),
        ({"requiresNetwork": True}, {"network": WIFI}, []),
        ({"requiresNetwork": True}, {"network": NONE}, ["requiresNetwork"]),
        ({"requiresNetwork": True}, {}, ["requiresNetwork"]),  # unknown fails
        ({"requiresWifi": True}, {"network": LTE}, ["requiresWifi"]),
        ({"requiresWifi": True}, {"network": WIFI}, []),
        ({"networkType": "unmetered"}, {"network": LTE}, ["networkType=unmetered"]),
        ({"networkType": "unmetered"}, {"network": WIFI}, []),
        ({"networkType": "metered"}, {"network": LTE}, []),
        ({"networkType": "metered"}, {"network": WIFI}, ["networkType=metered"]),
        ({"networkType": "not-roaming"}, {"network": LTE}, []),
        ({"networkType": "not-required"}, {"network": NONE}, []),
        ({"requiresCharging": True}, {"power": LOW}, ["requiresCharging"]),
        ({"requiresCharging": True, "requiresBatteryNotLow": True}, {"power": PLUGGED}, []),
        ({"requiresBatteryNotLow": True}, {"power": LOW}, ["requiresBatteryNotLow"]),
        ({"requiresDeviceIdle": True}, {"idle": idle(False, 55.0)}, ["requiresDeviceIdle"]),
        ({"requiresDeviceIdle": True}, {"idle": idle(True)}, []),
        ({"requiresStorageNotLow": True}, {"storage": StorageSnapshot(path="/", free_bytes=2**20, total_bytes=2**30, low=True)},
         ["requiresStorageNotLow"]),
        ({"requiresNetwork": True, "requiresCharging": True}, {"network": NONE, "power": LOW},
         ["requiresNetwork", "requiresCharging"]),
    ],
)
def test_unmet(cons: dict[str, Any], snap: dict[str, Any], failing: list[str]) -> None:
    assert names(cons, snap) == failing


def test_the_message_names_the_constraint_and_what_was_observed() -> None:
    text = describe(unmet(TaskConstraints(requires_network=True, requires_charging=True),
                          HostSnapshot(network=NONE, power=PowerState(has_battery=True, percent=40, plugged=False,
                                                                      charging=False, battery_low=False))))
    assert text == "Waiting for requiresNetwork (no default route); requiresCharging (unplugged, battery 40%)"


@pytest.mark.parametrize(
    ("cons", "field"),
    [
        ({"requiresWifi": True, "networkType": "metered"}, "networkType"),
        ({"requiresWifi": True, "networkType": "cellular"}, "networkType"),
        ({"requiresNetwork": False, "requiresWifi": True}, "requiresNetwork"),
        ({"networkType": "satellite"}, "networkType"),
        ({"constraintDeadline": -1}, "constraintDeadline"),
        ({"onDeadline": "retry"}, "onDeadline"),
    ],
)
def test_contradictions_and_bad_values_name_the_field(cons: dict[str, Any], field: str) -> None:
    with pytest.raises(ValidationError) as err:
        TaskConstraints.model_validate(cons)
    assert field in [e["field"] for e in field_errors(err.value)]


def test_waiting_times_round_trip() -> None:
    from datetime import UTC, datetime, timedelta

    due = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)
    cons = TaskConstraints(requires_charging=True)
    assert waiting_until(due, cons) == due + FAR and original_due(due + FAR) == due
    with_deadline = TaskConstraints(requires_charging=True, constraint_deadline=60_000)
    assert waiting_until(due, with_deadline) == deadline_of(with_deadline, due) == due + timedelta(minutes=1)
    tags = ["other", due_tag(due)]
    assert due_of(tags, datetime.now(UTC)) == due
    assert original_due(due + timedelta(minutes=1), tags) == due  # released at its original due time
    assert sorted([("low", "1"), ("high", "3"), ("normal", "2")], key=lambda r: release_order(*r)) == [
        ("high", "3"), ("normal", "2"), ("low", "1")]


def test_releasable_picks_the_runs_whose_constraints_hold_in_priority_order() -> None:
    from datetime import UTC, datetime

    from triggers.constraints.waiting import releasable

    due = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)

    def run(run_id: str, queue: str, constraints: dict[str, Any]) -> dict[str, Any]:
        return {"id": run_id, "work_queue_name": queue, "tags": [due_tag(due)],
                "parameters": {"task": {"name": run_id, "handler": "demo", "schedule": {"type": "one-time"},
                                        "constraints": constraints}},
                "state": {"state_details": {"scheduled_time": (due + FAR).isoformat()}}}

    runs = [run("low", "low", {"requiresCharging": True}), run("net", "high", {"requiresNetwork": True}),
            run("high", "high", {"requiresCharging": True}), run("normal", "normal", {"requiresCharging": True})]
    released = releasable(runs, HostSnapshot(power=PLUGGED, network=NONE), "released")
    assert [run_id for run_id, _ in released] == ["high", "normal", "low"]  # "net" still waits
    body = released[0][1]
    assert body["force"] is True and body["state"]["type"] == "SCHEDULED" and body["state"]["message"] == "released"
    assert datetime.fromisoformat(body["state"]["state_details"]["scheduled_time"]) == due
