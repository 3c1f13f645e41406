"""This host's state as constraint checks read it: :class:`HostSnapshot`, from the state
sensors (:class:`HostSensors`), stepped on demand.

The trigger daemon and the worker each hold one. The idle sensor needs
consecutive samples (CPU since the last one, "idle for N samples"), so a
holder that checks rarely sees a fresh device as "active" until its next
samples; the daemon's 30 s poll keeps it current. A windowed sensor (idle) is
sampled at most once per its poll interval: the worker checks a run's
constraints at release and again at submission a moment later, and a CPU share
measured over those few milliseconds is noise that flipped the run back to
waiting.

Each sensor's mechanism (native or portable) comes from the daemon settings
(``BGTASKS_DAEMON_NETWORK_MODE``, ``..._POWER_MODE``, ``..._IDLE_MODE``,
``..._FILE_OBSERVER``) and is chosen once, when the sensors are built; a
forced native mechanism this host lacks is a :class:`SensorSettingError`
that names the setting (docs/sensors.md).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, fields, is_dataclass
from typing import Any

from bgtasks.settings import Settings
from triggers.sensors import (
    FileSensor,
    IdleSensor,
    IdleState,
    IdleThresholds,
    NetworkSensor,
    NetworkSnapshot,
    PowerSensor,
    PowerState,
    StorageSensor,
    StorageSnapshot,
    Tracker,
)
from triggers.sensors._mechanism import MechanismUnavailable

STATE_SENSORS = ("network", "power", "idle", "storage")

MODE_SETTINGS = {
    "network": "BGTASKS_DAEMON_NETWORK_MODE",
    "power": "BGTASKS_DAEMON_POWER_MODE",
    "idle": "BGTASKS_DAEMON_IDLE_MODE",
    "file": "BGTASKS_DAEMON_FILE_OBSERVER",
}


class SensorSettingError(RuntimeError):
    """A sensor setting asks for a mechanism this host does not have: change the setting."""


def _build(name: str, make: Callable[[], Any]) -> Any:
    """``make()``, with a missing forced mechanism turned into an error that names its setting."""
    try:
        return make()
    except MechanismUnavailable as exc:
        setting = MODE_SETTINGS[name]
        raise SensorSettingError(
            f"{setting}={exc.mechanism}, but {exc.reason}; set {setting}=auto (or {exc.portable})") from exc


def file_sensor(settings: Settings) -> FileSensor:
    """The file sensor with the observer the settings ask for (rules are added later).

    :raises SensorSettingError: ``file_observer`` is ``native`` and this host has no native observer.
    """
    d = settings.daemon
    sensor: FileSensor = _build("file", lambda: FileSensor(observer=d.file_observer, poll_s=d.file_poll_s))
    return sensor


def plain(value: Any) -> Any:
    """A snapshot as plain JSON (enums as strings)."""
    if value is None:
        return None
    if hasattr(value, "to_dict"):
        value = value.to_dict()
    elif is_dataclass(value):
        value = asdict(value)  # type: ignore[arg-type]
    return json.loads(json.dumps(value, default=str))


@dataclass(frozen=True)
class HostSnapshot:
    """The state sensors' readings (None: that sensor is off or has no reading yet, so
    every constraint that needs it fails as unknown)."""

    network: NetworkSnapshot | None = None
    power: PowerState | None = None
    idle: IdleState | None = None
    storage: StorageSnapshot | None = None

    @classmethod
    def of(cls, states: Mapping[str, Any]) -> HostSnapshot:
        """From the readings by sensor name (other sensors' entries are ignored)."""
        return cls(**{f.name: states.get(f.name) for f in fields(cls)})

    def to_json(self) -> dict[str, Any]:
        """Plain JSON by sensor name (enums as strings), for people and the status file."""
        return {f.name: plain(getattr(self, f.name)) for f in fields(self) if getattr(self, f.name) is not None}


class HostSensors:
    """Trackers for the host's state sensors (those enabled in the daemon settings).

    :raises SensorSettingError: a mode setting forces a mechanism this host lacks.
    """

    def __init__(self, settings: Settings, clock: Callable[[], float] = time.monotonic) -> None:
        d = settings.daemon
        makers: dict[str, Callable[[], Any]] = {
            "network": lambda: NetworkSensor(mode=d.network_mode, poll_s=d.network_poll_s,
                                             portable_poll_s=d.network_portable_poll_s, sysfs_net=d.network_sysfs),
            "power": lambda: PowerSensor(mode=d.power_mode, root=d.power_root, poll_s=d.power_poll_s),
            "idle": lambda: IdleSensor(mode=d.idle_mode, poll_s=d.idle_poll_s,
                                       thresholds=IdleThresholds(cpu_percent=d.idle_cpu_percent)),
            "storage": lambda: StorageSensor(str(d.storage_path or settings.home), poll_s=d.storage_poll_s),
        }
        self.trackers: dict[str, Tracker[Any]] = {
            name: Tracker(_build(name, make)) for name, make in makers.items() if name in d.sensors
        }
        self._lock = threading.Lock()
        self._clock = clock
        self._sampled: dict[str, float] = {}  # windowed sensors: when each was last sampled

    def mechanisms(self) -> dict[str, str]:
        """The mechanism each state sensor runs with (``netlink``, ``poll``, ``sysfs``, ...);
        storage has one path everywhere (``psutil``)."""
        return {name: getattr(t.sensor, "mechanism", "psutil") for name, t in self.trackers.items()}

    def snapshot(self, refresh: bool = True) -> HostSnapshot:
        """Each sensor's state; ``refresh`` takes new readings first."""
        with self._lock:
            now = self._clock()
            for name, tracker in self.trackers.items():
                if tracker.current is not None and getattr(tracker.sensor, "windowed", False) and (
                        now - self._sampled.get(name, -float("inf")) < tracker.sensor.poll_s):
                    continue  # too soon for a meaningful reading: the last one stands
                if refresh or tracker.current is None:
                    tracker.step()
                    self._sampled[name] = now
            return HostSnapshot.of({name: t.current for name, t in self.trackers.items()})
