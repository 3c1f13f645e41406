"""Test hosts in network namespaces, and sensors run as child processes that print JSON lines.

:func:`netns_host` creates two fresh namespaces joined by a veth pair: the
*host* namespace (where the sensor runs, with ``ip netns exec``) and a *peer*
namespace holding the other end, so the test can take the host's carrier away
by setting the peer end down. Names are unique per call; both namespaces are
deleted on exit, whatever happened (deleting a namespace destroys its veth end,
and with it the pair).

:class:`SensorProcess` runs ``python -m triggers.sensors ...`` (optionally in a
namespace), reads its JSON lines on a thread and lets the test wait for a line
with a deadline: no sleeps.
"""

from __future__ import annotations

import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[1]
DEADLINE_S = 30.0  # a safety net for a hung test, never a timing assertion


def require_root_and_ip() -> None:
    """Skip (fail under CI) where namespaces cannot be made: not root, or no iproute2."""
    missing = None
    if os.geteuid() != 0:
        missing = "root (network namespaces, mounts)"
    elif shutil.which("ip") is None:
        missing = "iproute2's `ip`"
    if missing:
        if os.environ.get("CI"):
            raise RuntimeError(f"this test needs {missing}")
        pytest.skip(f"needs {missing}")


def _ip(*args: str) -> str:
    return subprocess.run(["ip", *args], check=True, capture_output=True, text=True, timeout=30).stdout


@dataclass(frozen=True)
class NetnsHost:
    ns: str
    peer_ns: str
    ifname: str       # the host's end, in ``ns``
    peer_ifname: str  # the other end, in ``peer_ns``

    def ip(self, *args: str) -> str:
        """``ip -n <host ns> ...``; returns its output."""
        return _ip("-n", self.ns, *args)

    def peer_ip(self, *args: str) -> str:
        return _ip("-n", self.peer_ns, *args)

    def links_up(self) -> None:
        self.ip("link", "set", "lo", "up")
        self.ip("link", "set", self.ifname, "up")
        self.peer_ip("link", "set", self.peer_ifname, "up")

    def exec_argv(self, argv: list[str]) -> list[str]:
        return ["ip", "netns", "exec", self.ns, *argv]


@contextmanager
def netns_host() -> Iterator[NetnsHost]:
    tag = uuid.uuid4().hex[:8]
    host = NetnsHost(ns=f"bgt-{tag}", peer_ns=f"bgt-{tag}-p", ifname=f"bh{tag}", peer_ifname=f"bp{tag}")
    created: list[str] = []
    try:
        for ns in (host.ns, host.peer_ns):
            _ip("netns", "add", ns)
            created.append(ns)
        _ip("link", "add", host.ifname, "netns", host.ns, "type", "veth",
            "peer", "name", host.peer_ifname, "netns", host.peer_ns)
        yield host
    finally:
        for ns in reversed(created):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=30)


class SensorProcess:
    """``python -m triggers.sensors <args>`` as a child; its JSON lines arrive on a queue."""

    def __init__(self, args: list[str], *, wrap: Callable[[list[str]], list[str]] | None = None) -> None:
        argv = [sys.executable, "-m", "triggers.sensors", *args]
        if wrap is not None:
            argv = wrap(argv)
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        self.proc = subprocess.Popen(argv, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True)
        self.lines: list[dict[str, Any]] = []
        self._queue: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self._stderr: list[str] = []
        threading.Thread(target=self._read_stdout, daemon=True).start()
        threading.Thread(target=self._read_stderr, daemon=True).start()

    def _read_stdout(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if line.strip():
                self._queue.put(json.loads(line))
        self._queue.put(None)

    def _read_stderr(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self._stderr.append(line)

    def next(self, timeout_s: float = DEADLINE_S) -> dict[str, Any]:
        try:
            item = self._queue.get(timeout=timeout_s)
        except queue.Empty:
            raise AssertionError(f"no output after {timeout_s:g}s; seen {self.lines}; stderr: "
                                 f"{''.join(self._stderr)[-2000:]}") from None
        if item is None:
            self._queue.put(None)
            raise AssertionError(f"sensor process exited ({self.proc.poll()}); seen {self.lines}; "
                                 f"stderr: {''.join(self._stderr)[-2000:]}")
        self.lines.append(item)
        return item

    def wait_for(self, predicate: Callable[[dict[str, Any]], bool], what: str,
                 timeout_s: float = DEADLINE_S) -> dict[str, Any]:
        """The next line that satisfies ``predicate`` (lines before it stay in ``lines``)."""
        deadline = time.monotonic() + timeout_s
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"timed out waiting for {what}; seen {self.lines}")
            item = self.next(remaining)
            if predicate(item):
                return item

    def wait_event(self, event: str, timeout_s: float = DEADLINE_S) -> dict[str, Any]:
        return self.wait_for(lambda line: line.get("event") == event, event, timeout_s)

    def ready(self) -> dict[str, Any]:
        return self.wait_for(lambda line: bool(line.get("ready")), "ready")

    def events(self) -> list[dict[str, Any]]:
        return [line for line in self.lines if "event" in line]

    def stop(self) -> list[dict[str, Any]]:
        """SIGTERM, read everything up to ``stopped``; return all event lines seen."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.terminate()
            self.wait_for(lambda line: bool(line.get("stopped")), "stopped")
        return self.events()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=DEADLINE_S)
