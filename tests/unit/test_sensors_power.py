"""Battery-low hysteresis (pure) and the sysfs reader on fake trees."""

from __future__ import annotations

from pathlib import Path

import pytest

from triggers.sensors import PowerReading, PowerState, next_power_state, read_power_supply
from triggers.sensors.power import diff_power


def reading(percent: float, plugged: bool, charging: bool | None = None) -> PowerReading:
    return PowerReading(True, percent, plugged, plugged if charging is None else charging)


def run(*readings: PowerReading) -> list[list[str]]:
    state: PowerState | None = None
    out = []
    for r in readings:
        new = next_power_state(state, r)
        out.append([c.change for c in diff_power(state, new)])
        state = new
    return out


def test_the_issues_sequence() -> None:
    assert run(reading(50, True), reading(12, False), reading(12, False), reading(20, False),
               reading(21, False)) == [
        [], ["unplugged", "charging-stopped", "battery-low"], [], [], ["battery-ok"]]


def test_plugging_in_clears_low_at_any_level() -> None:
    assert run(reading(30, False), reading(15, False), reading(5, True)) == [
        [], ["battery-low"], ["plugged", "charging", "battery-ok"]]


def test_low_needs_15_or_less_while_unplugged() -> None:
    assert run(reading(40, False), reading(16, False), reading(15.5, False), reading(15, False)) == [
        [], [], [], ["battery-low"]]
    assert next_power_state(None, reading(10, True)).battery_low is False


def test_a_start_while_low_is_the_baseline_and_emits_nothing() -> None:
    state = next_power_state(None, reading(10, False))
    assert state.battery_low is True
    assert diff_power(None, state) == []


def test_thresholds_are_parameters() -> None:
    low = next_power_state(None, reading(25, False), low_percent=30, hysteresis_percent=10)
    assert low.battery_low
    assert next_power_state(low, reading(40, False), 30, 10).battery_low
    assert not next_power_state(low, reading(41, False), 30, 10).battery_low


def test_no_battery_is_plugged_and_not_low() -> None:
    state = next_power_state(None, PowerReading(False, None, True, False))
    assert (state.plugged, state.battery_low) == (True, False)


def test_payloads_carry_the_new_state() -> None:
    changes = diff_power(next_power_state(None, reading(50, True)), next_power_state(None, reading(49, False)))
    assert {c.event for c in changes} == {"bgtasks.power.unplugged", "bgtasks.power.charging-stopped"}
    assert all(c.payload == {"percent": 49, "plugged": False, "charging": False} for c in changes)
    assert all(c.resource == "power" for c in changes)


def supply(root: Path, name: str, **attrs: object) -> None:
    d = root / name
    d.mkdir(parents=True)
    for key, value in attrs.items():
        (d / key).write_text(f"{value}\n")


def test_sysfs_ignores_peripheral_batteries_and_reads_the_adapter(tmp_path: Path) -> None:
    supply(tmp_path, "AC", type="Mains", online=1)
    supply(tmp_path, "BAT0", type="Battery", scope="System", capacity=64, status="Not charging")
    supply(tmp_path, "hid-mouse", type="Battery", scope="Device", capacity=3, status="Discharging")
    assert read_power_supply(tmp_path) == PowerReading(True, 64.0, True, False)


def test_sysfs_two_batteries_are_weighted_by_energy(tmp_path: Path) -> None:
    supply(tmp_path, "BAT0", type="Battery", energy_now=10_000, energy_full=20_000, status="Discharging")
    supply(tmp_path, "BAT1", type="Battery", energy_now=60_000, energy_full=80_000, status="Discharging")
    supply(tmp_path, "ADP1", type="USB", online=0)
    assert read_power_supply(tmp_path) == PowerReading(True, 70.0, False, False)


@pytest.mark.parametrize(("status", "plugged", "charging"), [
    ("Charging", True, True), ("Full", True, False), ("Discharging", False, False), ("Unknown", False, False)])
def test_sysfs_without_adapters_infers_plugged_from_the_status(tmp_path: Path, status: str, plugged: bool,
                                                               charging: bool) -> None:
    supply(tmp_path, "battery", type="Battery", charge_now=500, charge_full=1000, status=status)
    assert read_power_supply(tmp_path) == PowerReading(True, 50.0, plugged, charging)


def test_sysfs_skips_absent_batteries_and_missing_roots(tmp_path: Path) -> None:
    supply(tmp_path, "BAT0", type="Battery", present=0, capacity=0, status="Unknown")
    assert read_power_supply(tmp_path) == PowerReading(False, None, True, False)
    assert read_power_supply(tmp_path / "nope") is None
