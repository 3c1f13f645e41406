"""The storage sensor on a real 8 MiB tmpfs the test mounts (and always unmounts)."""

from __future__ import annotations

import asyncio
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.netns import require_root_and_ip
from triggers.sensors import Change, StorageSensor, Tracker, low_threshold_bytes

DEADLINE_S = 30.0


@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator[Path]:
    require_root_and_ip()
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(mnt)], check=True, timeout=30)
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False, timeout=30)


async def next_change(queue: asyncio.Queue[Change]) -> Change:
    return await asyncio.wait_for(queue.get(), DEADLINE_S)


async def test_filling_the_disk_emits_low_and_freeing_it_emits_ok(tmpfs: Path) -> None:
    sensor = StorageSensor(str(tmpfs), poll_s=0.05)
    tracker = Tracker(sensor)
    baseline = tracker.prime()
    assert baseline.low is False and baseline.total_bytes == 8 * 1024 * 1024
    threshold = low_threshold_bytes(baseline.total_bytes)  # 5% of 8 MiB

    queue: asyncio.Queue[Change] = asyncio.Queue()
    stop = asyncio.Event()
    task = asyncio.create_task(tracker.watch(queue.put_nowait, stop))
    filler = tmpfs / "filler"
    try:
        with open(filler, "wb") as f:
            f.write(b"\0" * (baseline.free_bytes - threshold + 4096))
        low = await next_change(queue)
        assert (low.event, low.resource) == ("bgtasks.storage.low", str(tmpfs))
        assert low.payload["free_bytes"] <= low.payload["threshold_bytes"] == threshold

        os.unlink(filler)
        ok = await next_change(queue)
        assert ok.event == "bgtasks.storage.ok"
        assert ok.payload["free_bytes"] > threshold
    finally:
        stop.set()
        await asyncio.wait_for(task, DEADLINE_S)
    assert queue.empty()
    assert tracker.step() == []
