"""Constraint evaluation: one pure function of (constraints, host snapshot).

:func:`unmet` returns the constraints that fail on a :class:`HostSnapshot`, each with
the observed value, so a waiting run can say why in its state message. A sensor
missing from the snapshot fails every constraint that needs it ("unknown").

The rules are WorkManager's: network ``connected`` = a default route on a
running link; ``unmetered`` / ``metered`` per the network's metered flag;
``wifi`` / ``cellular`` per the default interface's class; battery not low per
the hysteretic battery-low flag (low at 15% unplugged, ok above 20%); charging
= plugged in (Android counts a plugged, full battery as charging); device idle
per the idle sensor; storage not low per min(5%, 500 MiB) free.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from bgtasks.models import TaskConstraints

if TYPE_CHECKING:
    from triggers.constraints.host import HostSnapshot
    from triggers.sensors import NetworkSnapshot, PowerState


@dataclass(frozen=True)
class Unmet:
    """One constraint that does not hold: its name (the spec's field) and what was observed."""

    constraint: str
    observed: str

    def __str__(self) -> str:
        return f"{self.constraint} ({self.observed})"


def _network(need: str, net: NetworkSnapshot | None) -> Unmet | None:
    name = "requiresWifi" if need == "wifi" else ("requiresNetwork" if need == "connected" else f"networkType={need}")
    if net is None:
        return Unmet(name, "network state unknown")
    if not net.connected:
        why = "no default route" if not net.interface else f"{net.interface} has no link"
        return Unmet(name, why)
    if need == "unmetered" and net.metered:
        return Unmet(name, f"{net.interface} is metered")
    if need == "metered" and not net.metered:
        return Unmet(name, f"{net.interface} is unmetered")
    if need in ("wifi", "cellular") and net.kind != need:
        return Unmet(name, f"default route over {net.interface} ({net.kind})")
    return None


def unmet(constraints: TaskConstraints | None, snapshot: HostSnapshot) -> list[Unmet]:
    """The constraints that fail on a host in ``snapshot`` (empty: the run may start)."""
    if constraints is None:
        return []
    out: list[Unmet] = []
    need = constraints.network_need()
    if need and (miss := _network(need, snapshot.network)):
        out.append(miss)
    power = snapshot.power
    if constraints.requires_charging:
        if power is None:
            out.append(Unmet("requiresCharging", "power state unknown"))
        elif not power.plugged:
            out.append(Unmet("requiresCharging", f"unplugged, battery {_pct(power)}"))
    if constraints.requires_battery_not_low:
        if power is None:
            out.append(Unmet("requiresBatteryNotLow", "power state unknown"))
        elif power.battery_low:
            out.append(Unmet("requiresBatteryNotLow", f"battery low, {_pct(power)}"))
    if constraints.requires_device_idle:
        idle = snapshot.idle
        if idle is None:
            out.append(Unmet("requiresDeviceIdle", "idle state unknown (no trigger daemon?)"))
        elif not idle.idle:
            cpu = idle.cpu_percent
            out.append(Unmet("requiresDeviceIdle", "device active" + (f", CPU {cpu:.0f}%" if cpu is not None else "")))
    if constraints.requires_storage_not_low:
        storage = snapshot.storage
        if storage is None:
            out.append(Unmet("requiresStorageNotLow", "storage state unknown"))
        elif storage.low:
            out.append(Unmet("requiresStorageNotLow", f"{storage.free_bytes / 2**20:.0f} MiB free on {storage.path}"))
    return out


def _pct(power: PowerState) -> str:
    return f"{power.percent:.0f}%" if power.percent is not None else "no battery"


def describe(missing: list[Unmet]) -> str:
    """The state message of a waiting run: ``Waiting for requiresNetwork (no default route); ...``."""
    return "Waiting for " + "; ".join(str(m) for m in missing)
