"""The state sensors of this host, stepped on demand: what constraint checks read.

The trigger daemon and the worker each hold one. The idle sensor needs
consecutive samples (CPU since the last one, "idle for N samples"), so a
holder that checks rarely sees a fresh device as "active" until its next
samples; the daemon's 30 s poll keeps it current.
"""

from __future__ import annotations

import json
import threading
from dataclasses import asdict, is_dataclass
from typing import Any

from bgtasks.settings import Settings
from triggers.sensors import IdleSensor, NetworkSensor, PowerSensor, StorageSensor, Tracker

STATE_SENSORS = ("network", "power", "idle", "storage")


def plain(value: Any) -> Any:
    """A snapshot as plain JSON (enums as strings)."""
    if value is None:
        return None
    if hasattr(value, "to_dict"):
        value = value.to_dict()
    elif is_dataclass(value):
        value = asdict(value)  # type: ignore[arg-type]
    return json.loads(json.dumps(value, default=str))


class HostSensors:
    """Trackers for the host's state sensors (those enabled in the daemon settings)."""

    def __init__(self, settings: Settings) -> None:
        d = settings.daemon
        makers = {
            "network": lambda: NetworkSensor(poll_s=d.network_poll_s),
            "power": lambda: PowerSensor(root=d.power_root, poll_s=d.power_poll_s),
            "idle": lambda: IdleSensor(poll_s=d.idle_poll_s),
            "storage": lambda: StorageSensor(str(d.storage_path or settings.home), poll_s=d.storage_poll_s),
        }
        self.trackers: dict[str, Tracker[Any]] = {
            name: Tracker(make()) for name, make in makers.items() if name in d.sensors
        }
        self._lock = threading.Lock()

    def snapshot(self, refresh: bool = True) -> dict[str, Any]:
        """Each sensor's state as plain JSON; ``refresh`` takes new readings first."""
        with self._lock:
            out = {}
            for name, tracker in self.trackers.items():
                if refresh or tracker.current is None:
                    tracker.step()
                out[name] = plain(tracker.current)
            return out
