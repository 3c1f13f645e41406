"""The shared sensor interface: Change, Tracker, PollWakeups, and the pinned public surface."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass

import pytest

import triggers.sensors as sensors
from triggers.sensors import Change, PollWakeups, Tracker, Wakeups


def test_the_public_surface_is_pinned() -> None:
    assert sorted(sensors.__all__) == [
        "Batch", "Change", "Debouncer", "Emit", "FileEventKind", "FileRule", "FileSensor", "IdleSample",
        "IdleSensor", "IdleState", "IdleThresholds", "InterfaceKind", "NetworkSensor", "NetworkSnapshot",
        "PollWakeups", "PowerReading", "PowerSensor", "PowerState", "Sensor", "StateSensor", "StorageSensor",
        "StorageSnapshot", "Tracker", "Wakeups", "classify_interface", "low_threshold_bytes", "next_idle_state",
        "next_power_state", "read_power_supply", "storage_low",
    ]


def test_a_change_names_its_event_and_serialises() -> None:
    change = Change("network", "connected", "wlan0", {"kind": sensors.InterfaceKind.WIFI, "metered": False})
    assert change.event == "bgtasks.network.connected"
    assert json.loads(json.dumps(change.to_dict())) == {
        "event": "bgtasks.network.connected", "resource": "wlan0", "payload": {"kind": "wifi", "metered": False}}
    assert hash(change) == hash(Change("network", "connected", "wlan0", {}))


@dataclass(frozen=True)
class Level:
    value: int


class ScriptedSensor:
    """An honest in-memory state sensor: its 'machine' is a list of readings."""

    name = "scripted"

    def __init__(self, readings: list[int]) -> None:
        self.readings = readings

    def snapshot(self, previous: Level | None = None) -> Level:
        return Level(self.readings.pop(0) if len(self.readings) > 1 else self.readings[0])

    def diff(self, old: Level | None, new: Level) -> list[Change]:
        if old is None or old == new:
            return []
        return [Change("scripted", "up" if new.value > old.value else "down", "x", {"value": new.value})]

    def open_wakeups(self) -> Wakeups:
        return PollWakeups(0.001)

    async def watch(self, emit, stop) -> None:  # type: ignore[no-untyped-def]
        await Tracker(self).watch(emit, stop)


def test_tracker_steps_emit_edges_only_and_the_baseline_nothing() -> None:
    tracker = Tracker(ScriptedSensor([1, 1, 2, 2, 1]))
    assert tracker.step() == []
    assert tracker.step() == []
    assert [c.change for c in tracker.step()] == ["up"]
    assert tracker.step() == []
    assert [c.change for c in tracker.step()] == ["down"]
    assert tracker.current == Level(1)


@pytest.mark.parametrize("asynchronous", [False, True])
async def test_tracker_watch_delivers_to_sync_and_async_emitters(asynchronous: bool) -> None:
    got: list[Change] = []
    stop = asyncio.Event()

    def record(change: Change) -> None:
        got.append(change)
        if len(got) == 2:
            stop.set()

    async def arecord(change: Change) -> None:
        record(change)

    await asyncio.wait_for(Tracker(ScriptedSensor([1, 5, 2])).watch(arecord if asynchronous else record, stop), 30)
    assert [c.change for c in got] == ["up", "down"]


async def test_tracker_watch_survives_a_failing_snapshot() -> None:
    class Flaky(ScriptedSensor):
        calls = 0

        def snapshot(self, previous: Level | None = None) -> Level:
            self.calls += 1
            if self.calls == 2:
                raise OSError("transient")
            return super().snapshot(previous)

    got: list[Change] = []
    stop = asyncio.Event()

    def record(change: Change) -> None:
        got.append(change)
        stop.set()

    await asyncio.wait_for(Tracker(Flaky([1, 3])).watch(record, stop), 30)
    assert [c.change for c in got] == ["up"]


async def test_poll_wakeups_end_when_stop_is_set() -> None:
    stop = asyncio.Event()
    stop.set()
    assert await PollWakeups(3600).wait(stop) is False
