"""The file sensor against real inotify on temp dirs.

Every test stops the sensor before its final assertions: ``watch()`` flushes
pending batches on stop, so "emitted once" is checked on the complete output.
Waits are on the sensor's output with a generous deadline; debounce windows
are parameters of the rules, never assertions.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from tests.netns import SensorProcess
from triggers.sensors import Change, FileRule, FileSensor

DEADLINE_S = 30.0

# watchdog re-adds the watch of a directory created inside a new directory (mkdir -p) and warns.
pytestmark = pytest.mark.filterwarnings("ignore:Callback with id:RuntimeWarning")


class Collector:
    """An ``emit`` that records changes and lets a test wait for one."""

    def __init__(self) -> None:
        self.changes: list[Change] = []
        self._arrived = asyncio.Condition()

    async def __call__(self, change: Change) -> None:
        async with self._arrived:
            self.changes.append(change)
            self._arrived.notify_all()

    async def wait_for(self, predicate: Callable[[Change], bool], what: str) -> Change:
        async def find() -> Change:
            async with self._arrived:
                while True:
                    for change in self.changes:
                        if predicate(change):
                            return change
                    await self._arrived.wait()
        try:
            return await asyncio.wait_for(find(), DEADLINE_S)
        except TimeoutError:
            raise AssertionError(f"timed out waiting for {what}; got {self.changes}") from None

    async def wait_path(self, event: str, path: Path) -> Change:
        return await self.wait_for(lambda c: c.event == event and str(path) in c.payload["paths"],
                                   f"{event} {path}")


class Running:
    def __init__(self, sensor: FileSensor) -> None:
        self.sensor = sensor
        self.collector = Collector()
        self.stop = asyncio.Event()
        self.task: asyncio.Task[None] | None = None

    async def finish(self) -> list[Change]:
        """Stop the sensor (flushing pending batches) and return everything it emitted."""
        self.stop.set()
        if self.task is not None:
            await asyncio.wait_for(self.task, DEADLINE_S)
        return self.collector.changes


@asynccontextmanager
async def running(*rules: FileRule) -> AsyncIterator[Running]:
    sensor = FileSensor(rules)
    await asyncio.to_thread(sensor.start)  # armed: changes from here on are seen
    run = Running(sensor)
    run.task = asyncio.create_task(sensor.watch(run.collector, run.stop))
    try:
        yield run
    finally:
        await run.finish()
        await asyncio.to_thread(sensor.close)


def write(path: Path, data: str = "x") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        f.write(data)


def events(changes: list[Change], rule: str | None = None) -> list[str]:
    return [c.event for c in changes if rule is None or c.resource == rule]


async def test_a_dropped_file_is_created_and_arrived_once_with_its_path(tmp_path: Path) -> None:
    inbox = tmp_path / "in"
    inbox.mkdir()
    rule = FileRule("drop", inbox, patterns=("*.csv",), kinds=frozenset({"created", "arrived"}), debounce_s=0.1)
    async with running(rule) as run:
        write(inbox / "notes.txt")  # does not match
        write(inbox / "data.csv", "a,b\n")
        await run.collector.wait_path("bgtasks.file.arrived", inbox / "data.csv")
        changes = await run.finish()
    assert sorted(events(changes)) == ["bgtasks.file.arrived", "bgtasks.file.created"]
    for change in changes:
        assert change.resource == "drop"
        assert change.payload == {"rule": "drop", "root": str(inbox), "paths": [str(inbox / "data.csv")],
                                  "count": 1, "truncated": False, "rescan": False}


async def test_a_burst_of_1000_files_is_one_batch_per_rule(tmp_path: Path) -> None:
    inbox = tmp_path / "burst"
    inbox.mkdir()
    # The quiet window (2 s) is the rule's parameter: creating 1,000 files never pauses that long.
    created = FileRule("created", inbox, kinds=frozenset({"created"}), debounce_s=2.0, max_wait_s=120, max_paths=50)
    arrived = FileRule("arrived", inbox, kinds=frozenset({"arrived"}), debounce_s=2.0, max_wait_s=120, max_paths=50)
    paths = [inbox / f"f{i:04d}.bin" for i in range(1000)]
    async with running(created, arrived) as run:
        await asyncio.to_thread(lambda: [write(p) for p in paths])
        await run.collector.wait_for(lambda c: c.resource == "created", "the created batch")
        await run.collector.wait_for(lambda c: c.resource == "arrived", "the arrived batch")
        changes = await run.finish()
    assert events(changes, "created") == ["bgtasks.file.created"]
    assert events(changes, "arrived") == ["bgtasks.file.arrived"]
    for change in changes:
        assert change.payload["count"] == 1000
        assert change.payload["truncated"] is True
        assert change.payload["paths"] == [str(p) for p in paths[:50]]


async def test_a_deleted_and_recreated_root_keeps_working(tmp_path: Path) -> None:
    inbox = tmp_path / "in"
    inbox.mkdir()
    rule = FileRule("r", inbox, kinds=frozenset({"created", "deleted"}), debounce_s=0.05)
    async with running(rule) as run:
        write(inbox / "a.csv")
        await run.collector.wait_path("bgtasks.file.created", inbox / "a.csv")
        shutil.rmtree(inbox)
        await run.collector.wait_path("bgtasks.file.deleted", inbox / "a.csv")
        inbox.mkdir()
        write(inbox / "b.csv")  # may land before the re-arm: then the re-arm's rescan reports it
        await run.collector.wait_path("bgtasks.file.created", inbox / "b.csv")
        write(inbox / "c.csv")  # after b was seen the watch is armed: inotify reports c
        c = await run.collector.wait_path("bgtasks.file.created", inbox / "c.csv")
        assert c.payload["rescan"] is False
        changes = await run.finish()
    created = [p for ch in changes if ch.event == "bgtasks.file.created" for p in ch.payload["paths"]]
    assert sorted(created) == [str(inbox / n) for n in ("a.csv", "b.csv", "c.csv")]


async def test_a_root_that_does_not_exist_yet_is_armed_when_it_appears(tmp_path: Path) -> None:
    inbox = tmp_path / "later" / "deeper" / "in"
    rule = FileRule("later", inbox, kinds=frozenset({"created"}), debounce_s=0.05)
    async with running(rule) as run:
        inbox.mkdir(parents=True)
        write(inbox / "first.txt")
        await run.collector.wait_path("bgtasks.file.created", inbox / "first.txt")
        write(inbox / "second.txt")
        second = await run.collector.wait_path("bgtasks.file.created", inbox / "second.txt")
        assert second.payload["rescan"] is False


async def test_renames_and_moves(tmp_path: Path) -> None:
    inbox, outside = tmp_path / "in", tmp_path / "out"
    inbox.mkdir()
    outside.mkdir()
    rule = FileRule("csv", inbox, patterns=("*.csv",), debounce_s=0.05)
    async with running(rule) as run:
        write(inbox / "dl.csv.part")
        os.rename(inbox / "dl.csv.part", inbox / "dl.csv")  # a finished download
        arrived = await run.collector.wait_path("bgtasks.file.arrived", inbox / "dl.csv")
        assert arrived.payload["rescan"] is False
        moved = await run.collector.wait_path("bgtasks.file.moved", inbox / "dl.csv")
        assert moved.payload["moves"] == [[str(inbox / "dl.csv.part"), str(inbox / "dl.csv")]]

        write(outside / "in-from-outside.csv")
        os.rename(outside / "in-from-outside.csv", inbox / "in-from-outside.csv")
        await run.collector.wait_path("bgtasks.file.created", inbox / "in-from-outside.csv")
        await run.collector.wait_path("bgtasks.file.arrived", inbox / "in-from-outside.csv")

        os.rename(inbox / "dl.csv", outside / "dl.csv")
        await run.collector.wait_path("bgtasks.file.deleted", inbox / "dl.csv")


async def test_files_in_a_new_nested_directory_are_created_once(tmp_path: Path) -> None:
    inbox = tmp_path / "in"
    inbox.mkdir()
    rule = FileRule("nested", inbox, kinds=frozenset({"created"}), debounce_s=0.2)
    async with running(rule) as run:
        write(inbox / "a" / "b" / "x.dat")
        write(inbox / "a" / "b" / "c" / "y.dat")
        await run.collector.wait_path("bgtasks.file.created", inbox / "a" / "b" / "c" / "y.dat")
        changes = await run.finish()
    paths = [p for ch in changes for p in ch.payload["paths"]]
    assert sorted(paths) == [str(inbox / "a" / "b" / "c" / "y.dat"), str(inbox / "a" / "b" / "x.dat")]


async def test_rules_are_added_and_removed_at_runtime(tmp_path: Path) -> None:
    first, second = tmp_path / "first", tmp_path / "second"
    first.mkdir()
    second.mkdir()
    write(second / "existing.txt")  # found by the new rule's baseline walk: not reported
    async with running(FileRule("first", first, kinds=frozenset({"created"}), debounce_s=0.05)) as run:
        await asyncio.to_thread(run.sensor.add_rule,
                                FileRule("second", second, kinds=frozenset({"created"}), debounce_s=0.05))
        write(second / "new.txt")
        await run.collector.wait_path("bgtasks.file.created", second / "new.txt")

        await asyncio.to_thread(run.sensor.remove_rule, "second")
        write(second / "ignored.txt")
        write(first / "marker.txt")  # after the ignored file, with the same debounce
        await run.collector.wait_path("bgtasks.file.created", first / "marker.txt")
        changes = await run.finish()
    assert [(c.resource, c.payload["paths"]) for c in changes] == [
        ("second", [str(second / "new.txt")]),
        ("first", [str(first / "marker.txt")]),
    ]
    assert [r.rule_id for r in run.sensor.rules] == ["first"]


def test_an_inotify_queue_overflow_is_followed_by_a_rescan(tmp_path: Path) -> None:
    """A stopped sensor process cannot read its inotify queue: more events than
    ``max_queued_events`` overflow it for certain. No file may be lost."""
    inbox = tmp_path / "in"
    inbox.mkdir()
    max_queued = int(Path("/proc/sys/fs/inotify/max_queued_events").read_text())
    n_files = max_queued // 2 + 2000  # each file: IN_CREATE + IN_CLOSE_WRITE
    proc = SensorProcess(["file", "--rule", f"ovf={inbox}", "--kinds", "created",
                          "--debounce-s", "0.5", "--max-wait-s", "120"])
    try:
        proc.ready()
        proc.proc.send_signal(signal.SIGSTOP)
        try:
            for i in range(n_files):
                with open(inbox / f"f{i:06d}", "w"):
                    pass
        finally:
            proc.proc.send_signal(signal.SIGCONT)
        total = 0
        deadline = time.monotonic() + 120
        while total < n_files:
            line = proc.wait_event("bgtasks.file.created", timeout_s=max(1.0, deadline - time.monotonic()))
            total += line["payload"]["count"]
        created = [line for line in proc.stop() if line["event"] == "bgtasks.file.created"]
    finally:
        proc.kill()
    assert sum(line["payload"]["count"] for line in created) == n_files  # each file exactly once
    assert any(line["payload"]["rescan"] for line in created)
