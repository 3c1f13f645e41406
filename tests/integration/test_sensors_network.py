"""The network sensor against real netlink, in network namespaces the test makes and deletes.

The sensor runs as ``ip netns exec <ns> python -m triggers.sensors network``
(see tests/netns.py): every source it reads (netlink socket, /proc/net, psutil,
/sys remounted by ``ip netns exec``) then sees only the test's namespace. The
safety poll is an hour, so every event here was rung by the netlink doorbell.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.netns import NetnsHost, SensorProcess, netns_host, require_root_and_ip

POLL_S = "3600"


@pytest.fixture
def host() -> Iterator[NetnsHost]:
    require_root_and_ip()
    with netns_host() as h:
        yield h


@pytest.fixture
def sensor(host: NetnsHost) -> Iterator[SensorProcess]:
    proc = SensorProcess(["network", "--poll-s", POLL_S], wrap=host.exec_argv)
    try:
        yield proc
    finally:
        proc.kill()


def names(lines: list[dict]) -> list[str]:
    return [line["event"] for line in lines]


def test_route_up_and_down_emit_connected_then_disconnected_once(host: NetnsHost, sensor: SensorProcess) -> None:
    ready = sensor.ready()
    assert ready["snapshot"]["connected"] is False

    host.links_up()
    host.ip("addr", "add", "10.77.0.2/24", "dev", host.ifname)
    host.ip("route", "add", "default", "via", "10.77.0.1", "dev", host.ifname)
    connected = sensor.wait_event("bgtasks.network.connected")
    assert connected["resource"] == host.ifname
    assert connected["payload"] == {"interface": host.ifname, "kind": "ethernet", "metered": False,
                                    "gateway": "10.77.0.1"}

    host.ip("route", "del", "default")
    disconnected = sensor.wait_event("bgtasks.network.disconnected")
    assert disconnected["payload"]["interface"] == host.ifname

    # stop() takes a last snapshot before "stopped": nothing else was pending.
    assert names(sensor.stop()) == ["bgtasks.network.connected", "bgtasks.network.disconnected"]


def test_losing_the_carrier_disconnects_although_the_route_stays(host: NetnsHost, sensor: SensorProcess) -> None:
    host.links_up()
    host.ip("addr", "add", "10.77.1.2/24", "dev", host.ifname)
    host.ip("route", "add", "default", "via", "10.77.1.1", "dev", host.ifname)
    sensor.ready()
    # the baseline may or may not have seen the route: wait for the state, not for an edge
    if not sensor.lines[-1]["snapshot"]["connected"]:
        sensor.wait_event("bgtasks.network.connected")

    host.peer_ip("link", "set", host.peer_ifname, "down")  # the host's end loses its carrier
    sensor.wait_event("bgtasks.network.disconnected")
    assert "linkdown" in host.ip("route", "show", "default")  # the route is still there
    host.peer_ip("link", "set", host.peer_ifname, "up")
    sensor.wait_event("bgtasks.network.connected")
    events = names(sensor.stop())
    assert events[-2:] == ["bgtasks.network.disconnected", "bgtasks.network.connected"]
    assert events.count("bgtasks.network.disconnected") == 1


def test_a_gateway_less_default_route_counts(host: NetnsHost, sensor: SensorProcess) -> None:
    """``default dev X`` (WireGuard, raw-IP modems): netifaces does not list it; /proc/net/route does."""
    sensor.ready()
    host.links_up()
    host.ip("addr", "add", "10.77.2.2/24", "dev", host.ifname)
    host.ip("route", "add", "default", "dev", host.ifname)
    connected = sensor.wait_event("bgtasks.network.connected")
    assert connected["payload"]["interface"] == host.ifname
    assert connected["payload"]["gateway"] is None
    assert names(sensor.stop()) == ["bgtasks.network.connected"]
