"""Android's storage-low threshold and the storage diff, with an injected usage function."""

from __future__ import annotations

from collections import namedtuple

from triggers.sensors import StorageSensor, Tracker, low_threshold_bytes, storage_low

MiB, GiB = 1024 * 1024, 1024 * 1024 * 1024
Usage = namedtuple("Usage", "total used free percent")


def test_threshold_is_5_percent_capped_at_500_mib() -> None:
    assert low_threshold_bytes(8 * MiB) == 8 * MiB * 5 // 100
    assert low_threshold_bytes(10 * GiB) == 500 * MiB       # 5% would be 512 MiB
    assert low_threshold_bytes(10_000 * MiB) == 500 * MiB   # where the two rules meet
    assert low_threshold_bytes(9 * GiB) == 9 * GiB * 5 // 100  # 460.8 MiB < 500 MiB


def test_low_is_at_or_below_the_threshold() -> None:
    total = 100 * GiB
    assert storage_low(500 * MiB, total)
    assert not storage_low(500 * MiB + 1, total)
    assert storage_low(0, total)


def test_the_sensor_emits_low_and_ok_once_per_crossing() -> None:
    free = [10 * GiB, 400 * MiB, 300 * MiB, 600 * MiB, 600 * MiB]
    sensor = StorageSensor("/data", usage=lambda path: Usage(100 * GiB, 0, free.pop(0), 0))
    tracker = Tracker(sensor)
    steps = [[(c.event, c.resource) for c in tracker.step()] for _ in range(5)]
    assert steps == [[], [("bgtasks.storage.low", "/data")], [], [("bgtasks.storage.ok", "/data")], []]
    assert tracker.current is not None and tracker.current.to_dict() == {
        "path": "/data", "free_bytes": 600 * MiB, "total_bytes": 100 * GiB, "low": False}
