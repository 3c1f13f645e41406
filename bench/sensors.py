"""Measure the sensors (prints numbers, asserts nothing). Needs root for the network part.

    .venv/bin/python bench/sensors.py                 # both parts
    .venv/bin/python bench/sensors.py --only files --dirs 10000 --idle-s 30

network: the sensor runs in a fresh network namespace (``ip netns exec``,
poll one hour, so only the netlink doorbell can wake it); this process enters
the peer namespace (``setns``) and flips the peer end of the veth pair with
one ioctl, so the host end gains or loses its carrier. Latency = the child's
wall clock when it emitted the change minus ours just before the ioctl.
Route changes are timed too, from just before spawning ``ip route`` (an upper
bound: it includes starting ``ip``).

files: a child watching a tree of N directories (recursive rule "*") is
sampled for CPU time and RSS while nothing happens; the time from starting
the process (interpreter and imports included) to armed watches is printed too.
"""

from __future__ import annotations

import argparse
import ctypes
import fcntl
import json
import os
import shutil
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import IO, Any

import psutil

ROOT = __import__('pathlib').Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ['PYTHONPATH'] = os.pathsep.join(filter(None, [str(ROOT), os.environ.get('PYTHONPATH', '')]))

_CLONE_NEWNET = 0x40000000
_SIOCGIFFLAGS, _SIOCSIFFLAGS, _IFF_UP = 0x8913, 0x8914, 0x1


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=30)


def _child(argv: list[str]) -> subprocess.Popen[str]:
    return subprocess.Popen([*argv], stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})


def _next(stream: IO[str]) -> dict[str, Any]:
    line = stream.readline()
    if not line:
        raise RuntimeError("the sensor process exited")
    data: dict[str, Any] = json.loads(line)
    return data


def _wait_event(stream: IO[str], event: str) -> dict[str, Any]:
    while True:
        line = _next(stream)
        if line.get("event") == event:
            return line


@contextmanager
def _namespaces() -> Iterator[tuple[str, str, str, str]]:
    tag = uuid.uuid4().hex[:8]
    ns, peer_ns, ifname, peer_if = f"bgm-{tag}", f"bgm-{tag}-p", f"mh{tag}", f"mp{tag}"
    try:
        _ip("netns", "add", ns)
        _ip("netns", "add", peer_ns)
        _ip("link", "add", ifname, "netns", ns, "type", "veth", "peer", "name", peer_if, "netns", peer_ns)
        yield ns, peer_ns, ifname, peer_if
    finally:
        for name in (ns, peer_ns):
            subprocess.run(["ip", "netns", "del", name], capture_output=True, timeout=30)


def _set_link(sock: socket.socket, ifname: str, up: bool) -> None:
    ifreq = struct.pack("16sH14x", ifname.encode(), 0)
    flags = struct.unpack("16sH14x", fcntl.ioctl(sock, _SIOCGIFFLAGS, ifreq))[1]
    flags = flags | _IFF_UP if up else flags & ~_IFF_UP
    fcntl.ioctl(sock, _SIOCSIFFLAGS, struct.pack("16sH14x", ifname.encode(), flags))


def measure_network(changes: int, settle_s: float, gap_s: float) -> None:
    if os.geteuid() != 0 or shutil.which("ip") is None:
        print("network: skipped (needs root and iproute2)")
        return
    libc = ctypes.CDLL(None, use_errno=True)
    with _namespaces() as (ns, peer_ns, ifname, peer_if):
        for args in (("link", "set", "lo", "up"), ("link", "set", ifname, "up"),
                     ("addr", "add", "10.88.0.2/24", "dev", ifname),
                     ("route", "add", "default", "via", "10.88.0.1", "dev", ifname)):
            _ip("-n", ns, *args)
        child = _child(["ip", "netns", "exec", ns, sys.executable, "-m", "triggers.sensors", "network",
                        "--poll-s", "3600", "--settle-s", str(settle_s)])
        assert child.stdout is not None
        try:
            _next(child.stdout)  # ready, disconnected: the peer end is down
            own_ns = os.open("/proc/self/ns/net", os.O_RDONLY)
            peer_fd = os.open(f"/run/netns/{peer_ns}", os.O_RDONLY)
            if libc.setns(peer_fd, _CLONE_NEWNET) != 0:
                raise OSError(ctypes.get_errno(), "setns")
            try:
                sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)  # lives in the peer namespace
                carrier = []
                for i in range(changes):
                    up = i % 2 == 0
                    time.sleep(gap_s)  # let the kernel's linkwatch rate limit (1 s) and IPv6 set-up pass
                    t0 = time.time()
                    _set_link(sock, peer_if, up)
                    line = _wait_event(child.stdout, f"bgtasks.network.{'connected' if up else 'disconnected'}")
                    carrier.append(line["at"] - t0)
                if changes % 2 == 0:  # leave the link up for the route changes
                    _set_link(sock, peer_if, True)
                    _wait_event(child.stdout, "bgtasks.network.connected")
                sock.close()
            finally:
                libc.setns(own_ns, _CLONE_NEWNET)
                os.close(own_ns)
                os.close(peer_fd)
            route = []
            for i in range(changes):
                time.sleep(gap_s)
                t0 = time.time()
                _ip("-n", ns, "route", "del" if i % 2 == 0 else "add", "default", "via", "10.88.0.1")
                line = _wait_event(child.stdout, f"bgtasks.network.{'disconnected' if i % 2 == 0 else 'connected'}")
                route.append(line["at"] - t0)
        finally:
            child.terminate()
            child.wait(timeout=30)
    ms = [1000 * x for x in carrier]
    rms = [1000 * x for x in route]
    print(f"network (settle_s={settle_s}): carrier flip -> callback p50 {statistics.median(ms):.1f} ms, "
          f"max {max(ms):.1f} ms over {len(ms)}; route add/del via `ip` (incl. its start-up) "
          f"p50 {statistics.median(rms):.1f} ms, max {max(rms):.1f} ms over {len(rms)}")


def measure_files(dirs: int, idle_s: float) -> None:
    top = tempfile.mkdtemp(prefix="bgt-measure-", dir="/tmp")
    try:
        width = max(1, int(dirs ** 0.5))
        made = 0
        for i in range(width):
            for j in range(width):
                if made == dirs:
                    break
                os.makedirs(os.path.join(top, f"d{i:03d}", f"e{j:03d}"))
                made += 1
        made += width  # the first level counts too
        t0 = time.monotonic()
        child = _child([sys.executable, "-m", "triggers.sensors", "file", "--rule", f"m={top}"])
        assert child.stdout is not None
        try:
            _next(child.stdout)
            armed_s = time.monotonic() - t0
            proc = psutil.Process(child.pid)
            c0, w0 = proc.cpu_times(), time.monotonic()
            time.sleep(idle_s)  # the measurement window itself
            c1, w1 = proc.cpu_times(), time.monotonic()
            cpu = 100 * ((c1.user + c1.system) - (c0.user + c0.system)) / (w1 - w0)
            rss = proc.memory_info().rss / 2**20
        finally:
            child.terminate()
            child.wait(timeout=60)
        print(f"files: {made} watched directories: process start to armed {armed_s:.2f} s; idle over {idle_s:g} s: "
              f"{cpu:.2f}% of one core, RSS {rss:.1f} MiB")
    finally:
        shutil.rmtree(top, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=("network", "files"))
    parser.add_argument("--changes", type=int, default=20)
    parser.add_argument("--gap-s", type=float, default=1.5, help="pause between network changes")
    parser.add_argument("--dirs", type=int, default=10_000)
    parser.add_argument("--idle-s", type=float, default=30.0)
    args = parser.parse_args()
    if args.only in (None, "network"):
        for settle_s in (0.02, 0.0):
            measure_network(args.changes, settle_s=settle_s, gap_s=args.gap_s)
    if args.only in (None, "files"):
        measure_files(args.dirs, args.idle_s)


if __name__ == "__main__":
    main()
