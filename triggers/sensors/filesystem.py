"""Filesystem sensor: watchdog (inotify) watches driven by rules, debounced per rule.

A :class:`FileRule` is (rule id, root, recursive, glob patterns, kinds,
debounce). Kinds: ``created``, ``modified``, ``deleted``, ``moved`` and
``arrived`` (a file closed after writing, or a move's destination inside the
root: a download renamed from ``x.part`` to ``x.csv`` *arrives*). Patterns
match the path relative to the root from the right, like
``PurePosixPath.match`` (``*.csv`` matches at any depth, ``in/*.csv`` only
below a directory ``in``).

Event shape: one :class:`~triggers.sensors._base.Change` per (rule, kind) per
debounce window, ``bgtasks.file.<kind>``, resource = the rule id, payload::

    {"rule": id, "root": root, "paths": [... at most max_paths, arrival order],
     "count": distinct paths in the window, "truncated": bool,
     "rescan": bool,                 # some paths came from a rescan
     "moves": [[src, dest], ...]}    # "moved" only; capped like paths

A window closes after ``debounce_s`` without events for that rule and kind,
or ``max_wait_s`` after its first event (trailing edge with a maximum wait),
so a burst of 1,000 files is one event per kind and rule.

Robustness, per FACTS:

* watches are scheduled with an ``event_filter`` (no ``FileOpenedEvent``, no
  ``FileClosedNoWriteEvent``): with the default mask a recursive watch of
  ~10k directories overflows forever;
* a kernel queue overflow reaches no handler, only a warning on logger
  ``watchdog.observers.inotify_c``: a logging handler catches it (only for
  this sensor's inotify thread) and every rule is rescanned;
* a watched root that is deleted, moved away or recreated is re-armed: the
  nearest existing ancestor of each root is watched (non-recursively, for
  directory events only) and any change there reconciles the watches.

Rescans compare a per-rule model of the matching files (path -> mtime and
size, kept current from events) with a fresh walk and emit the difference
(``created`` and ``arrived`` for new files, ``modified`` and ``arrived`` for
changed ones, ``deleted``), flagged ``rescan``. The model also de-duplicates
``created``/``deleted`` (watchdog can report a file created in a new
directory twice). Paths touched by events during a walk are left to the events.

Observers (``observer``): ``native`` is the platform's file-event API through
watchdog (inotify on Linux, FSEvents on macOS, ReadDirectoryChangesW on
Windows, kqueue on BSD); ``polling`` is the portable path, watchdog's polling
observer (a directory walk every ``poll_s``), adapted so that the same writes
give the same events as inotify (:class:`PortablePollingObserver`); ``auto``
takes native where watchdog has one for this platform and an inotify instance
can be made. What each can and cannot see: docs/sensors.md.

Threads: watchdog calls the handler on its dispatcher thread; the handler only
matches, updates the model and queues hits. Re-arming and rescans run in a
worker thread started from the event loop; the debounce runs on the loop.
"""

from __future__ import annotations

import asyncio
import collections
import ctypes
import logging
import os
import platform
import stat
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, cast

from watchdog.events import (
    DirCreatedEvent,
    DirDeletedEvent,
    DirMovedEvent,
    FileClosedEvent,
    FileCreatedEvent,
    FileDeletedEvent,
    FileModifiedEvent,
    FileMovedEvent,
    FileSystemEvent,
    FileSystemEventHandler,
)
from watchdog.observers import Observer
from watchdog.observers.api import BaseObserver, ObservedWatch
from watchdog.observers.polling import PollingEmitter

from triggers.sensors._base import Change, Emit, deliver
from triggers.sensors._debounce import Batch, Debouncer
from triggers.sensors._mechanism import Choice, choose
from triggers.sensors._filerules import (
    FileEventKind,
    FileRule,
    Hit,
    Stat,
    batch_to_change,
    classify,
    diff_trees,
    scan_tree,
    stat_file,
)

__all__ = ["ANCHOR_FILTER", "ROOT_FILTER", "FileEventKind", "FileRule", "FileSensor", "PortablePollingObserver"]

logger = logging.getLogger(__name__)

INOTIFY_LOGGER = "watchdog.observers.inotify_c"
NATIVE, POLLING = "native", "polling"
_NATIVE_NAMES = {"InotifyObserver": "inotify", "FSEventsObserver": "fsevents", "KqueueObserver": "kqueue",
                 "WindowsApiObserver": "windows"}

# No FileOpenedEvent / FileClosedNoWriteEvent (FACTS: the default mask overflows on big trees).
ROOT_FILTER: list[type[FileSystemEvent]] = [
    FileCreatedEvent, FileModifiedEvent, FileDeletedEvent, FileMovedEvent, FileClosedEvent,
    DirDeletedEvent, DirMovedEvent,
]
ANCHOR_FILTER: list[type[FileSystemEvent]] = [DirCreatedEvent, DirDeletedEvent, DirMovedEvent]


@dataclass
class _Model:
    files: dict[str, Stat] = field(default_factory=dict)
    touched: set[str] | None = None  # paths events changed while a walk was running
    baseline: bool = True            # the first walk reports nothing


@dataclass
class _Armed:
    watch: ObservedWatch
    identity: tuple[int, int]  # (st_dev, st_ino) of the root when armed
    recursive: bool


class _Handler(FileSystemEventHandler):
    def __init__(self, callback: Callable[[FileSystemEvent], None]) -> None:
        self._callback = callback

    def dispatch(self, event: FileSystemEvent) -> None:
        try:
            self._callback(event)
        except Exception:  # never kill watchdog's dispatcher thread
            logger.exception("file sensor: failed to handle %r", event)


class _OverflowHook(logging.Handler):
    """Catches watchdog's "Inotify queue overflowed" warning for one inotify thread."""

    def __init__(self, callback: Callable[[], None], thread_ident: Callable[[], int | None]) -> None:
        super().__init__(logging.WARNING)
        self._callback = callback
        self._thread_ident = thread_ident

    def emit(self, record: logging.LogRecord) -> None:
        if "overflow" not in str(record.msg).lower():
            return
        ident = self._thread_ident()
        if ident is None or record.thread == ident:
            self._callback()


_Control = str  # "reconcile" | "rescan"


def _identity(path: str) -> tuple[int, int] | None:
    """The directory's (device, inode); None when it is missing or a symlink (never followed:
    a root replaced by a link to elsewhere is not re-armed)."""
    try:
        st = os.lstat(path)
    except OSError:
        return None
    return (st.st_dev, st.st_ino) if stat.S_ISDIR(st.st_mode) else None


def default_observer() -> BaseObserver:
    """inotify with "full events" on Linux (a file moved in from an unwatched place is a
    move, so it *arrives*; plain watchdog reports it as created); the platform's default elsewhere."""
    if platform.system() == "Linux":
        from watchdog.observers.inotify import InotifyObserver

        return InotifyObserver(generate_full_events=True)
    return Observer()


def native_observer_name() -> str | None:
    """The native mechanism watchdog uses on this platform (``inotify``, ``fsevents``, ...); ``None``: none."""
    if platform.system() == "Linux":
        return "inotify"
    return _NATIVE_NAMES.get(getattr(Observer, "__name__", ""))


def native_observer_missing() -> str | None:
    """Why the native observer cannot run here; ``None`` when it can.

    On Linux an inotify instance is made and closed: the per-user instance
    limit (``fs.inotify.max_user_instances``, 128 by default) is the usual
    reason it cannot.
    """
    name = native_observer_name()
    if name is None:
        return f"watchdog has no native observer for {platform.system() or 'this platform'}"
    if name != "inotify":
        return None
    try:
        from watchdog.observers.inotify_c import inotify_init
    except Exception as exc:  # noqa: BLE001 - an unsupported libc: no inotify
        return f"no inotify in this libc ({exc})"
    fd = inotify_init()
    if fd < 0:
        err = ctypes.get_errno()
        return f"cannot make an inotify instance ({os.strerror(err) if err else 'inotify_init failed'})"
    os.close(fd)
    return None


class _PortablePollingEmitter(PollingEmitter):
    """watchdog's polling emitter, made to report what inotify reports for the same changes.

    * The first snapshot is taken in ``schedule()`` (the caller's thread), not
      later on the emitter's own thread: a change made right after a rule was
      armed is an event, never part of the baseline.
    * A new file that is not empty is also *modified*: inotify reports a file
      written after its creation as IN_CREATE then IN_MODIFY.
    * A file created or modified in one poll and unchanged at the next is
      *closed* (``FileClosedEvent``, so it *arrives*): a poll cannot see
      close(2), so "arrived" means "stopped changing for one interval". A file
      moved or deleted meanwhile does not arrive that way (a move arrives as
      the move).
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._snapshot = self._take_snapshot()
        self._written: set[str] = set()
        self._settling: set[str] = set()

    def on_thread_start(self) -> None:
        pass  # the baseline was taken in __init__

    def queue_event(self, event: FileSystemEvent) -> None:
        super().queue_event(event)
        src = os.fsdecode(event.src_path)
        if isinstance(event, (FileCreatedEvent, FileModifiedEvent)) and not event.is_directory:
            self._written.add(src)
            if isinstance(event, FileCreatedEvent):
                try:
                    size = self._snapshot.stat_info(event.src_path).st_size
                except KeyError:
                    size = 0
                if size > 0:
                    super().queue_event(FileModifiedEvent(event.src_path))
        elif isinstance(event, (FileMovedEvent, FileDeletedEvent)):
            self._written.discard(src)
            self._settling.discard(src)

    def queue_events(self, timeout: float) -> None:
        before = self._snapshot
        self._written = set()
        super().queue_events(timeout)
        if self._snapshot is before or not self.should_keep_running():
            self._settling |= self._written  # no new snapshot: keep waiting
            return
        paths = {os.fsdecode(p) for p in self._snapshot.paths}
        for path in sorted(self._settling - self._written):
            if path in paths:
                self.queue_event(FileClosedEvent(path))
        self._settling = self._written


class PortablePollingObserver(BaseObserver):
    """The portable observer: a walk of each watched tree every ``poll_s`` (see :class:`_PortablePollingEmitter`)."""

    def __init__(self, poll_s: float = 1.0) -> None:
        if poll_s <= 0:
            raise ValueError("poll_s must be > 0")
        super().__init__(_PortablePollingEmitter, timeout=poll_s)


def _anchor(root: str) -> str:
    """The nearest existing directory above ``root``."""
    path = os.path.dirname(root)
    while not os.path.isdir(path) and path != os.path.dirname(path):
        path = os.path.dirname(path)
    return path


class FileSensor:
    """Rule-driven file events. Rules can be added and removed while it runs.

    ``start()`` (blocking: it walks the trees) arms every rule; ``watch()``
    starts it if needed, delivers debounced changes until ``stop`` and closes
    what it started (pending batches are flushed on stop).

    :param observer: ``auto`` (native where available), ``native`` (raises
        :class:`~triggers.sensors._mechanism.MechanismUnavailable` where it is
        not) or ``polling``; the outcome is :attr:`choice` (``mechanism`` names
        the native API: ``inotify``, ``fsevents``, ...).
    :param poll_s: the polling observer's interval.
    :param observer_factory: builds the watchdog observer instead (tests); ``observer`` is then ignored.
    :param clock: monotonic seconds for the debounce.
    """

    name = "file"

    def __init__(
        self,
        rules: Iterable[FileRule] = (),
        *,
        observer: str = "auto",
        poll_s: float = 1.0,
        observer_factory: Callable[[], BaseObserver] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._rules: dict[str, FileRule] = {}
        self._models: dict[str, _Model] = {}
        for rule in rules:
            self._check_new(rule)
            self._rules[rule.rule_id] = rule
        if observer_factory is not None:
            self.choice = Choice(self.name, "custom", False, "custom", "an injected observer factory")
            self._observer_factory = observer_factory
        else:
            choice = choose(self.name, observer, NATIVE, POLLING,
                            None if observer == POLLING else native_observer_missing(), native_observer_name())
            if choice.native:
                self._observer_factory = default_observer
            else:
                if poll_s <= 0:
                    raise ValueError("poll_s must be > 0")
                self._observer_factory = lambda: PortablePollingObserver(poll_s)
            self.choice = choice
        self.mechanism = self.choice.mechanism
        self._clock = clock
        self._observer: BaseObserver | None = None
        self._hook: _OverflowHook | None = None
        self._lock = threading.Lock()       # rules, models, inbox (taken by watchdog's thread)
        self._arm_lock = threading.RLock()  # watch (re)arming; never taken by watchdog's thread
        self._armed: dict[str, _Armed] = {}
        self._stale: set[str] = set()       # roots whose watch died (deleted): re-arm even if the inode is reused
        self._anchors: dict[str, ObservedWatch] = {}
        self._root_handler = _Handler(self._on_root_event)
        self._anchor_handler = _Handler(self._on_anchor_event)
        self._inbox: collections.deque[Hit | _Control] = collections.deque()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake: asyncio.Event | None = None
        self._wake_pending = False
        self._debouncer = Debouncer(clock)
        self.overflows = 0

    # -- rules -------------------------------------------------------------------------------

    @property
    def rules(self) -> tuple[FileRule, ...]:
        with self._lock:
            return tuple(self._rules.values())

    def _check_new(self, rule: FileRule) -> None:
        if rule.rule_id in self._rules:
            raise ValueError(f"file rule {rule.rule_id!r} already exists")

    def add_rule(self, rule: FileRule) -> None:
        """Add a rule; when running, arm it now (blocking: walks its root once).

        :raises ValueError: a rule with that id exists.
        """
        with self._arm_lock:
            with self._lock:
                self._check_new(rule)
                self._rules[rule.rule_id] = rule
                self._models[rule.rule_id] = _Model()
            if self._observer is not None:
                self._maintain(rescan_rules={rule.rule_id})

    def remove_rule(self, rule_id: str) -> None:
        """Remove a rule and drop its pending events (unknown ids are ignored)."""
        with self._arm_lock:
            with self._lock:
                if self._rules.pop(rule_id, None) is None:
                    return
                self._models.pop(rule_id, None)
            if self._observer is not None:
                self._maintain(rescan_rules=set())
        self._post("reconcile")  # lets the loop drop the rule's pending batches

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        """Start the observer and arm every rule (idempotent)."""
        with self._arm_lock:
            if self._observer is not None:
                return
            observer = self._observer_factory()
            observer.start()
            self._observer = observer
            self._hook = _OverflowHook(self._on_overflow, self._inotify_thread_ident)
            inotify_logger = logging.getLogger(INOTIFY_LOGGER)
            inotify_logger.addHandler(self._hook)
            if not inotify_logger.isEnabledFor(logging.WARNING):
                inotify_logger.setLevel(logging.WARNING)  # the overflow warning must reach the hook
            with self._lock:
                for rule_id in self._rules:
                    self._models[rule_id] = _Model()
                rule_ids = set(self._rules)
            self._maintain(rescan_rules=rule_ids)

    def close(self) -> None:
        """Stop the observer and forget the watches (rules are kept)."""
        with self._arm_lock:
            observer, self._observer = self._observer, None
            if self._hook is not None:
                logging.getLogger(INOTIFY_LOGGER).removeHandler(self._hook)
                self._hook = None
            self._armed.clear()
            self._anchors.clear()
        if observer is not None:
            observer.stop()
            observer.join()

    def _inotify_thread_ident(self) -> int | None:
        fd_thread = getattr(self._observer, "_inotify_fd", None)  # watchdog's InotifyObserver
        return getattr(fd_thread, "ident", None)

    # -- watchdog threads --------------------------------------------------------------------

    def _post(self, item: Hit | _Control) -> None:
        with self._lock:
            self._inbox.append(item)
            loop, notify = self._loop, not self._wake_pending
            if loop is not None and notify:
                self._wake_pending = True
        if loop is not None and notify:
            try:
                loop.call_soon_threadsafe(self._set_wake)
            except RuntimeError:  # the loop closed meanwhile
                pass

    def _set_wake(self) -> None:
        with self._lock:
            self._wake_pending = False
        if self._wake is not None:
            self._wake.set()

    def _on_overflow(self) -> None:
        self.overflows += 1
        self._post("rescan")

    def _on_root_event(self, event: FileSystemEvent) -> None:
        if event.is_directory:
            self._on_root_dir_event(event)
            return
        at = self._clock()
        hits: list[Hit] = []
        with self._lock:
            for rule in self._rules.values():
                model = self._models.get(rule.rule_id)
                if model is None:
                    continue
                for kind, path, source in classify(rule, event):
                    if self._apply(model, kind, path, source) and kind in rule.kinds:
                        hits.append(Hit(rule.rule_id, kind, path, source, False, at))
        for hit in hits:
            self._post(hit)

    def _on_root_dir_event(self, event: FileSystemEvent) -> None:
        """A directory went away or moved in: watchdog reports no file events for its content
        (a directory moved out, whose files stay in the model) or only ``created`` ones (a
        directory moved in from elsewhere, whose files are complete: they *arrive*)."""
        src = os.fsdecode(event.src_path)
        dest = os.fsdecode(getattr(event, "dest_path", "") or "")
        if isinstance(event, DirDeletedEvent) and src in self._armed:
            with self._lock:
                self._stale.add(src)
            self._post("reconcile")
            return
        gone = src if isinstance(event, DirDeletedEvent) or (isinstance(event, DirMovedEvent) and not dest) else ""
        moved_in = dest if isinstance(event, DirMovedEvent) and dest and not src else ""
        at = self._clock()
        hits: list[Hit] = []
        with self._lock:
            rules = [r for r in self._rules.values() if r.rule_id in self._models]
        for rule in rules:
            arrived = scan_tree(rule, moved_in) if moved_in and rule.in_scope(os.path.join(moved_in, "x")) else {}
            with self._lock:
                model = self._models.get(rule.rule_id)
                if model is None:
                    continue
                if gone:
                    for path in [p for p in model.files if p.startswith(gone + os.sep)]:
                        self._apply(model, FileEventKind.DELETED, path, None)
                        if FileEventKind.DELETED in rule.kinds:
                            hits.append(Hit(rule.rule_id, FileEventKind.DELETED, path, None, False, at))
            if FileEventKind.ARRIVED in rule.kinds:
                hits += [Hit(rule.rule_id, FileEventKind.ARRIVED, path, None, False, at) for path in arrived]
        for hit in hits:
            self._post(hit)

    @staticmethod
    def _apply(model: _Model, kind: FileEventKind, path: str, source: str | None) -> bool:
        """Update the model from an event; return whether the event should be reported."""
        if model.touched is not None:
            model.touched.add(path)
            if source is not None:
                model.touched.add(source)
        if kind is FileEventKind.CREATED:
            if path in model.files:
                return False  # already known (watchdog's duplicate for a new directory)
            model.files[path] = stat_file(path)
        elif kind is FileEventKind.DELETED:
            return model.files.pop(path, False) is not False
        elif kind is FileEventKind.MOVED:
            if source is not None:
                model.files.pop(source, None)
            model.files[path] = stat_file(path)
        else:  # modified, arrived
            model.files[path] = stat_file(path)
        return True

    def _on_anchor_event(self, event: FileSystemEvent) -> None:
        paths = {os.fsdecode(event.src_path)}
        if isinstance(event, DirMovedEvent):
            paths.add(os.fsdecode(event.dest_path))
        with self._lock:
            roots = {rule.root for rule in self._rules.values()}
        for path in paths:
            if path in self._anchors or any(r == path or r.startswith(path + os.sep) for r in roots):
                self._post("reconcile")
                return

    # -- arming and rescans (worker thread or caller) ----------------------------------------

    def _maintain(self, rescan_rules: set[str] | None) -> None:
        """Reconcile the watches with the rules and the disk, then rescan.

        Rescans the rules in ``rescan_rules`` (``None``: all) plus those whose
        root was (re)armed or lost. Hits go to the inbox.
        """
        with self._arm_lock:
            observer = self._observer
            if observer is None:
                return
            with self._lock:
                rules = dict(self._rules)
            wanted: dict[str, bool] = {}
            for rule in rules.values():
                wanted[rule.root] = wanted.get(rule.root, False) or rule.recursive
            alive = {e.watch: e.is_alive() for e in observer.emitters}
            with self._lock:
                stale, self._stale = self._stale, set()
            changed_roots: set[str] = set()

            for root in list(self._armed):
                if root not in wanted:
                    self._unschedule(observer, self._armed.pop(root).watch)
            for root, recursive in wanted.items():
                identity = _identity(root)
                armed = self._armed.get(root)
                if armed is not None and (
                    root in stale
                    or identity != armed.identity
                    or recursive != armed.recursive
                    or not alive.get(armed.watch, False)
                ):
                    self._unschedule(observer, self._armed.pop(root).watch)
                    armed = None
                    changed_roots.add(root)
                if armed is None and identity is not None:
                    try:
                        watch = observer.schedule(self._root_handler, root, recursive=recursive,
                                                  event_filter=ROOT_FILTER)
                    except OSError:
                        logger.warning("file sensor: cannot watch %s yet", root, exc_info=True)
                    else:
                        self._armed[root] = _Armed(watch, identity, recursive)
                        changed_roots.add(root)

            anchors = {_anchor(root) for root in wanted}
            for path in list(self._anchors):
                if path not in anchors or not alive.get(self._anchors[path], False) or not os.path.isdir(path):
                    self._unschedule(observer, self._anchors.pop(path))
            for path in anchors - self._anchors.keys():
                try:
                    self._anchors[path] = observer.schedule(self._anchor_handler, path, recursive=False,
                                                            event_filter=ANCHOR_FILTER)
                except OSError:
                    logger.warning("file sensor: cannot watch %s", path, exc_info=True)

            targets = set(rules) if rescan_rules is None else set(rescan_rules)
            targets |= {rid for rid, rule in rules.items() if rule.root in changed_roots}
            for rule_id in sorted(targets):
                if rule_id in rules:
                    self._rescan(rules[rule_id])

    @staticmethod
    def _unschedule(observer: BaseObserver, watch: ObservedWatch) -> None:
        try:
            observer.unschedule(watch)
        except KeyError:
            pass

    def _rescan(self, rule: FileRule) -> None:
        with self._lock:
            model = self._models.get(rule.rule_id)
            if model is None:
                return
            model.touched = set()
        found = scan_tree(rule) if rule.rule_id in self._rules else {}
        at = self._clock()
        hits: list[Hit] = []
        with self._lock:
            if self._models.get(rule.rule_id) is not model:
                return  # the rule was removed meanwhile
            touched, model.touched = model.touched or set(), None
            for kind, path in diff_trees(model.files, found):
                if path in touched:
                    continue  # an event already told us (and the model) about it
                if kind is FileEventKind.DELETED:
                    model.files.pop(path, None)
                elif kind is not FileEventKind.ARRIVED:
                    model.files[path] = found[path]
                if not model.baseline and kind in rule.kinds:
                    hits.append(Hit(rule.rule_id, kind, path, None, True, at))
            model.baseline = False
        for hit in hits:
            self._post(hit)

    # -- the event loop side -----------------------------------------------------------------

    async def watch(self, emit: Emit, stop: asyncio.Event) -> None:
        """Deliver debounced changes until ``stop``; flushes pending batches when stopping."""
        started_here = self._observer is None
        if started_here:
            await asyncio.to_thread(self.start)
        self._wake = asyncio.Event()
        with self._lock:
            self._loop = asyncio.get_running_loop()
            self._wake_pending = False
        self._wake.set()  # whatever queued before the loop was known
        stopper = asyncio.ensure_future(stop.wait())
        try:
            while True:
                self._wake.clear()
                await self._drain()
                for change in self._changes(self._debouncer.pop_due()):
                    await deliver(emit, change)
                if stop.is_set():
                    break
                deadline = self._debouncer.next_deadline()
                timeout = None if deadline is None else max(0.0, deadline - self._clock())
                waker = asyncio.ensure_future(self._wake.wait())
                try:
                    await asyncio.wait({stopper, waker}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    waker.cancel()
            await self._drain()
            for change in self._changes(self._debouncer.pop_all()):
                await deliver(emit, change)
        finally:
            stopper.cancel()
            with self._lock:
                self._loop = None
            self._wake = None
            if started_here:
                await asyncio.to_thread(self.close)

    async def _drain(self) -> None:
        controls: set[str] = set()
        while True:
            with self._lock:
                if not self._inbox:
                    break
                items = list(self._inbox)
                self._inbox.clear()
            for item in items:
                if isinstance(item, Hit):
                    rule = self._rules.get(item.rule_id)
                    if rule is not None:
                        self._debouncer.add((item.rule_id, item.kind), item.path, quiet_s=rule.debounce_s,
                                            max_wait_s=rule.max_wait_s, source=item.source, rescan=item.rescan,
                                            now=item.at)
                else:
                    controls.add(item)
            if controls:
                rescan_all = "rescan" in controls
                controls.clear()
                await asyncio.to_thread(self._maintain, None if rescan_all else set())
        live = set(self._rules)
        self._debouncer.discard(lambda key: isinstance(key, tuple) and key[0] not in live)

    def _changes(self, batches: list[Batch]) -> list[Change]:
        out = []
        for batch in batches:
            rule_id, kind = cast(tuple[str, FileEventKind], batch.key)
            rule = self._rules.get(rule_id)
            if rule is not None:
                out.append(batch_to_change(rule, kind, batch))
        return out
