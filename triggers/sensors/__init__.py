"""Sensors of the trigger daemon: the machine's state as snapshots, and its changes as events.

One module per source, each a small class behind one interface
(:mod:`triggers.sensors._base`):

=============  ===============  ==========================================  ===============================
module         sensor name      state / source                              wakes on
=============  ===============  ==========================================  ===============================
network        ``network``      default route + link running, sysfs class,  rtnetlink doorbell, 30 s poll
                                NetworkManager ``Metered``
power          ``power``        ``/sys/class/power_supply`` (or psutil)     poll, power_supply uevents
idle           ``device``       /proc/stat CPU %, PSI, X11 user idle        poll
storage        ``storage``      ``psutil.disk_usage(path)``                 poll
filesystem     ``file``         watchdog (inotify), rules, debounce         inotify events
=============  ===============  ==========================================  ===============================

Every sensor but storage has a native mechanism and a portable one, chosen
when it is built (``mode=auto|<native>|<portable>``; files: ``observer=``):
network netlink | poll, power sysfs | psutil, idle psi | cpu, files native |
polling (:mod:`triggers.sensors._mechanism`; docs/sensors.md says what each
path sees on each platform).

A state sensor has ``snapshot(previous)`` (a frozen dataclass with
``to_dict()``), a pure ``diff(old, new) -> list[Change]`` and
``open_wakeups()``; :class:`Tracker` keeps the last snapshot and runs the loop
(``await Tracker(sensor).watch(emit, stop)``, or ``tracker.step()`` for one
synchronous step). The file sensor is event-driven: ``FileSensor.watch(emit,
stop)``, rules added and removed at runtime. Every sensor also has
``watch(emit, stop)``; ``emit`` may be sync or async and is called once per
change. :class:`Change` becomes the Prefect event ``bgtasks.{sensor}.{change}``.

Changes are edges: a sensor's first snapshot is its baseline and emits
nothing. ``python -m triggers.sensors <sensor>`` prints one sensor's changes
as JSON lines (used by the network-namespace tests).
"""

from triggers.sensors._base import Change, Emit, PollWakeups, Sensor, StateSensor, Tracker, Wakeups
from triggers.sensors._debounce import Batch, Debouncer
from triggers.sensors.filesystem import FileEventKind, FileRule, FileSensor
from triggers.sensors.idle import IdleSample, IdleSensor, IdleState, IdleThresholds, next_idle_state
from triggers.sensors.network import InterfaceKind, NetworkSensor, NetworkSnapshot, classify_interface
from triggers.sensors.power import PowerReading, PowerSensor, PowerState, next_power_state, read_power_supply
from triggers.sensors.storage import StorageSensor, StorageSnapshot, low_threshold_bytes, storage_low

__all__ = [
    "Batch",
    "Change",
    "Debouncer",
    "Emit",
    "FileEventKind",
    "FileRule",
    "FileSensor",
    "IdleSample",
    "IdleSensor",
    "IdleState",
    "IdleThresholds",
    "InterfaceKind",
    "NetworkSensor",
    "NetworkSnapshot",
    "PollWakeups",
    "PowerReading",
    "PowerSensor",
    "PowerState",
    "Sensor",
    "StateSensor",
    "StorageSensor",
    "StorageSnapshot",
    "Tracker",
    "Wakeups",
    "classify_interface",
    "low_threshold_bytes",
    "next_idle_state",
    "next_power_state",
    "read_power_supply",
    "storage_low",
]
