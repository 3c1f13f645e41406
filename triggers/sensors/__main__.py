"""Run one sensor in the foreground and print its changes as JSON lines.

For tests (a sensor inside a network namespace: ``ip netns exec NS python -m
triggers.sensors network``), measurements and debugging; the daemon imports
the sensor classes instead. Output, one JSON object per line on stdout:

    {"ready": true, "sensor": ..., "mechanism": ..., "snapshot": {...}}   baseline taken
    {"event": "bgtasks.x.y", "resource": ..., "payload": {...}, "at": <unix time>}
    {"stopped": true, "snapshot": {...}}                 after SIGTERM / SIGINT

``--mode`` (``--observer`` for files) forces the native or the portable
mechanism (see docs/sensors.md). On stop, a state sensor takes one last
snapshot so a change in flight is printed before ``stopped``, which carries
that snapshot.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

from triggers.sensors._base import Change, StateSensor, Tracker
from triggers.sensors.filesystem import FileRule, FileSensor
from triggers.sensors.idle import IdleSensor
from triggers.sensors.network import NetworkSensor
from triggers.sensors.power import POWER_SUPPLY, PowerSensor
from triggers.sensors.storage import StorageSensor


def _print(obj: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(obj, default=str) + "\n")
    sys.stdout.flush()


def _print_change(change: Change) -> None:
    _print({**change.to_dict(), "at": time.time()})


def _parse_rule(text: str, args: argparse.Namespace) -> FileRule:
    rule_id, _, rest = text.partition("=")
    root, _, patterns = rest.partition(":")
    return FileRule(
        rule_id, root, recursive=not args.flat, patterns=tuple(patterns.split(",")) if patterns else ("*",),
        kinds=frozenset(args.kinds.split(",")), debounce_s=args.debounce_s, max_wait_s=args.max_wait_s,
        max_paths=args.max_paths,
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m triggers.sensors", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="sensor", required=True)
    net = sub.add_parser("network")
    net.add_argument("--mode", choices=("auto", "netlink", "poll"), default="auto")
    net.add_argument("--poll-s", type=float, default=30.0, help="safety poll with netlink")
    net.add_argument("--portable-poll-s", type=float, default=5.0, help="the poll interval with --mode poll")
    net.add_argument("--settle-s", type=float, default=0.02)
    power = sub.add_parser("power")
    power.add_argument("--mode", choices=("auto", "sysfs", "psutil"), default="auto")
    power.add_argument("--root", type=Path, default=POWER_SUPPLY)
    power.add_argument("--poll-s", type=float, default=30.0)
    idle = sub.add_parser("idle")
    idle.add_argument("--mode", choices=("auto", "psi", "cpu"), default="auto")
    idle.add_argument("--poll-s", type=float, default=30.0)
    idle.add_argument("--display", default=os.environ.get("DISPLAY"))
    storage = sub.add_parser("storage")
    storage.add_argument("path")
    storage.add_argument("--poll-s", type=float, default=60.0)
    files = sub.add_parser("file")
    files.add_argument("--rule", action="append", required=True, metavar="ID=ROOT[:PATTERN,...]")
    files.add_argument("--kinds", default="created,modified,deleted,moved,arrived")
    files.add_argument("--flat", action="store_true", help="not recursive")
    files.add_argument("--debounce-s", type=float, default=1.0)
    files.add_argument("--max-wait-s", type=float, default=10.0)
    files.add_argument("--max-paths", type=int, default=100)
    files.add_argument("--observer", choices=("auto", "native", "polling"), default="auto")
    files.add_argument("--poll-s", type=float, default=1.0, help="the interval of --observer polling")
    return parser


def make_sensor(args: argparse.Namespace) -> StateSensor[Any] | FileSensor:
    if args.sensor == "network":
        return NetworkSensor(mode=args.mode, poll_s=args.poll_s, portable_poll_s=args.portable_poll_s,
                             settle_s=args.settle_s)
    if args.sensor == "power":
        return PowerSensor(mode=args.mode, root=args.root, poll_s=args.poll_s)
    if args.sensor == "idle":
        return IdleSensor(mode=args.mode, poll_s=args.poll_s, display=args.display)
    if args.sensor == "storage":
        return StorageSensor(args.path, poll_s=args.poll_s)
    return FileSensor([_parse_rule(r, args) for r in args.rule], observer=args.observer, poll_s=args.poll_s)


async def run(args: argparse.Namespace) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    sensor = make_sensor(args)
    if isinstance(sensor, FileSensor):
        await asyncio.to_thread(sensor.start)
        try:
            _print({"ready": True, "sensor": sensor.name, "mechanism": sensor.mechanism,
                    "rules": [r.rule_id for r in sensor.rules]})
            await sensor.watch(_print_change, stop)
        finally:
            await asyncio.to_thread(sensor.close)
        _print({"stopped": True})
    else:
        tracker: Tracker[Any] = Tracker(sensor)
        snapshot = await asyncio.to_thread(tracker.prime)
        _print({"ready": True, "sensor": sensor.name, "mechanism": getattr(sensor, "mechanism", None),
                "snapshot": snapshot.to_dict()})
        await tracker.watch(_print_change, stop)
        for change in await asyncio.to_thread(tracker.step):
            _print_change(change)
        _print({"stopped": True, "snapshot": tracker.current.to_dict()})


def main(argv: list[str] | None = None) -> None:
    asyncio.run(run(build_parser().parse_args(argv)))


if __name__ == "__main__":
    main()
