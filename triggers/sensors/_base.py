"""The vocabulary every sensor shares: :class:`Change`, the sensor protocols and :class:`Tracker`.

A *state sensor* (network, power, device idle, storage) has three parts:

* ``snapshot(previous)``: read the machine now and return a frozen, JSON-ready
  value. Sensors whose state carries history (battery-low hysteresis, "idle for
  N samples") compute it from ``previous`` in a pure function; the others
  ignore it. The caller keeps the previous value, so the sensor object holds no
  state between calls.
* ``diff(old, new)``: pure; the :class:`Change` list between two snapshots.
  ``diff(None, new)`` is the baseline and returns ``[]``: sensors emit edges,
  never the state found at start-up.
* ``open_wakeups()``: when to look again (a poll interval, a netlink doorbell).

:class:`Tracker` runs that loop for the daemon (``watch``) or one step at a
time (``step``, for a daemon's ``run_once`` and for tests). The filesystem
sensor is event-driven and implements :class:`Sensor` (``watch``) directly.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import threading
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from typing import Any, Generic, Protocol, TypeVar, runtime_checkable

from bgtasks import stored

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Change:
    """One edge in a sensor's state: becomes the Prefect event ``bgtasks.{sensor}.{change}``.

    ``resource`` names the thing that changed (an interface, a battery, a
    path, a file rule id); ``payload`` is JSON-ready detail.
    """

    sensor: str
    change: str
    resource: str
    payload: dict[str, Any] = field(default_factory=dict, compare=True, hash=False)

    @property
    def event(self) -> str:
        return stored.event_name(f"{self.sensor}.{self.change}")

    def to_dict(self) -> dict[str, Any]:
        return {"event": self.event, "resource": self.resource, "payload": self.payload}


Emit = Callable[[Change], "Awaitable[None] | None"]
"""Where a sensor delivers its changes: a plain or an async callable."""


class Snapshot:
    """Mixin for a sensor's frozen snapshot dataclass."""

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = asdict(self)  # type: ignore[call-overload]
        return data


S = TypeVar("S")


class Wakeups(Protocol):
    """When a state sensor should look again."""

    async def wait(self, stop: asyncio.Event) -> bool:
        """Wait for the next reason to re-snapshot; ``False`` once ``stop`` is set."""
        ...

    def close(self) -> None: ...


@runtime_checkable
class Sensor(Protocol):
    """Anything the daemon can run: it watches until ``stop`` and emits each change once."""

    name: str

    async def watch(self, emit: Emit, stop: asyncio.Event) -> None: ...


class StateSensor(Sensor, Protocol[S]):
    """A sensor made of a pure snapshot type and a pure diff."""

    def snapshot(self, previous: S | None = None) -> S: ...

    def diff(self, old: S | None, new: S) -> list[Change]: ...

    def open_wakeups(self) -> Wakeups:
        """Start listening for reasons to look again (called before the first snapshot
        of a watch, so nothing between the two is lost)."""
        ...


class PollWakeups:
    """Wake every ``interval_s`` seconds."""

    def __init__(self, interval_s: float) -> None:
        if interval_s <= 0:
            raise ValueError("interval_s must be > 0")
        self.interval_s = interval_s

    async def wait(self, stop: asyncio.Event) -> bool:
        try:
            await asyncio.wait_for(stop.wait(), self.interval_s)
        except TimeoutError:
            return True
        return False

    def close(self) -> None:
        pass


async def deliver(emit: Emit, change: Change) -> None:
    """Call ``emit`` and await it if it returned an awaitable."""
    result = emit(change)
    if inspect.isawaitable(result):
        await result


class Tracker(Generic[S]):
    """Carries a state sensor's last snapshot and turns new snapshots into changes.

    ``step()`` is the synchronous unit a daemon's ``run_once`` (or a test)
    calls; ``watch()`` repeats it on every wake-up. ``current`` is the latest
    snapshot, for constraint checks. Thread-safe: ``watch`` runs ``step`` in a
    worker thread so a slow read never blocks the event loop.
    """

    def __init__(self, sensor: StateSensor[S]) -> None:
        self.sensor = sensor
        self.current: S | None = None
        self._lock = threading.Lock()

    def prime(self) -> S:
        """Take the baseline snapshot (emits nothing)."""
        with self._lock:
            self.current = self.sensor.snapshot(self.current)
            return self.current

    def step(self) -> list[Change]:
        """Snapshot now and return the changes since the last snapshot (none for the first)."""
        with self._lock:
            old = self.current
            new = self.sensor.snapshot(old)
            self.current = new
            return self.sensor.diff(old, new)

    async def watch(self, emit: Emit, stop: asyncio.Event) -> None:
        """Emit each change until ``stop`` is set.

        The wake-up source opens first, then a step runs at once: a change that
        happened after :meth:`prime` (or before this call) is never lost.
        A failing snapshot is logged and retried at the next wake-up.
        """
        wakeups = self.sensor.open_wakeups()
        try:
            if self.current is None:
                await asyncio.to_thread(self.prime)
            while True:
                try:
                    changes = await asyncio.to_thread(self.step)
                except Exception:
                    logger.exception("sensor %s: snapshot failed; retrying at the next wake-up", self.sensor.name)
                    changes = []
                for change in changes:
                    await deliver(emit, change)
                if not await wakeups.wait(stop):
                    return
        finally:
            wakeups.close()
