"""File rules and the pure parts of the filesystem sensor: matching, classification, rescan diffs.

No threads and no watchdog observer here; :mod:`triggers.sensors.filesystem`
wires these to inotify. See that module for the event shape.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from pathlib import PurePosixPath
from typing import Any

from watchdog.events import (
    FileClosedEvent,
    FileCreatedEvent,
    FileDeletedEvent,
    FileModifiedEvent,
    FileMovedEvent,
    FileSystemEvent,
)

from triggers.sensors._base import Change
from triggers.sensors._debounce import Batch


class FileEventKind(StrEnum):
    CREATED = "created"
    MODIFIED = "modified"
    DELETED = "deleted"
    MOVED = "moved"
    ARRIVED = "arrived"


ALL_KINDS = frozenset(FileEventKind)

Stat = tuple[int, int] | None  # (mtime_ns, size); None when the file vanished before its stat


@dataclass(frozen=True)
class FileRule:
    """What to watch and which changes to report. ``root`` is made absolute."""

    rule_id: str
    root: str
    recursive: bool = True
    patterns: tuple[str, ...] = ("*",)
    kinds: frozenset[FileEventKind] = ALL_KINDS
    debounce_s: float = 1.0
    max_wait_s: float = 10.0
    max_paths: int = 100

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", os.path.abspath(os.fspath(self.root)))
        object.__setattr__(self, "patterns", tuple(self.patterns))
        object.__setattr__(self, "kinds", frozenset(FileEventKind(k) for k in self.kinds))
        if not self.rule_id or not self.patterns or not self.kinds:
            raise ValueError("a file rule needs an id, at least one pattern and at least one kind")
        if self.debounce_s < 0 or self.max_wait_s < self.debounce_s or self.max_paths < 1:
            raise ValueError("need 0 <= debounce_s <= max_wait_s and max_paths >= 1")

    def in_scope(self, path: str) -> bool:
        """Whether ``path`` lies where this rule looks (below the root; directly in it if not recursive)."""
        if not path:
            return False
        rel = os.path.relpath(path, self.root)
        if rel == "." or rel == ".." or rel.startswith(".." + os.sep):
            return False
        return self.recursive or os.sep not in rel

    def matches(self, path: str) -> bool:
        """In scope and matching one of the patterns."""
        if not self.in_scope(path):
            return False
        rel = PurePosixPath(os.path.relpath(path, self.root))
        return any(rel.match(p) for p in self.patterns)


@dataclass(frozen=True)
class Hit:
    """One rule-level event before debouncing."""

    rule_id: str
    kind: FileEventKind
    path: str
    source: str | None = None
    rescan: bool = False
    at: float = 0.0


def classify(rule: FileRule, event: FileSystemEvent) -> list[tuple[FileEventKind, str, str | None]]:
    """Pure: what a watchdog event means for one rule, before model de-duplication and kind filtering."""
    src = os.fsdecode(event.src_path)
    if isinstance(event, FileMovedEvent):
        # With watchdog's "full events" a move from (to) an unwatched place has an empty src (dest).
        dest = os.fsdecode(event.dest_path)
        src_in, dest_in = bool(src) and rule.in_scope(src), bool(dest) and rule.in_scope(dest)
        src_match, dest_match = src_in and rule.matches(src), dest_in and rule.matches(dest)
        out: list[tuple[FileEventKind, str, str | None]] = []
        if src_in and dest_in:
            if src_match or dest_match:
                out.append((FileEventKind.MOVED, dest, src))
        elif src_match:
            out.append((FileEventKind.DELETED, src, None))
        elif dest_match:
            out.append((FileEventKind.CREATED, dest, None))
        if dest_match:
            out.append((FileEventKind.ARRIVED, dest, None))
        return out
    kind = {
        FileCreatedEvent: FileEventKind.CREATED,
        FileModifiedEvent: FileEventKind.MODIFIED,
        FileDeletedEvent: FileEventKind.DELETED,
        FileClosedEvent: FileEventKind.ARRIVED,
    }.get(type(event))
    if kind is None or not rule.matches(src):
        return []
    return [(kind, src, None)]


def diff_trees(old: Mapping[str, Stat], new: Mapping[str, Stat]) -> list[tuple[FileEventKind, str]]:
    """Pure: what a rescan reports, sorted by path."""
    out: list[tuple[FileEventKind, str]] = []
    for path in sorted(old.keys() | new.keys()):
        if path not in new:
            out.append((FileEventKind.DELETED, path))
        elif path not in old:
            out += [(FileEventKind.CREATED, path), (FileEventKind.ARRIVED, path)]
        elif old[path] != new[path]:
            out += [(FileEventKind.MODIFIED, path), (FileEventKind.ARRIVED, path)]
    return out


def stat_file(path: str) -> Stat:
    try:
        st = os.lstat(path)
    except OSError:
        return None
    return st.st_mtime_ns, st.st_size


def scan_tree(rule: FileRule, top: str | None = None) -> dict[str, Stat]:
    """Walk the rule's root (or ``top`` inside it; no symlinks followed) and stat the matching files."""
    found: dict[str, Stat] = {}
    stack = [top or rule.root]
    while stack:
        top = stack.pop()
        try:
            entries = list(os.scandir(top))
        except OSError:
            continue
        for entry in entries:
            try:
                if entry.is_dir(follow_symlinks=False):
                    if rule.recursive:
                        stack.append(entry.path)
                elif rule.matches(entry.path):
                    st = entry.stat(follow_symlinks=False)
                    found[entry.path] = (st.st_mtime_ns, st.st_size)
            except OSError:
                continue
    return found


def batch_to_change(rule: FileRule, kind: FileEventKind, batch: Batch) -> Change:
    """The event for one debounced batch (see the module docstring for the shape)."""
    paths = list(batch.paths[: rule.max_paths])
    payload: dict[str, Any] = {
        "rule": rule.rule_id,
        "root": rule.root,
        "paths": paths,
        "count": len(batch.paths),
        "truncated": len(batch.paths) > rule.max_paths,
        "rescan": batch.rescan,
    }
    if kind is FileEventKind.MOVED:
        payload["moves"] = [[s, d] for d, s in zip(paths, batch.sources[: rule.max_paths], strict=True)]
    return Change("file", kind.value, rule.rule_id, payload)
