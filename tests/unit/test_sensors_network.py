"""Interface classes from fake sysfs trees, the pure snapshot and diff, the /proc route fallback."""

from __future__ import annotations

from pathlib import Path

import pytest

from triggers.sensors import InterfaceKind, NetworkSnapshot, classify_interface
from triggers.sensors.network import _proc_default_routes, diff_network, network_state, nm_metered


def iface(root: Path, name: str, *, type: int = 1, uevent: str = "", dirs: tuple[str, ...] = (),
          files: tuple[str, ...] = ()) -> None:
    d = root / name
    d.mkdir(parents=True)
    (d / "type").write_text(f"{type}\n")
    (d / "uevent").write_text(f"INTERFACE={name}\nIFINDEX=3\n{uevent}")
    for sub in dirs:
        (d / sub).mkdir()
    for f in files:
        (d / f).write_text("0x1001\n")


@pytest.mark.parametrize(("name", "spec", "kind"), [
    ("wlan0", {"dirs": ("wireless",)}, InterfaceKind.WIFI),
    ("wlp2s0", {"dirs": ("phy80211",)}, InterfaceKind.WIFI),
    ("wlx1", {"uevent": "DEVTYPE=wlan\n"}, InterfaceKind.WIFI),
    ("wwan0", {"uevent": "DEVTYPE=wwan\n"}, InterfaceKind.CELLULAR),
    ("rmnet0", {"type": 519}, InterfaceKind.CELLULAR),
    ("tun0", {"type": 65534, "files": ("tun_flags",)}, InterfaceKind.VPN),
    ("tap0", {"files": ("tun_flags",)}, InterfaceKind.VPN),
    ("wg0", {"type": 65534, "uevent": "DEVTYPE=wireguard\n"}, InterfaceKind.VPN),
    ("lo", {"type": 772}, InterfaceKind.LOOPBACK),
    ("enp3s0", {}, InterfaceKind.ETHERNET),
    ("ppp0", {"type": 512}, InterfaceKind.OTHER),
])
def test_classify_interface(tmp_path: Path, name: str, spec: dict, kind: InterfaceKind) -> None:
    iface(tmp_path, name, **spec)
    assert classify_interface(name, tmp_path) is kind


def test_an_unknown_interface_is_other(tmp_path: Path) -> None:
    assert classify_interface("ghost0", tmp_path) is InterfaceKind.OTHER


def test_state_needs_a_route_and_a_running_link() -> None:
    assert network_state(None, False, None, None) == NetworkSnapshot(connected=False)
    down = network_state(("eth0", "10.0.0.1"), False, InterfaceKind.ETHERNET, None)
    assert (down.connected, down.interface) == (False, "eth0")
    up = network_state(("eth0", "10.0.0.1"), True, InterfaceKind.ETHERNET, None)
    assert up == NetworkSnapshot(True, "eth0", "10.0.0.1", InterfaceKind.ETHERNET, False)


def test_cellular_is_metered_unless_networkmanager_says_otherwise() -> None:
    assert network_state(("wwan0", None), True, InterfaceKind.CELLULAR, None).metered is True
    assert network_state(("wwan0", None), True, InterfaceKind.CELLULAR, False).metered is False
    assert network_state(("wlan0", "g"), True, InterfaceKind.WIFI, True).metered is True
    assert network_state(("wlan0", "g"), True, InterfaceKind.WIFI, None).metered is False


WIFI = NetworkSnapshot(True, "wlan0", "192.168.1.1", InterfaceKind.WIFI, False)
CELL = NetworkSnapshot(True, "wwan0", None, InterfaceKind.CELLULAR, True)
OFF = NetworkSnapshot(False)


def edges(*snapshots: NetworkSnapshot) -> list[list[str]]:
    return [[c.change for c in diff_network(a, b)] for a, b in zip((None, *snapshots), snapshots, strict=False)]


def test_diff_connect_disconnect_once() -> None:
    assert edges(OFF, WIFI, WIFI, OFF, OFF) == [[], ["connected"], [], ["disconnected"], []]
    connected = diff_network(OFF, WIFI)[0]
    assert (connected.event, connected.resource) == ("bgtasks.network.connected", "wlan0")
    assert connected.payload == {"interface": "wlan0", "kind": "wifi", "metered": False, "gateway": "192.168.1.1"}
    assert diff_network(WIFI, OFF)[0].payload == {"interface": "wlan0", "kind": "wifi"}


def test_diff_type_and_metered_changes_while_connected() -> None:
    assert edges(WIFI, CELL) == [[], ["type-changed", "metered-changed"]]
    change = diff_network(WIFI, CELL)[0]
    assert change.payload == {"interface": "wwan0", "kind": "cellular", "previous_kind": "wifi"}
    assert diff_network(WIFI, CELL)[1].payload == {"interface": "wwan0", "metered": True}
    # connecting straight to cellular: one event that carries kind and metered
    assert edges(OFF, CELL) == [[], ["connected"]]


def test_diff_of_a_link_without_carrier() -> None:
    no_carrier = NetworkSnapshot(False, "eth0", "10.0.0.1", InterfaceKind.ETHERNET, False)
    assert edges(OFF, no_carrier) == [[], []]


def test_proc_route_fallback_finds_gateway_less_defaults(tmp_path: Path) -> None:
    (tmp_path / "route").write_text(
        "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n"
        "eth0\t0000A8C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n"
        "wg0\t00000000\t00000000\t0001\t0\t0\t50\t00000000\t0\t0\t0\n"
        "bad0\t00000000\t00000000\t0201\t0\t0\t10\t00000000\t0\t0\t0\n")
    (tmp_path / "ipv6_route").write_text(
        "00000000000000000000000000000000 00 00000000000000000000000000000000 00 "
        "00000000000000000000000000000000 00000400 00000000 00000000 00000001     wwan0\n"
        "00000000000000000000000000000000 00 00000000000000000000000000000000 00 "
        "00000000000000000000000000000000 ffffffff 00000001 00000000 00200200       lo\n")
    assert _proc_default_routes(tmp_path) == [(50, "wg0"), (1024, "wwan0")]
    assert _proc_default_routes(tmp_path / "missing") == []


def test_no_system_bus_means_no_networkmanager_answer(tmp_path: Path) -> None:
    assert nm_metered(bus_socket=tmp_path / "system_bus_socket") is None
