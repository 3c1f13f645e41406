"""The netlink doorbell on real kernel uevents: subsystem matching and socket overflow (ENOBUFS).

A veth pair created and deleted in this namespace makes the kernel broadcast
``SUBSYSTEM=net`` uevents to every listener at once, so a second socket that
filters for ``power_supply`` has already received (and dropped) them by the time
the first one has rung.
"""

from __future__ import annotations

import select
import subprocess
import time
import uuid

from tests.netns import require_root_and_ip
from triggers.sensors._netlink import NETLINK_KOBJECT_UEVENT, UEVENT_KERNEL_GROUP, NetlinkDoorbell

DEADLINE_S = 30.0


def churn_veth(times: int = 1) -> None:
    tag = uuid.uuid4().hex[:8]
    for i in range(times):
        name = f"bu{tag}{i % 10}"
        subprocess.run(["ip", "link", "add", name, "type", "veth", "peer", "name", name + "p"], check=True,
                       timeout=30)
        subprocess.run(["ip", "link", "del", name], check=False, timeout=30)


def wait_ring(bell: NetlinkDoorbell) -> None:
    deadline = time.monotonic() + DEADLINE_S
    while time.monotonic() < deadline:
        select.select([bell], [], [], deadline - time.monotonic())
        if bell.drain():
            return
    raise AssertionError("the doorbell never rang")


def test_uevents_ring_only_for_the_wanted_subsystem() -> None:
    require_root_and_ip()
    net = NetlinkDoorbell(NETLINK_KOBJECT_UEVENT, UEVENT_KERNEL_GROUP, match=b"SUBSYSTEM=net")
    power = NetlinkDoorbell(NETLINK_KOBJECT_UEVENT, UEVENT_KERNEL_GROUP, match=b"SUBSYSTEM=power_supply")
    try:
        churn_veth()
        wait_ring(net)
        assert power.drain() is False
    finally:
        net.close()
        power.close()


def test_a_socket_overflow_rings_as_a_resync() -> None:
    require_root_and_ip()
    bell = NetlinkDoorbell(NETLINK_KOBJECT_UEVENT, UEVENT_KERNEL_GROUP, rcvbuf_bytes=1)  # the kernel's minimum
    try:
        churn_veth(20)  # ~80 uevents, never read meanwhile
        wait_ring(bell)
        assert bell.overflows >= 1
    finally:
        bell.close()
