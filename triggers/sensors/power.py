"""Power sensor: battery percent, plugged, charging, battery low (Android's rule).

Two mechanisms (``mode``; ``auto`` takes sysfs where ``root`` is a directory):

``sysfs`` (native, Linux): readings come from ``/sys/class/power_supply`` (root
injectable, so tests use a fake tree): supplies with ``scope=Device`` (a mouse, a headset) are ignored;
a system ``Battery`` gives ``capacity`` (or ``energy_now/energy_full``,
``charge_now/charge_full``) and ``status``; a ``Mains``/``USB``/``Wireless``
supply with ``online=1`` means plugged (so does a battery that reports
``Charging``, and ``Full``/``Not charging`` when no adapter is listed at all).

``psutil`` (portable: macOS, Windows, BSD): ``psutil.sensors_battery()``.
It reports one battery (on Linux the first ``BAT*``/``*battery*`` entry, which
may be a mouse's), percent and plugged; charging is inferred as "plugged and
below 100%" since psutil has no charging status. docs/sensors.md lists what
each path misses.

No system battery: plugged, not low, percent ``None``.

Battery low is state carried across readings (:func:`next_power_state`, pure):
it becomes low when unplugged at ``<= low_percent`` (15); once low it stays low
until the level is strictly above ``low_percent + hysteresis_percent`` (so 20%
keeps it low and 21% clears it, as the issue's acceptance test fixes) or the
device is plugged in.

Wake-ups: a poll (``poll_s``, 30 s) and, with sysfs on the real tree, kernel
uevents of the ``power_supply`` subsystem as a doorbell (plugging in is seen
at once). Events: ``bgtasks.power.plugged``, ``unplugged``, ``charging``,
``charging-stopped``, ``battery-low``, ``battery-ok``; each payload carries
``percent``, ``plugged`` and ``charging``; the resource is ``power``.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from pathlib import Path

import psutil

from triggers.sensors._base import Change, Emit, PollWakeups, Snapshot, Tracker, Wakeups
from triggers.sensors._mechanism import Choice, choose
from triggers.sensors._netlink import NETLINK_KOBJECT_UEVENT, UEVENT_KERNEL_GROUP, DoorbellWakeups, NetlinkDoorbell

logger = logging.getLogger(__name__)

POWER_SUPPLY = Path("/sys/class/power_supply")
_ADAPTER_TYPES = {"Mains", "USB", "Wireless"}
_PLUGGED_STATUSES = {"Full", "Not charging"}
SYSFS, PSUTIL = "sysfs", "psutil"


@dataclass(frozen=True)
class PowerReading:
    """One raw reading, before the battery-low rule."""

    has_battery: bool
    percent: float | None
    plugged: bool
    charging: bool


@dataclass(frozen=True)
class PowerState(Snapshot):
    """The power snapshot: the reading plus the (hysteretic) battery-low flag."""

    has_battery: bool
    percent: float | None
    plugged: bool
    charging: bool
    battery_low: bool


def next_power_state(
    previous: PowerState | None,
    reading: PowerReading,
    low_percent: float = 15.0,
    hysteresis_percent: float = 5.0,
) -> PowerState:
    """Pure: the new state from the previous one and a reading (Android's battery-low rule)."""
    if not reading.has_battery or reading.percent is None or reading.plugged:
        low = False
    elif previous is not None and previous.battery_low:
        low = reading.percent <= low_percent + hysteresis_percent
    else:
        low = reading.percent <= low_percent
    return PowerState(reading.has_battery, reading.percent, reading.plugged, reading.charging, low)


def diff_power(old: PowerState | None, new: PowerState) -> list[Change]:
    """Pure: power changes between two states (none from the baseline)."""
    if old is None:
        return []
    payload = {"percent": new.percent, "plugged": new.plugged, "charging": new.charging}
    changes: list[Change] = []

    def edge(before: bool, after: bool, rising: str, falling: str) -> None:
        if before != after:
            changes.append(Change("power", rising if after else falling, "power", dict(payload)))

    edge(old.plugged, new.plugged, "plugged", "unplugged")
    edge(old.charging, new.charging, "charging", "charging-stopped")
    edge(old.battery_low, new.battery_low, "battery-low", "battery-ok")
    return changes


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None


def _int(path: Path) -> int | None:
    text = _read(path)
    try:
        return int(text) if text is not None else None
    except ValueError:
        return None


def read_power_supply(root: Path = POWER_SUPPLY) -> PowerReading | None:
    """Read a ``power_supply`` class tree; ``None`` when ``root`` is not a directory."""
    try:
        supplies = sorted(root.iterdir())
    except (FileNotFoundError, NotADirectoryError):
        return None
    adapters_seen = False
    adapter_online = False
    statuses: list[str] = []
    capacities: list[float] = []
    energy_now = energy_full = 0
    energy_complete = True
    for supply in supplies:
        if (_read(supply / "scope") or "").lower() == "device":
            continue  # a peripheral's battery, not the system's
        kind = _read(supply / "type")
        if kind in _ADAPTER_TYPES:
            adapters_seen = True
            adapter_online |= _read(supply / "online") == "1"
        elif kind == "Battery":
            if _read(supply / "present") == "0":
                continue
            statuses.append(_read(supply / "status") or "Unknown")
            capacity = _int(supply / "capacity")
            e_now, e_full = _int(supply / "energy_now"), _int(supply / "energy_full")
            c_now, c_full = _int(supply / "charge_now"), _int(supply / "charge_full")
            if capacity is None and e_now is not None and e_full:
                capacity = round(100 * e_now / e_full)
            if capacity is None and c_now is not None and c_full:
                capacity = round(100 * c_now / c_full)
            if capacity is not None:
                capacities.append(float(max(0, min(100, capacity))))
            if e_now is not None and e_full:
                energy_now += e_now
                energy_full += e_full
            else:
                energy_complete = False
    if not statuses:
        return PowerReading(has_battery=False, percent=None, plugged=True, charging=False)
    if energy_complete and energy_full and len(statuses) > 1:
        percent: float | None = round(100 * energy_now / energy_full, 1)
    else:
        percent = sum(capacities) / len(capacities) if capacities else None
    charging = "Charging" in statuses
    plugged = adapter_online or charging or (not adapters_seen and any(s in _PLUGGED_STATUSES for s in statuses))
    return PowerReading(has_battery=True, percent=percent, plugged=plugged, charging=charging)


def read_psutil_battery() -> PowerReading:
    """The portable reading (psutil may pick a peripheral's battery; it has no charging status).

    psutil's ``power_plugged`` is ``None`` when it cannot tell; that counts as
    unplugged (the cautious reading for "run only while charging").
    """
    sensors_battery = getattr(psutil, "sensors_battery", None)  # absent where psutil cannot read batteries
    battery = sensors_battery() if sensors_battery is not None else None
    if battery is None:
        return PowerReading(has_battery=False, percent=None, plugged=True, charging=False)
    plugged = bool(battery.power_plugged)
    return PowerReading(True, float(battery.percent), plugged, plugged and battery.percent < 100)


class PowerSensor:
    """Battery and charger state.

    :param mode: ``auto`` (sysfs where ``root`` is a directory), ``sysfs`` (raises
        :class:`~triggers.sensors._mechanism.MechanismUnavailable` where it is not)
        or ``psutil``; the outcome is :attr:`choice`.
    :param root: the ``power_supply`` class directory (a fake tree in tests).
    :param poll_s: poll interval.
    :param low_percent: battery low at or below this level, unplugged (Android: 15).
    :param hysteresis_percent: low clears above ``low_percent + hysteresis_percent``.
    :param uevents: also wake on kernel ``power_supply`` uevents; default: only
        when ``root`` is the real sysfs tree.
    """

    name = "power"

    def __init__(
        self,
        *,
        mode: str = "auto",
        root: Path = POWER_SUPPLY,
        poll_s: float = 30.0,
        low_percent: float = 15.0,
        hysteresis_percent: float = 5.0,
        uevents: bool | None = None,
    ) -> None:
        missing = None if mode == PSUTIL or root.is_dir() else f"{root} is not a directory"
        self.choice: Choice = choose(self.name, mode, SYSFS, PSUTIL, missing)
        self.mechanism = self.choice.mechanism
        self.root = root
        self.poll_s = poll_s
        self.low_percent = low_percent
        self.hysteresis_percent = hysteresis_percent
        self.uevents = self.mechanism == SYSFS and (root == POWER_SUPPLY if uevents is None else uevents)

    def read(self) -> PowerReading:
        """One reading through the chosen mechanism.

        :raises FileNotFoundError: the sysfs tree went away after the sensor was built.
        """
        if self.mechanism == PSUTIL:
            return read_psutil_battery()
        reading = read_power_supply(self.root)
        if reading is None:
            raise FileNotFoundError(f"power: {self.root} is gone")
        return reading

    def snapshot(self, previous: PowerState | None = None) -> PowerState:
        return next_power_state(previous, self.read(), self.low_percent, self.hysteresis_percent)

    def diff(self, old: PowerState | None, new: PowerState) -> list[Change]:
        return diff_power(old, new)

    def open_wakeups(self) -> Wakeups:
        if self.uevents:
            try:
                bell = NetlinkDoorbell(NETLINK_KOBJECT_UEVENT, UEVENT_KERNEL_GROUP, match=b"SUBSYSTEM=power_supply")
            except OSError as exc:
                logger.info("power: no kernel uevents (%s); polling every %gs", exc, self.poll_s)
            else:
                return DoorbellWakeups(bell, poll_s=self.poll_s, settle_s=0.05)
        return PollWakeups(self.poll_s)

    async def watch(self, emit: Emit, stop: asyncio.Event) -> None:
        await Tracker(self).watch(emit, stop)
