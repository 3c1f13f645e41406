"""Each sensor's portable path, forced on Linux, against its native path for the same real changes.

* network: ``poll`` and ``netlink`` run side by side in one network namespace
  (tests/netns.py); the test brings the veth link, its carrier and default
  routes up and down and waits for each edge from both.
* power: ``psutil`` cannot be given a root, but it reads
  ``/sys/class/power_supply`` by path: a child process in its own mount
  namespace bind-mounts the test's fake tree there, so psutil and the sysfs
  reader read the same files. The child steps both sensors when told (a
  tree is rewritten file by file, so a free-running poll could read half of
  it); what is compared is the reading, not the wake-up.
* idle: ``cpu`` and ``psi`` trackers watch the real machine while every CPU
  is burnt. Their samples are taken at different instants, so the measured
  percentages differ; the events and the decision must not.
* files: a ``polling`` and a native (inotify) file sensor watch one temp tree
  with the same rule; the test waits for each step's events from both and
  compares everything at the end.

What the two paths cannot see alike is pinned here too (and written in
docs/sensors.md): psutil takes a mouse's battery for the system's and has no
charging status; a polled tree cannot tell a file moved in from elsewhere
from one written in place. Waits are on output with a deadline; poll
intervals are parameters, never assertions.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import shutil
import subprocess
import sys
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.netns import REPO, NetnsHost, SensorProcess, netns_host, require_root_and_ip
from tests.power import write_power_tree
from triggers.sensors import Change, FileRule, FileSensor, IdleSensor, IdleThresholds, Tracker
from triggers.sensors.power import POWER_SUPPLY

DEADLINE_S = 30.0


def _needs(what: str) -> None:
    if os.environ.get("CI"):
        raise RuntimeError(f"this test needs {what}")
    pytest.skip(f"needs {what}")


# ---- network -----------------------------------------------------------------------------------


@pytest.fixture
def host() -> Iterator[NetnsHost]:
    require_root_and_ip()
    with netns_host() as h:
        yield h


def _without_time(lines: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: v for k, v in line.items() if k != "at"} for line in lines]


def test_polling_the_network_sees_what_netlink_sees(host: NetnsHost) -> None:
    # netlink's safety poll is an hour: every netlink event here was rung by the kernel.
    native = SensorProcess(["network", "--mode", "netlink", "--poll-s", "3600"], wrap=host.exec_argv)
    portable = SensorProcess(["network", "--mode", "poll", "--portable-poll-s", "0.1"], wrap=host.exec_argv)
    both = (native, portable)
    try:
        ready = [s.ready() for s in both]
        assert [r["mechanism"] for r in ready] == ["netlink", "poll"]
        assert ready[0]["snapshot"] == ready[1]["snapshot"]
        assert ready[0]["snapshot"]["connected"] is False

        def route_up() -> None:
            host.links_up()
            host.ip("addr", "add", "10.78.0.2/24", "dev", host.ifname)
            host.ip("route", "add", "default", "via", "10.78.0.1", "dev", host.ifname)

        steps: list[tuple[Callable[[], object], str]] = [
            (route_up, "bgtasks.network.connected"),
            (lambda: host.peer_ip("link", "set", host.peer_ifname, "down"), "bgtasks.network.disconnected"),
            (lambda: host.peer_ip("link", "set", host.peer_ifname, "up"), "bgtasks.network.connected"),
            (lambda: host.ip("route", "del", "default"), "bgtasks.network.disconnected"),
            # gateway-less: netifaces does not list it, /proc/net/route does (both paths read it)
            (lambda: host.ip("route", "add", "default", "dev", host.ifname), "bgtasks.network.connected"),
        ]
        for act, event in steps:
            act()
            for sensor in both:
                sensor.wait_event(event)

        native_events, portable_events = (_without_time(s.stop()) for s in both)
        assert [e["event"] for e in native_events] == [event for _, event in steps]
        assert portable_events == native_events
        assert native_events[0]["payload"] == {"interface": host.ifname, "kind": "ethernet", "metered": False,
                                               "gateway": "10.78.0.1"}
        assert native_events[-1]["payload"]["gateway"] is None
        final = [s.lines[-1] for s in both]
        assert all(line.get("stopped") for line in final)
        assert final[0]["snapshot"] == final[1]["snapshot"]
        assert final[0]["snapshot"]["connected"] is True
    finally:
        for sensor in both:
            sensor.kill()


# ---- power -------------------------------------------------------------------------------------

# Runs in a private mount namespace where the test's fake tree is mounted on /sys/class/power_supply.
# Reads "step" lines on stdin; prints one JSON line per step with both sensors' snapshots and changes.
_POWER_CHILD = """
import json, sys
from triggers.sensors import PowerSensor, Tracker
trackers = {"sysfs": Tracker(PowerSensor(mode="sysfs", uevents=False)), "psutil": Tracker(PowerSensor(mode="psutil"))}

def report(changes):
    out = {name: {"snapshot": t.current.to_dict(), "changes": [c.to_dict() for c in changes.get(name, [])]}
           for name, t in trackers.items()}
    sys.stdout.write(json.dumps(out, default=str) + "\\n")
    sys.stdout.flush()

for t in trackers.values():
    t.prime()
report({})
for line in sys.stdin:
    report({name: t.step() for name, t in trackers.items()})
"""


class PowerChild:
    """Both power sensors in a mount namespace where ``tree`` is ``/sys/class/power_supply``."""

    def __init__(self, tree: Path) -> None:
        script = 'mount --bind "$1" "$2" && shift 2 && exec "$@"'
        argv = ["unshare", "--mount", "--propagation", "private", "--", "sh", "-c", script, "sh",
                str(tree), str(POWER_SUPPLY), sys.executable, "-c", _POWER_CHILD]
        self.proc = subprocess.Popen(argv, cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True)

    def _read(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()  # the child answers each request; a dead child gives EOF
        if not line:
            self.proc.wait(timeout=DEADLINE_S)
            assert self.proc.stderr is not None
            raise AssertionError(f"power child exited ({self.proc.returncode}): {self.proc.stderr.read()[-2000:]}")
        result: dict[str, Any] = json.loads(line)
        return result

    def baseline(self) -> dict[str, Any]:
        return self._read()

    def step(self) -> dict[str, Any]:
        assert self.proc.stdin is not None
        self.proc.stdin.write("step\n")
        self.proc.stdin.flush()
        return self._read()

    def close(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        try:
            self.proc.wait(timeout=DEADLINE_S)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=DEADLINE_S)


@pytest.fixture
def power_child(tmp_path: Path) -> Iterator[tuple[Path, Callable[[], PowerChild]]]:
    if os.geteuid() != 0:
        _needs("root (a mount namespace)")
    if shutil.which("unshare") is None:
        _needs("util-linux's unshare")
    if not POWER_SUPPLY.is_dir():
        _needs(f"{POWER_SUPPLY} to mount the fake tree on")
    tree = tmp_path / "power_supply"
    tree.mkdir()
    children: list[PowerChild] = []

    def start() -> PowerChild:
        children.append(PowerChild(tree))
        return children[-1]

    try:
        yield tree, start
    finally:
        for child in children:
            child.close()


def _events(report: dict[str, Any], name: str) -> list[str]:
    return [c["event"] for c in report[name]["changes"]]


def test_psutil_reads_the_same_battery_as_the_sysfs_reader(
        power_child: tuple[Path, Callable[[], PowerChild]]) -> None:
    tree, start = power_child
    write_power_tree(tree, 50, plugged=True)
    child = start()
    base = child.baseline()
    assert base["sysfs"]["snapshot"] == base["psutil"]["snapshot"]
    assert base["sysfs"]["snapshot"] == {"has_battery": True, "percent": 50.0, "plugged": True, "charging": True,
                                         "battery_low": False}
    # The sequence, then a full battery on the charger.
    steps = [
        ((12, False), ["bgtasks.power.unplugged", "bgtasks.power.charging-stopped", "bgtasks.power.battery-low"]),
        ((20, False), []),
        ((21, False), ["bgtasks.power.battery-ok"]),
        ((10, False), ["bgtasks.power.battery-low"]),
        ((10, True), ["bgtasks.power.plugged", "bgtasks.power.charging", "bgtasks.power.battery-ok"]),
        ((100, True), ["bgtasks.power.charging-stopped"]),
    ]
    for (percent, plugged), expected in steps:
        write_power_tree(tree, percent, plugged)
        report = child.step()
        assert report["sysfs"] == report["psutil"], (percent, plugged)
        assert _events(report, "sysfs") == expected, (percent, plugged)
        assert report["sysfs"]["snapshot"]["percent"] == percent


def test_where_psutil_and_the_sysfs_reader_disagree(power_child: tuple[Path, Callable[[], PowerChild]]) -> None:
    """The limits docs/sensors.md states for the psutil path on Linux."""
    tree, start = power_child
    mouse = tree / "hidpp_battery_0"
    mouse.mkdir()
    for key, value in {"type": "Battery", "scope": "Device", "capacity": "5", "status": "Discharging"}.items():
        (mouse / key).write_text(value + "\n")
    child = start()
    # A desktop whose only battery is a wireless mouse's: sysfs skips scope=Device, psutil takes it.
    base = child.baseline()
    assert base["sysfs"]["snapshot"]["has_battery"] is False
    assert base["psutil"]["snapshot"]["has_battery"] is True
    assert base["psutil"]["snapshot"]["percent"] == 5.0

    # A laptop held at 80% by a charge threshold: plugged, "Not charging". psutil has no charging status.
    shutil.rmtree(mouse)
    write_power_tree(tree, 80, plugged=True, charging=False)
    report = child.step()
    assert (report["sysfs"]["snapshot"]["plugged"], report["sysfs"]["snapshot"]["charging"]) == (True, False)
    assert (report["psutil"]["snapshot"]["plugged"], report["psutil"]["snapshot"]["charging"]) == (True, True)


# ---- device idle -------------------------------------------------------------------------------


async def test_cpu_percent_alone_sees_a_busy_machine_as_psi_does() -> None:
    native_sensor = IdleSensor(mode="auto", poll_s=0.2, thresholds=IdleThresholds(cpu_percent=10.0))
    if native_sensor.mechanism != "psi":
        _needs("PSI (/proc/pressure/cpu) for the native idle path")
    sensors = {"psi": native_sensor, "cpu": IdleSensor(mode="cpu", poll_s=0.2,
                                                       thresholds=IdleThresholds(cpu_percent=10.0))}
    trackers = {name: Tracker(sensor) for name, sensor in sensors.items()}
    queues: dict[str, asyncio.Queue[Change]] = {name: asyncio.Queue() for name in trackers}
    for tracker in trackers.values():
        tracker.prime()
        assert tracker.current is not None
        tracker.current = dataclasses.replace(tracker.current, idle=True, streak=0)  # given: the device was idle
    burners = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(os.cpu_count() or 1)]
    stop = asyncio.Event()
    tasks = [asyncio.create_task(t.watch(queues[name].put_nowait, stop)) for name, t in trackers.items()]
    try:
        changes = {name: await asyncio.wait_for(q.get(), DEADLINE_S) for name, q in queues.items()}
    finally:
        stop.set()
        for p in burners:
            p.kill()
            p.wait()
        await asyncio.wait_for(asyncio.gather(*tasks), DEADLINE_S)
    native, portable = changes["psi"], changes["cpu"]
    assert (native.event, native.resource) == (portable.event, portable.resource) == ("bgtasks.device.active",
                                                                                      "device")
    assert native.payload.keys() == portable.payload.keys()
    assert isinstance(native.payload["psi_some_avg10"], float)
    assert portable.payload["psi_some_avg10"] is None  # the portable path has no pressure to report
    for change in (native, portable):
        assert change.payload["cpu_percent"] >= 10.0
    states = [t.current for t in trackers.values()]
    assert all(s is not None and s.idle is False for s in states)


# ---- files -------------------------------------------------------------------------------------


class Collector:
    """An ``emit`` that records changes and lets the test wait until some are there."""

    def __init__(self) -> None:
        self.changes: list[Change] = []
        self._cond = asyncio.Condition()

    async def __call__(self, change: Change) -> None:
        async with self._cond:
            self.changes.append(change)
            self._cond.notify_all()

    def seen(self) -> Counter[tuple[str, str]]:
        """How often each (kind, path) was reported so far."""
        return Counter((c.change, p) for c in self.changes for p in c.payload["paths"])

    async def wait_seen(self, wanted: Counter[tuple[str, str]], who: str) -> None:
        """Until every (kind, path) was reported at least as often as ``wanted`` says."""
        async def until() -> None:
            async with self._cond:
                await self._cond.wait_for(lambda: not wanted - self.seen())
        try:
            await asyncio.wait_for(until(), DEADLINE_S)
        except TimeoutError:
            raise AssertionError(f"{who}: timed out waiting for {sorted(wanted - self.seen())}; "
                                 f"got {self.changes}") from None


def _write(path: Path, data: str, mode: str = "w") -> None:
    with open(path, mode) as f:
        f.write(data)


def _canonical(changes: list[Change]) -> list[str]:
    return sorted(json.dumps(c.to_dict(), sort_keys=True) for c in changes)


async def _two_file_sensors(root: Path, steps: list[tuple[Callable[[], object], set[tuple[str, Path]]]],
                            ) -> dict[str, list[Change]]:
    rule = FileRule("r", root, debounce_s=0.05, max_wait_s=5.0)
    sensors = {"native": FileSensor([rule], observer="native"),
               "polling": FileSensor([rule], observer="polling", poll_s=0.05)}
    assert sensors["native"].mechanism == "inotify"
    assert sensors["polling"].mechanism == "polling"
    collectors = {name: Collector() for name in sensors}
    stop = asyncio.Event()
    for sensor in sensors.values():
        await asyncio.to_thread(sensor.start)  # armed: changes from here on are events
    tasks = [asyncio.create_task(s.watch(collectors[n], stop)) for n, s in sensors.items()]
    wanted: Counter[tuple[str, str]] = Counter()
    try:
        for act, expected in steps:
            act()
            wanted += Counter((kind, str(path)) for kind, path in expected)
            for name, collector in collectors.items():
                await collector.wait_seen(wanted, name)
    finally:
        stop.set()
        await asyncio.wait_for(asyncio.gather(*tasks), DEADLINE_S)
        for sensor in sensors.values():
            await asyncio.to_thread(sensor.close)
    return {name: c.changes for name, c in collectors.items()}


async def test_the_polling_observer_reports_what_inotify_reports(tmp_path: Path) -> None:
    root = tmp_path / "watched"
    (root / "sub").mkdir(parents=True)
    old = root / "old.txt"
    _write(old, "before\n")
    a, b, c = root / "a.txt", root / "b.txt", root / "sub" / "c.txt"
    steps: list[tuple[Callable[[], object], set[tuple[str, Path]]]] = [
        (lambda: _write(a, "hello\n"), {("created", a), ("modified", a), ("arrived", a)}),
        (lambda: _write(a, "more\n", "a"), {("modified", a), ("arrived", a)}),
        (lambda: os.rename(a, b), {("moved", b), ("arrived", b)}),
        (lambda: os.unlink(b), {("deleted", b)}),
        (lambda: _write(c, "deep\n"), {("created", c), ("modified", c), ("arrived", c)}),
        (lambda: _write(old, "after, longer\n"), {("modified", old), ("arrived", old)}),
        (lambda: _write(c, "", "w"), {("modified", c), ("arrived", c)}),  # truncated to empty
    ]
    seen = await _two_file_sensors(root, steps)
    assert _canonical(seen["polling"]) == _canonical(seen["native"])
    # and exactly what the steps asked for: each (kind, path) once per step that expects it
    expected = Counter((kind, str(path)) for _, step in steps for kind, path in step)
    assert Counter((ch.change, p) for ch in seen["native"] for p in ch.payload["paths"]) == expected
    moves = [ch.payload["moves"] for ch in seen["polling"] if ch.change == "moved"]
    assert moves == [[[str(a), str(b)]]]


async def test_a_file_moved_in_from_elsewhere_is_also_modified_when_polled(tmp_path: Path) -> None:
    """inotify sees a rename into the tree (created, arrived); a poll sees a new non-empty file,
    which it cannot tell from one written in place (created, modified, arrived). docs/sensors.md."""
    root = tmp_path / "watched"
    root.mkdir()
    outside = tmp_path / "elsewhere.csv"
    _write(outside, "a,b\n")
    dest = root / "in.csv"
    seen = await _two_file_sensors(root, [(lambda: os.rename(outside, dest),
                                           {("created", dest), ("arrived", dest)})])
    assert sorted(ch.change for ch in seen["native"]) == ["arrived", "created"]
    assert sorted(ch.change for ch in seen["polling"]) == ["arrived", "created", "modified"]
