"""The power sensor reading a fake /sys/class/power_supply tree that the test rewrites."""

from __future__ import annotations

import asyncio
from pathlib import Path

from triggers.sensors import Change, PowerSensor, Tracker

DEADLINE_S = 30.0


def supply(root: Path, name: str, **attrs: str | int) -> None:
    d = root / name
    d.mkdir(parents=True, exist_ok=True)
    for key, value in attrs.items():
        (d / key).write_text(f"{value}\n")


def laptop(root: Path, percent: int, plugged: bool) -> None:
    supply(root, "AC", type="Mains", online=int(plugged))
    supply(root, "BAT0", type="Battery", present=1, scope="System", capacity=percent,
           status="Charging" if plugged and percent < 100 else "Discharging")
    # a wireless mouse: a battery of scope Device, low and discharging; must be ignored
    supply(root, "hidpp_battery_0", type="Battery", scope="Device", capacity=5, status="Discharging")


def events(changes: list[Change]) -> list[str]:
    return [c.event for c in changes]


def test_the_issue_sequence_step_by_step(tmp_path: Path) -> None:
    laptop(tmp_path, 50, plugged=True)
    tracker = Tracker(PowerSensor(root=tmp_path))
    base = tracker.prime()
    assert (base.percent, base.plugged, base.charging, base.battery_low) == (50, True, True, False)

    laptop(tmp_path, 12, plugged=False)
    changes = tracker.step()
    assert events(changes) == ["bgtasks.power.unplugged", "bgtasks.power.charging-stopped",
                               "bgtasks.power.battery-low"]
    assert changes[-1].payload == {"percent": 12, "plugged": False, "charging": False}
    assert tracker.step() == []  # still 12%: battery-low was emitted once

    laptop(tmp_path, 20, plugged=False)
    assert tracker.step() == []  # hysteresis
    laptop(tmp_path, 21, plugged=False)
    assert events(tracker.step()) == ["bgtasks.power.battery-ok"]

    laptop(tmp_path, 10, plugged=False)
    assert events(tracker.step()) == ["bgtasks.power.battery-low"]
    laptop(tmp_path, 10, plugged=True)
    assert events(tracker.step()) == ["bgtasks.power.plugged", "bgtasks.power.charging",
                                      "bgtasks.power.battery-ok"]


async def test_the_poll_reports_plugging_and_unplugging(tmp_path: Path) -> None:
    laptop(tmp_path, 80, plugged=False)
    tracker = Tracker(PowerSensor(root=tmp_path, poll_s=0.05))
    tracker.prime()
    queue: asyncio.Queue[Change] = asyncio.Queue()
    stop = asyncio.Event()
    task = asyncio.create_task(tracker.watch(queue.put_nowait, stop))
    try:
        laptop(tmp_path, 80, plugged=True)
        assert (await asyncio.wait_for(queue.get(), DEADLINE_S)).event == "bgtasks.power.plugged"
        assert (await asyncio.wait_for(queue.get(), DEADLINE_S)).event == "bgtasks.power.charging"
        laptop(tmp_path, 80, plugged=False)
        assert (await asyncio.wait_for(queue.get(), DEADLINE_S)).event == "bgtasks.power.unplugged"
        assert (await asyncio.wait_for(queue.get(), DEADLINE_S)).event == "bgtasks.power.charging-stopped"
    finally:
        stop.set()
        await asyncio.wait_for(task, DEADLINE_S)
    assert queue.empty()


def test_a_desktop_without_battery_is_plugged_and_never_low(tmp_path: Path) -> None:
    supply(tmp_path, "hidpp_battery_0", type="Battery", scope="Device", capacity=3, status="Discharging")
    state = PowerSensor(root=tmp_path).snapshot()
    assert (state.has_battery, state.plugged, state.battery_low, state.percent) == (False, True, False, None)
