"""Choosing a sensor's mechanism, the settings that force it, and the pure parts of the portable paths."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pydantic
import pytest

from bgtasks.settings import DaemonSettings, Settings
from triggers.constraints.host import HostSensors, SensorSettingError
from triggers.sensors import IdleSample, IdleSensor, InterfaceKind, NetworkSensor, PollWakeups, PowerSensor
from triggers.sensors._mechanism import MechanismUnavailable, choose
from triggers.sensors.idle import next_idle_state
from triggers.sensors.network import classify_by_name, psutil_name


def test_auto_takes_native_where_available_and_portable_otherwise() -> None:
    native = choose("network", "auto", "netlink", "poll", None)
    assert (native.mechanism, native.native) == ("netlink", True)
    portable = choose("network", "auto", "netlink", "poll", "no AF_NETLINK")
    assert (portable.mechanism, portable.native) == ("poll", False)
    assert "no AF_NETLINK" in portable.reason


def test_a_forced_native_mechanism_that_is_missing_raises_with_the_reason() -> None:
    with pytest.raises(MechanismUnavailable) as info:
        choose("power", "sysfs", "sysfs", "psutil", "/x is not a directory")
    assert (info.value.mechanism, info.value.portable, info.value.reason) == ("sysfs", "psutil",
                                                                                "/x is not a directory")
    assert choose("power", "psutil", "sysfs", "psutil", "/x is not a directory").mechanism == "psutil"
    with pytest.raises(ValueError, match="unknown mode"):
        choose("power", "battery", "sysfs", "psutil", None)


def test_a_generic_native_mode_reports_the_platform_mechanism() -> None:
    assert choose("file", "native", "native", "polling", None, "fsevents").mechanism == "fsevents"


def test_the_mode_settings_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BGTASKS_DAEMON_NETWORK_MODE", "poll")
    monkeypatch.setenv("BGTASKS_DAEMON_POWER_MODE", "psutil")
    monkeypatch.setenv("BGTASKS_DAEMON_IDLE_MODE", "cpu")
    monkeypatch.setenv("BGTASKS_DAEMON_FILE_OBSERVER", "polling")
    d = DaemonSettings()
    assert (d.network_mode, d.power_mode, d.idle_mode, d.file_observer) == ("poll", "psutil", "cpu", "polling")
    monkeypatch.setenv("BGTASKS_DAEMON_NETWORK_MODE", "wifi")
    with pytest.raises(pydantic.ValidationError):
        DaemonSettings()


def _settings(tmp_path: Path, **daemon: object) -> Settings:
    return Settings(home=tmp_path, daemon=DaemonSettings(**daemon))  # type: ignore[arg-type]


def test_host_sensors_honour_the_settings(tmp_path: Path) -> None:
    host = HostSensors(_settings(tmp_path, network_mode="poll", power_mode="psutil", idle_mode="cpu",
                                 network_portable_poll_s=2.5))
    assert host.mechanisms() == {"network": "poll", "power": "psutil", "idle": "cpu", "storage": "psutil"}
    wakeups = host.trackers["network"].sensor.open_wakeups()
    assert isinstance(wakeups, PollWakeups) and wakeups.interval_s == 2.5


def test_auto_falls_back_where_the_native_source_is_missing(tmp_path: Path) -> None:
    host = HostSensors(_settings(tmp_path, power_root=tmp_path / "none", sensors=["power"]))
    assert host.mechanisms() == {"power": "psutil"}


def test_a_forced_mechanism_the_host_lacks_names_its_setting(tmp_path: Path) -> None:
    with pytest.raises(SensorSettingError) as info:
        HostSensors(_settings(tmp_path, power_mode="sysfs", power_root=tmp_path / "none", sensors=["power"]))
    message = str(info.value)
    assert message.startswith("BGTASKS_DAEMON_POWER_MODE=sysfs, but ")
    assert str(tmp_path / "none") in message and "BGTASKS_DAEMON_POWER_MODE=auto (or psutil)" in message


def test_idle_without_psi(tmp_path: Path) -> None:
    with pytest.raises(MechanismUnavailable, match="no CPU pressure"):
        IdleSensor(mode="psi", proc=tmp_path)
    sensor = IdleSensor(mode="auto", proc=tmp_path)
    assert sensor.mechanism == "cpu"
    assert sensor.sample().psi_some_avg10 is None


def test_psutil_mode_never_reads_the_sysfs_tree(tmp_path: Path) -> None:
    sensor = PowerSensor(mode="psutil", root=tmp_path)
    assert sensor.mechanism == "psutil" and sensor.uevents is False
    assert isinstance(sensor.open_wakeups(), PollWakeups)


def test_poll_mode_needs_no_netlink() -> None:
    sensor = NetworkSensor(mode="poll", portable_poll_s=0.5)
    assert sensor.choice.reason == "forced"
    assert isinstance(sensor.open_wakeups(), PollWakeups)


def test_same_samples_same_decisions_while_there_is_no_pressure() -> None:
    """PSI below its threshold: the cpu path decides exactly as the psi path."""
    psi, cpu = None, None
    busy = total = 0.0
    for used in (50, 5, 5, 5, 5, 80, 2, 2, 2):
        busy, total = busy + used, total + 100
        psi = next_idle_state(psi, IdleSample(busy, total, psi_some_avg10=1.0))
        cpu = next_idle_state(cpu, IdleSample(busy, total, psi_some_avg10=None))
        assert (psi.idle, psi.streak, psi.cpu_percent) == (cpu.idle, cpu.streak, cpu.cpu_percent)


def test_contention_without_load_is_what_only_psi_sees() -> None:
    """A quiet CPU share under high pressure (a throttled cgroup): psi stays active, cpu goes idle."""
    psi, cpu = None, None
    busy = total = 0.0
    for _ in range(5):
        busy, total = busy + 5, total + 100
        psi = next_idle_state(psi, IdleSample(busy, total, psi_some_avg10=40.0))
        cpu = next_idle_state(cpu, IdleSample(busy, total, psi_some_avg10=None))
    assert psi is not None and cpu is not None
    assert (psi.idle, cpu.idle) == (False, True)


def test_windows_guid_names_are_joined_to_psutil_by_address() -> None:
    addrs = {"Wi-Fi": [SimpleNamespace(address="192.168.1.20")],
             "Ethernet": [SimpleNamespace(address="fe80::1%12"), SimpleNamespace(address="10.0.0.5")]}
    guid = "{2C7A5C4A-0000-4000-8000-000000000000}"
    assert psutil_name(guid, addrs.keys(), ["192.168.1.20"], addrs) == "Wi-Fi"
    assert psutil_name(guid, addrs.keys(), ["fe80::1%eth"], addrs) == "Ethernet"
    assert psutil_name("Ethernet", addrs.keys(), [], addrs) == "Ethernet"
    assert psutil_name(guid, addrs.keys(), ["172.16.0.1"], addrs) is None


@pytest.mark.parametrize(("name", "kind"), [
    ("lo0", InterfaceKind.LOOPBACK), ("Loopback Pseudo-Interface 1", InterfaceKind.LOOPBACK),
    ("utun3", InterfaceKind.VPN), ("ipsec0", InterfaceKind.VPN), ("pdp_ip0", InterfaceKind.CELLULAR),
    ("Wi-Fi", InterfaceKind.WIFI), ("WLAN 2", InterfaceKind.WIFI), ("Ethernet 3", InterfaceKind.ETHERNET),
    ("Cellular", InterfaceKind.CELLULAR), ("en0", InterfaceKind.OTHER), ("lol", InterfaceKind.OTHER),
])
def test_interface_class_from_the_name_where_there_is_no_sysfs(name: str, kind: InterfaceKind) -> None:
    assert classify_by_name(name) is kind


def test_the_host_snapshot_is_typed_and_holds_only_the_enabled_sensors(tmp_path: Path) -> None:
    from triggers.sensors import StorageSnapshot

    snap = HostSensors(_settings(tmp_path, sensors=["storage"])).snapshot()
    assert isinstance(snap.storage, StorageSnapshot) and snap.storage.path == str(tmp_path)
    assert snap.network is None and snap.power is None and snap.idle is None
    assert set(snap.to_json()) == {"storage"} and snap.to_json()["storage"]["free_bytes"] == snap.storage.free_bytes


def test_the_idle_reading_is_not_retaken_sooner_than_its_poll_interval(tmp_path: Path) -> None:
    """A CPU share over a few milliseconds is noise: the worker's two checks a moment apart
    (release, then submission) must see the same reading, not a fresh one each."""
    now = [1000.0]
    host = HostSensors(_settings(tmp_path, sensors=["idle", "storage"], idle_mode="cpu", idle_poll_s=30.0),
                       clock=lambda: now[0])
    sensor = host.trackers["idle"].sensor
    samples, sample = [], sensor.sample
    sensor.sample = lambda: samples.append(now[0]) or sample()  # type: ignore[method-assign]
    first = host.snapshot()
    now[0] += 1.0
    again = host.snapshot()
    assert samples == [1000.0] and again.idle is first.idle
    assert again.storage is not first.storage  # an instant reading is taken each time
    now[0] += 30.0
    host.snapshot()
    assert samples == [1000.0, 1031.0]
