"""Trailing-edge debounce with a maximum wait, per key, on an injected clock (no I/O, no threads).

A key's batch is due once no event arrived for ``quiet_s`` or ``max_wait_s``
after its first event, whichever comes first; then the next event starts a
new batch. Paths are kept in arrival order, each once.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field


@dataclass
class _Pending:
    quiet_s: float
    max_wait_s: float
    first_at: float
    last_at: float
    paths: dict[str, str | None] = field(default_factory=dict)  # path -> move source (or None)
    rescan: bool = False

    @property
    def due_at(self) -> float:
        return min(self.last_at + self.quiet_s, self.first_at + self.max_wait_s)


@dataclass(frozen=True)
class Batch:
    """What one key collected during one window."""

    key: Hashable
    paths: tuple[str, ...]            # every distinct path, in arrival order
    sources: tuple[str | None, ...]   # parallel to paths: a move's source path, else None
    rescan: bool                      # some entries came from a rescan, not from inotify
    first_at: float
    last_at: float


class Debouncer:
    """Collect events per key and release them as batches.

    :param clock: monotonic seconds; tests pass a fake.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._pending: dict[Hashable, _Pending] = {}

    def add(
        self,
        key: Hashable,
        path: str,
        *,
        quiet_s: float,
        max_wait_s: float,
        source: str | None = None,
        rescan: bool = False,
        now: float | None = None,
    ) -> None:
        """Record one event for ``key``; ``now`` defaults to the clock."""
        at = self.clock() if now is None else now
        pending = self._pending.get(key)
        if pending is None:
            pending = self._pending[key] = _Pending(quiet_s, max_wait_s, at, at)
        pending.last_at = max(pending.last_at, at)
        pending.paths.setdefault(path, source)  # a path seen again keeps its first position
        pending.rescan |= rescan

    def next_deadline(self) -> float | None:
        """When the earliest pending batch becomes due, or ``None`` when nothing is pending."""
        return min((p.due_at for p in self._pending.values()), default=None)

    def pop_due(self, now: float | None = None) -> list[Batch]:
        """Remove and return the batches due at ``now`` (default: the clock)."""
        at = self.clock() if now is None else now
        due = [k for k, p in self._pending.items() if p.due_at <= at]
        return [self._batch(k, self._pending.pop(k)) for k in due]

    def pop_all(self) -> list[Batch]:
        """Remove and return every pending batch (on shutdown)."""
        batches = [self._batch(k, p) for k, p in self._pending.items()]
        self._pending.clear()
        return batches

    def discard(self, predicate: Callable[[Hashable], bool]) -> None:
        """Drop pending batches whose key matches (a removed rule)."""
        for key in [k for k in self._pending if predicate(k)]:
            del self._pending[key]

    def __len__(self) -> int:
        return len(self._pending)

    @staticmethod
    def _batch(key: Hashable, p: _Pending) -> Batch:
        return Batch(key, tuple(p.paths), tuple(p.paths.values()), p.rescan, p.first_at, p.last_at)
