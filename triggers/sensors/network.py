"""Network sensor: connected, interface class, metered.

Connected means a default route whose interface is running: netifaces names
the default gateway, psutil's ``net_if_stats()[ifname].isup`` (``IFF_RUNNING``,
so carrier) says whether its link works; netifaces alone still reports the
default route of a link that has lost its carrier. netifaces only lists
default routes *with a gateway*, so a gateway-less default route
(``default dev wg0``, ``default dev wwan0`` on raw-IP modems) is read from
``/proc/net/route`` and ``/proc/net/ipv6_route`` as a fallback.

Change detection (``mode``): ``netlink``, the native path on Linux, uses an
rtnetlink socket (link, IPv4/IPv6 address and route groups) as a doorbell: any
message (or ``ENOBUFS``) makes the sensor settle a few milliseconds, drain and
re-snapshot; a slow poll (``poll_s``) is the safety net. ``poll``, the portable
path (macOS, Windows, a Linux sandbox without ``AF_NETLINK``), re-snapshots
every ``portable_poll_s``: the same reading, only later (half the interval on
average) and blind to a state that comes and goes between two polls.
``auto`` picks netlink where a socket can be opened (see
:mod:`triggers.sensors._mechanism`).

Portability of the reading itself: netifaces and psutil exist everywhere.
netifaces names Windows adapters by GUID and psutil by friendly name, so the
gateway's interface is matched to psutil's by a shared address when the names
differ (:func:`psutil_name`). Where there is no sysfs (macOS, Windows) the
interface class is guessed from the name (:func:`classify_by_name`), and the
``/proc/net`` route fallback finds nothing.

Network namespaces: every source here reads the namespace of the *process*
(``/proc/net`` is ``/proc/self/net``, psutil lists interfaces from
``/proc/net/dev``, sysfs shows the namespace it was mounted in), so run the
sensor in a process that lives in the namespace (``ip netns exec NS python -m
triggers.sensors network``), which also remounts ``/sys`` for that namespace.
A ``setns()`` on one thread would move the netlink socket and psutil's ioctls
but not ``/proc/self/net`` or ``/sys``: do not do that.

Events: ``bgtasks.network.connected`` (payload: interface, kind, metered,
gateway), ``disconnected`` (interface, kind of the link that went away),
``type-changed`` (interface, kind, previous_kind) and ``metered-changed``
(interface, metered) -- the last two only while connected before and after;
``connected`` already carries the kind and metered flag.
"""

from __future__ import annotations

import asyncio
import shutil
import socket
import subprocess
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

import netifaces
import psutil

from triggers.sensors._base import Change, Emit, PollWakeups, Snapshot, Tracker, Wakeups
from triggers.sensors._mechanism import Choice, choose
from triggers.sensors._netlink import DoorbellWakeups, NetlinkDoorbell

NETLINK, POLL = "netlink", "poll"

SYSFS_NET = Path("/sys/class/net")
PROC_NET = Path("/proc/net")
SYSTEM_BUS_SOCKET = Path("/run/dbus/system_bus_socket")

_ARPHRD_LOOPBACK = 772
_ARPHRD_RAWIP = 519  # qmi_wwan / mhi modems in raw-IP mode
_RTF_UP = 0x1
_RTF_REJECT = 0x200

# NetworkManager's NMMetered: 0 unknown, 1 yes, 2 no, 3 guess-yes, 4 guess-no.
_NM_METERED_YES = {1, 3}
_NM_METERED_KNOWN = {1, 2, 3, 4}


class InterfaceKind(StrEnum):
    WIFI = "wifi"
    ETHERNET = "ethernet"
    CELLULAR = "cellular"
    VPN = "vpn"
    LOOPBACK = "loopback"
    OTHER = "other"


@dataclass(frozen=True)
class NetworkSnapshot(Snapshot):
    """The default route's state. ``interface`` is set whenever a default route exists,
    even when its link is down (then ``connected`` is False)."""

    connected: bool
    interface: str | None = None
    gateway: str | None = None
    kind: InterfaceKind | None = None
    metered: bool = False


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None


def classify_interface(ifname: str, sysfs_net: Path = SYSFS_NET) -> InterfaceKind:
    """An interface's class from sysfs (pure apart from reading ``sysfs_net/ifname``).

    ``wireless/`` or ``phy80211`` -> wifi; uevent ``DEVTYPE=wwan`` or raw-IP
    type -> cellular; ``tun_flags`` or ``DEVTYPE=wireguard`` -> vpn; type 772
    -> loopback; other Ethernet-framed links (type 1: NICs, veth, bridges) ->
    ethernet; anything else -> other.
    """
    base = sysfs_net / ifname
    if (base / "wireless").exists() or (base / "phy80211").exists():
        return InterfaceKind.WIFI
    devtype = ""
    for line in (_read(base / "uevent") or "").splitlines():
        key, _, value = line.partition("=")
        if key == "DEVTYPE":
            devtype = value.strip()
    if devtype == "wlan":
        return InterfaceKind.WIFI
    if devtype == "wwan":
        return InterfaceKind.CELLULAR
    if devtype == "wireguard" or (base / "tun_flags").exists():
        return InterfaceKind.VPN
    try:
        arptype = int(_read(base / "type") or "")
    except ValueError:
        return InterfaceKind.OTHER
    if arptype == _ARPHRD_LOOPBACK:
        return InterfaceKind.LOOPBACK
    if arptype == _ARPHRD_RAWIP:
        return InterfaceKind.CELLULAR
    if arptype == 1:
        return InterfaceKind.ETHERNET
    return InterfaceKind.OTHER


def classify_by_name(ifname: str) -> InterfaceKind:
    """A best guess from the name alone, for platforms without sysfs (macOS, Windows).

    macOS: ``lo*`` loopback, ``utun*``/``ipsec*``/``ppp*``/``tun*``/``tap*``/``wg*`` vpn,
    ``pdp_ip*`` cellular; ``en*`` is Wi-Fi on most Macs and Ethernet on others, which the
    name cannot tell: other. Windows (psutil's friendly names): "Wi-Fi"/"WLAN"/"Wireless",
    "Ethernet", "Cellular"/"Mobile", "Loopback".
    """
    name = ifname.lower()
    if name.startswith("lo") and (name == "lo" or name[2:].isdigit()) or name.startswith("loopback"):
        return InterfaceKind.LOOPBACK
    if name.startswith(("utun", "ipsec", "ppp", "tun", "tap", "wg")):
        return InterfaceKind.VPN
    if name.startswith("pdp_ip") or name.startswith(("cellular", "mobile")):
        return InterfaceKind.CELLULAR
    if name.startswith(("wi-fi", "wifi", "wlan", "wireless")):
        return InterfaceKind.WIFI
    if name.startswith("ethernet"):
        return InterfaceKind.ETHERNET
    return InterfaceKind.OTHER


def psutil_name(
    ifname: str,
    stats_names: Iterable[str],
    addresses: Iterable[str],
    psutil_addrs: Mapping[str, Iterable[Any]],
) -> str | None:
    """Pure: psutil's name for netifaces' interface ``ifname``.

    The same name where psutil knows it (Linux, macOS); otherwise the psutil
    interface that holds one of ``addresses`` (netifaces' addresses of
    ``ifname``): on Windows netifaces says ``{GUID}`` where psutil says "Wi-Fi".
    """
    names = set(stats_names)
    if ifname in names:
        return ifname
    wanted = {a.split("%", 1)[0] for a in addresses if a}
    for name, addrs in psutil_addrs.items():
        if name in names and any(str(getattr(a, "address", "")).split("%", 1)[0] in wanted for a in addrs):
            return name
    return None


def _netifaces_addresses(ifname: str) -> list[str]:
    try:
        by_family = netifaces.ifaddresses(ifname)
    except ValueError:  # netifaces-plus: an interface without addresses
        return []
    return [entry.get("addr", "") for family in (socket.AF_INET, socket.AF_INET6)
            for entry in by_family.get(family, [])]


def _proc_default_routes(proc_net: Path) -> list[tuple[int, str]]:
    """(metric, ifname) of usable default routes in /proc/net/route and ipv6_route."""
    routes: list[tuple[int, str]] = []
    for line in (_read(proc_net / "route") or "").splitlines()[1:]:
        f = line.split()
        # Iface Destination Gateway Flags RefCnt Use Metric Mask ...
        if len(f) >= 8 and f[1] == "00000000" and f[7] == "00000000":
            flags = int(f[3], 16)
            if flags & _RTF_UP and not flags & _RTF_REJECT:
                routes.append((int(f[6]), f[0]))
    for line in (_read(proc_net / "ipv6_route") or "").splitlines():
        f = line.split()
        # dest plen src splen nexthop metric refcnt use flags ifname
        if len(f) >= 10 and int(f[1], 16) == 0 and int(f[0], 16) == 0:
            flags = int(f[8], 16)
            if flags & _RTF_UP and not flags & _RTF_REJECT and f[9] != "lo":
                routes.append((int(f[5], 16), f[9]))
    return sorted(routes)


def default_route(proc_net: Path = PROC_NET) -> tuple[str, str | None] | None:
    """``(interface, gateway)`` of the default route, IPv4 first; ``None`` without one."""
    defaults = netifaces.gateways().get("default")
    for family in (socket.AF_INET, socket.AF_INET6):
        entry = defaults.get(family) if isinstance(defaults, dict) else None
        if entry:
            gateway, ifname = entry[0], entry[1]
            return ifname, gateway
    routes = _proc_default_routes(proc_net)
    return (routes[0][1], None) if routes else None


def nm_metered(bus_socket: Path = SYSTEM_BUS_SOCKET, timeout_s: float = 2.0) -> bool | None:
    """NetworkManager's global ``Metered`` property; ``None`` when it cannot be known here
    (no system bus, no busctl, NetworkManager not running, or "unknown")."""
    busctl = shutil.which("busctl")
    if busctl is None or not bus_socket.exists():
        return None
    try:
        out = subprocess.run(
            [busctl, "--system", "get-property", "org.freedesktop.NetworkManager",
             "/org/freedesktop/NetworkManager", "org.freedesktop.NetworkManager", "Metered"],
            capture_output=True, text=True, timeout=timeout_s, check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    parts = out.stdout.split()  # "u 4"
    if out.returncode != 0 or len(parts) != 2 or not parts[1].isdigit():
        return None
    value = int(parts[1])
    return value in _NM_METERED_YES if value in _NM_METERED_KNOWN else None


def network_state(
    route: tuple[str, str | None] | None,
    running: bool,
    kind: InterfaceKind | None,
    metered_hint: bool | None,
) -> NetworkSnapshot:
    """Pure: the snapshot from its inputs. Without a metered hint, cellular counts as metered."""
    if route is None:
        return NetworkSnapshot(connected=False)
    ifname, gateway = route
    metered = metered_hint if metered_hint is not None else kind is InterfaceKind.CELLULAR
    return NetworkSnapshot(connected=running, interface=ifname, gateway=gateway, kind=kind,
                           metered=bool(running and metered))


def diff_network(old: NetworkSnapshot | None, new: NetworkSnapshot) -> list[Change]:
    """Pure: the network changes between two snapshots (none from the baseline)."""
    if old is None:
        return []

    def change(name: str, resource: str | None, **payload: object) -> Change:
        return Change("network", name, resource or "", payload)

    if not old.connected and new.connected:
        return [change("connected", new.interface, interface=new.interface, kind=new.kind,
                       metered=new.metered, gateway=new.gateway)]
    if old.connected and not new.connected:
        return [change("disconnected", old.interface, interface=old.interface, kind=old.kind)]
    changes: list[Change] = []
    if old.connected and new.connected:
        if old.kind != new.kind:
            changes.append(change("type-changed", new.interface, interface=new.interface, kind=new.kind,
                                  previous_kind=old.kind))
        if old.metered != new.metered:
            changes.append(change("metered-changed", new.interface, interface=new.interface, metered=new.metered))
    return changes


def netlink_missing() -> str | None:
    """Why an rtnetlink doorbell cannot be opened here; ``None`` when it can."""
    if not hasattr(socket, "AF_NETLINK"):
        return "this platform has no netlink sockets (AF_NETLINK is Linux-only)"
    try:
        NetlinkDoorbell().close()
    except OSError as exc:
        return f"cannot open an rtnetlink socket ({exc})"
    return None


class NetworkSensor:
    """Connected / interface class / metered, rung by rtnetlink or polled.

    :param mode: ``auto`` (netlink where available), ``netlink`` (raises
        :class:`~triggers.sensors._mechanism.MechanismUnavailable` where missing)
        or ``poll``; the outcome is :attr:`choice`.
    :param poll_s: safety-net poll interval with netlink (the doorbell does the real work).
    :param portable_poll_s: the poll interval of the ``poll`` mechanism.
    :param settle_s: quiet time awaited after a ring before re-snapshotting.
    :param sysfs_net: root for :func:`classify_interface` (tests pass a fake tree).
    :param proc_net: where the gateway-less default-route fallback reads routes.
    :param metered_probe: returns NetworkManager's answer or ``None``;
        default :func:`nm_metered`.
    """

    name = "network"

    def __init__(
        self,
        *,
        mode: str = "auto",
        poll_s: float = 30.0,
        portable_poll_s: float = 5.0,
        settle_s: float = 0.02,
        sysfs_net: Path = SYSFS_NET,
        proc_net: Path = PROC_NET,
        metered_probe: Callable[[], bool | None] = nm_metered,
    ) -> None:
        if poll_s <= 0 or portable_poll_s <= 0:
            raise ValueError("poll_s and portable_poll_s must be > 0")
        self.choice: Choice = choose(self.name, mode, NETLINK, POLL, None if mode == POLL else netlink_missing())
        self.mechanism = self.choice.mechanism
        self.poll_s = poll_s
        self.portable_poll_s = portable_poll_s
        self.settle_s = settle_s
        self.sysfs_net = sysfs_net
        self.proc_net = proc_net
        self.metered_probe = metered_probe

    def snapshot(self, previous: NetworkSnapshot | None = None) -> NetworkSnapshot:
        route = default_route(self.proc_net)
        if route is None:
            return network_state(None, False, None, None)
        ifname = route[0]
        all_stats = psutil.net_if_stats()
        name = ifname if ifname in all_stats else psutil_name(
            ifname, all_stats, _netifaces_addresses(ifname), psutil.net_if_addrs())
        stats = all_stats.get(name) if name is not None else None
        running = bool(stats and stats.isup)
        if self.sysfs_net.is_dir():
            kind = classify_interface(ifname, self.sysfs_net)
        else:
            kind = classify_by_name(name or ifname)
        hint = self.metered_probe() if running else None
        return network_state(route, running, kind, hint)

    def diff(self, old: NetworkSnapshot | None, new: NetworkSnapshot) -> list[Change]:
        return diff_network(old, new)

    def open_wakeups(self) -> Wakeups:
        if self.mechanism == POLL:
            return PollWakeups(self.portable_poll_s)
        return DoorbellWakeups(NetlinkDoorbell(), poll_s=self.poll_s, settle_s=self.settle_s)

    async def watch(self, emit: Emit, stop: asyncio.Event) -> None:
        await Tracker(self).watch(emit, stop)
