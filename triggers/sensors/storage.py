"""Storage sensor: "storage low" for one path, with Android's rule.

Low when ``free <= min(5% of total, 500 MiB)`` (:func:`storage_low`, pure), free
being ``psutil.disk_usage(path).free`` (space available to unprivileged users).
No hysteresis: it flips exactly when the threshold is crossed. The usage
function is injectable for unit tests; the integration test uses a real tmpfs.

Events: ``bgtasks.storage.low`` and ``bgtasks.storage.ok``; resource: the
path; payload ``path``, ``free_bytes``, ``total_bytes``, ``threshold_bytes``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import psutil

from triggers.sensors._base import Change, Emit, PollWakeups, Snapshot, Tracker, Wakeups

LOW_PERCENT = 5
LOW_CAP_BYTES = 500 * 1024 * 1024


def low_threshold_bytes(total_bytes: int) -> int:
    """Pure: Android's storage-low threshold, ``min(5% of total, 500 MiB)``."""
    return min(total_bytes * LOW_PERCENT // 100, LOW_CAP_BYTES)


def storage_low(free_bytes: int, total_bytes: int) -> bool:
    """Pure: whether ``free_bytes`` is at or below the threshold."""
    return free_bytes <= low_threshold_bytes(total_bytes)


@dataclass(frozen=True)
class StorageSnapshot(Snapshot):
    path: str
    free_bytes: int
    total_bytes: int
    low: bool


def diff_storage(old: StorageSnapshot | None, new: StorageSnapshot) -> list[Change]:
    """Pure: ``storage.low`` / ``storage.ok`` when ``low`` flips (none from the baseline)."""
    if old is None or old.low == new.low:
        return []
    payload = {"path": new.path, "free_bytes": new.free_bytes, "total_bytes": new.total_bytes,
               "threshold_bytes": low_threshold_bytes(new.total_bytes)}
    return [Change("storage", "low" if new.low else "ok", new.path, payload)]


class StorageSensor:
    """Free space of the filesystem holding ``path``, polled every ``poll_s``.

    :param usage: returns an object with ``free`` and ``total`` bytes for a
        path; default ``psutil.disk_usage``.
    """

    name = "storage"

    def __init__(self, path: str, *, poll_s: float = 60.0, usage: Callable[[str], Any] = psutil.disk_usage) -> None:
        self.path = path
        self.poll_s = poll_s
        self.usage = usage

    def snapshot(self, previous: StorageSnapshot | None = None) -> StorageSnapshot:
        u = self.usage(self.path)
        return StorageSnapshot(self.path, int(u.free), int(u.total), storage_low(int(u.free), int(u.total)))

    def diff(self, old: StorageSnapshot | None, new: StorageSnapshot) -> list[Change]:
        return diff_storage(old, new)

    def open_wakeups(self) -> Wakeups:
        return PollWakeups(self.poll_s)

    async def watch(self, emit: Emit, stop: asyncio.Event) -> None:
        await Tracker(self).watch(emit, stop)
