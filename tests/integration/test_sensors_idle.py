"""The idle sensor on the real /proc/stat, PSI and (with Xvfb) an X11 display."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from triggers.sensors import Change, IdleSensor, IdleThresholds, Tracker
from triggers.sensors.idle import read_psi_some_avg10, x11_user_idle_s

DEADLINE_S = 30.0


def test_real_samples_give_a_cpu_percent_and_psi_where_the_kernel_has_it() -> None:
    sensor = IdleSensor()
    first = sensor.snapshot()
    assert first.cpu_percent is None  # no window yet
    # Work until the machine's CPU time has moved on (a sample in the same clock tick changes
    # nothing, by design): then the window gives a percentage.
    second = sensor.snapshot(first)
    while second.cpu_total_s <= first.cpu_total_s:
        sum(i * i for i in range(20_000))
        second = sensor.snapshot(first)
    assert second.cpu_percent is not None and 0.0 <= second.cpu_percent <= 100.0
    if Path("/proc/pressure/cpu").exists():
        assert isinstance(read_psi_some_avg10(), float)


async def test_burning_every_cpu_makes_an_idle_device_active() -> None:
    tracker = Tracker(IdleSensor(poll_s=0.2, thresholds=IdleThresholds(cpu_percent=10.0)))
    tracker.prime()
    assert tracker.current is not None
    tracker.current = dataclasses.replace(tracker.current, idle=True, streak=0)  # given: the device was idle
    burners = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(os.cpu_count() or 1)]
    queue: asyncio.Queue[Change] = asyncio.Queue()
    stop = asyncio.Event()
    task = asyncio.create_task(tracker.watch(queue.put_nowait, stop))
    try:
        change = await asyncio.wait_for(queue.get(), DEADLINE_S)
    finally:
        stop.set()
        for p in burners:
            p.kill()
            p.wait()
        await asyncio.wait_for(task, DEADLINE_S)
    assert change.event == "bgtasks.device.active"
    assert queue.empty()


def test_x11_user_idle_time_from_xvfb(tmp_path: Path) -> None:
    if shutil.which("Xvfb") is None:
        if os.environ.get("CI"):
            raise RuntimeError("this test needs Xvfb (apt-get install xvfb)")
        pytest.skip("needs Xvfb")
    # -displayfd: Xvfb picks a free display and writes its number when it is ready (no sleep);
    # -noreset: without it Xvfb resets when its last client leaves and refuses the next one meanwhile.
    read_fd, write_fd = os.pipe()
    xvfb = subprocess.Popen(["Xvfb", "-displayfd", str(write_fd), "-nolisten", "tcp", "-noreset"], pass_fds=(write_fd,),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    os.close(write_fd)
    try:
        with os.fdopen(read_fd) as r:
            display = ":" + r.readline().strip()
        idle_s = x11_user_idle_s(display)
        assert idle_s is not None and idle_s >= 0.0
        state = IdleSensor(display=display).snapshot()
        assert state.user_idle_s is not None
    finally:
        xvfb.terminate()
        xvfb.wait(timeout=DEADLINE_S)
    assert x11_user_idle_s(display) is None  # the display is gone
