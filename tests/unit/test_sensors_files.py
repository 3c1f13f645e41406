"""The file sensor's pure parts: debounce on a fake clock, rule matching, event classification,
rescan diffs and the batch event shape."""

from __future__ import annotations

import json
import os

import pytest
from watchdog.events import (
    FileClosedEvent,
    FileClosedNoWriteEvent,
    FileCreatedEvent,
    FileDeletedEvent,
    FileModifiedEvent,
    FileMovedEvent,
    FileOpenedEvent,
)

from triggers.sensors import Debouncer, FileEventKind, FileRule
from triggers.sensors._filerules import batch_to_change, classify, diff_trees
from triggers.sensors.filesystem import ANCHOR_FILTER, ROOT_FILTER

K = FileEventKind


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_debounce_trailing_edge() -> None:
    clock = Clock()
    d = Debouncer(clock)
    for i in range(5):
        d.add("k", f"/p{i}", quiet_s=1.0, max_wait_s=10.0)
        clock.now += 0.5
    assert d.pop_due() == []                        # last event 0.5 s ago
    assert d.next_deadline() == 1000.0 + 2.0 + 1.0  # last event at +2.0, quiet 1 s
    clock.now = 1003.0
    [batch] = d.pop_due()
    assert batch.paths == ("/p0", "/p1", "/p2", "/p3", "/p4")
    assert (batch.first_at, batch.last_at) == (1000.0, 1002.0)
    assert len(d) == 0 and d.next_deadline() is None


def test_debounce_max_wait_cuts_an_endless_burst() -> None:
    clock = Clock()
    d = Debouncer(clock)
    released = []
    for i in range(100):  # an event every 0.5 s for 50 s; quiet never reached
        d.add("k", f"/p{i}", quiet_s=1.0, max_wait_s=10.0)
        released += d.pop_due()
        clock.now += 0.5
    assert [len(b.paths) for b in released] == [21, 21, 21, 21]  # at +10, +20.5, +31, +41.5
    assert [b.paths[0] for b in released] == ["/p0", "/p21", "/p42", "/p63"]


def test_debounce_dedups_paths_per_key_and_keeps_keys_apart() -> None:
    clock = Clock()
    d = Debouncer(clock)
    d.add(("r", "created"), "/a", quiet_s=1, max_wait_s=5)
    d.add(("r", "modified"), "/a", quiet_s=1, max_wait_s=5)
    d.add(("r", "modified"), "/b", quiet_s=1, max_wait_s=5, rescan=True)
    d.add(("r", "modified"), "/a", quiet_s=1, max_wait_s=5)
    clock.now += 1
    batches = {b.key: b for b in d.pop_due()}
    assert batches[("r", "created")].paths == ("/a",) and not batches[("r", "created")].rescan
    assert batches[("r", "modified")].paths == ("/a", "/b") and batches[("r", "modified")].rescan


def test_debounce_pop_all_and_discard() -> None:
    d = Debouncer(Clock())
    d.add(("gone", "created"), "/x", quiet_s=5, max_wait_s=5)
    d.add(("kept", "created"), "/y", quiet_s=5, max_wait_s=5)
    d.discard(lambda key: key[0] == "gone")
    assert [b.key for b in d.pop_all()] == [("kept", "created")]
    assert len(d) == 0


def test_rule_scope_and_patterns(tmp_path) -> None:
    root = str(tmp_path)
    rule = FileRule("r", root, patterns=("*.csv", "in/*.json"))
    assert rule.matches(f"{root}/a.csv") and rule.matches(f"{root}/x/y/a.csv")
    assert rule.matches(f"{root}/in/a.json") and not rule.matches(f"{root}/a.json")
    assert not rule.matches(f"{root}/a.txt")
    assert not rule.matches(f"{root}-other/a.csv") and not rule.matches(root)
    flat = FileRule("f", root, recursive=False)
    assert flat.matches(f"{root}/a") and not flat.matches(f"{root}/sub/a")


def test_rule_validation_and_normalisation() -> None:
    rule = FileRule("r", "relative/dir", kinds=frozenset({"arrived"}))
    assert rule.root == os.path.abspath("relative/dir") and rule.kinds == {K.ARRIVED}
    with pytest.raises(ValueError):
        FileRule("r", "/x", kinds=frozenset({"opened"}))
    with pytest.raises(ValueError):
        FileRule("r", "/x", debounce_s=5, max_wait_s=1)
    with pytest.raises(ValueError):
        FileRule("", "/x")


RULE = FileRule("csv", "/w", patterns=("*.csv",))


@pytest.mark.parametrize(("event", "expected"), [
    (FileCreatedEvent("/w/a.csv"), [(K.CREATED, "/w/a.csv", None)]),
    (FileModifiedEvent("/w/a.csv"), [(K.MODIFIED, "/w/a.csv", None)]),
    (FileClosedEvent("/w/a.csv"), [(K.ARRIVED, "/w/a.csv", None)]),
    (FileDeletedEvent("/w/a.csv"), [(K.DELETED, "/w/a.csv", None)]),
    (FileCreatedEvent("/w/a.txt"), []),
    (FileOpenedEvent("/w/a.csv"), []),
    # a download renamed into its final name arrives
    (FileMovedEvent("/w/a.csv.part", "/w/a.csv"), [(K.MOVED, "/w/a.csv", "/w/a.csv.part"),
                                                   (K.ARRIVED, "/w/a.csv", None)]),
    (FileMovedEvent("/w/a.csv", "/w/a.bak"), [(K.MOVED, "/w/a.bak", "/w/a.csv")]),
    # moved in from an unwatched place (watchdog's full events: empty src) / out of the root
    (FileMovedEvent("", "/w/b.csv"), [(K.CREATED, "/w/b.csv", None), (K.ARRIVED, "/w/b.csv", None)]),
    (FileMovedEvent("/w/b.csv", ""), [(K.DELETED, "/w/b.csv", None)]),
    (FileMovedEvent("/elsewhere/b.csv", "/w/b.csv"), [(K.CREATED, "/w/b.csv", None),
                                                      (K.ARRIVED, "/w/b.csv", None)]),
])
def test_classify(event, expected) -> None:
    assert classify(RULE, event) == expected


def test_watch_filters_leave_out_open_and_close_nowrite() -> None:
    for forbidden in (FileOpenedEvent, FileClosedNoWriteEvent):
        assert forbidden not in ROOT_FILTER and forbidden not in ANCHOR_FILTER


def test_diff_trees() -> None:
    old = {"/w/a": (1, 1), "/w/b": (1, 1), "/w/c": (1, 1)}
    new = {"/w/a": (1, 1), "/w/b": (2, 5), "/w/d": (1, 1)}
    assert diff_trees(old, new) == [(K.MODIFIED, "/w/b"), (K.ARRIVED, "/w/b"), (K.DELETED, "/w/c"),
                                    (K.CREATED, "/w/d"), (K.ARRIVED, "/w/d")]
    assert diff_trees(old, old) == []


def test_batch_event_shape() -> None:
    clock = Clock()
    d = Debouncer(clock)
    rule = FileRule("dl", "/w", max_paths=2)
    for i in range(3):
        d.add(("dl", K.MOVED), f"/w/f{i}", source=f"/w/f{i}.part", quiet_s=0, max_wait_s=0)
    [batch] = d.pop_due()
    change = batch_to_change(rule, K.MOVED, batch)
    assert (change.event, change.resource) == ("bgtasks.file.moved", "dl")
    assert change.payload == {
        "rule": "dl", "root": "/w", "paths": ["/w/f0", "/w/f1"], "count": 3, "truncated": True, "rescan": False,
        "moves": [["/w/f0.part", "/w/f0"], ["/w/f1.part", "/w/f1"]]}
    json.dumps(change.to_dict())
