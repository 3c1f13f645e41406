"""Tasks that require the network, on a worker whose host the test controls.

The worker and the trigger daemon run inside a network namespace the test makes:
a veth pair links it to this host (so they reach the Prefect server through a
small TCP relay on the link), but there is no default route. The run waits as
AwaitingConstraints naming the network; adding the default route wakes the
daemon's netlink doorbell, which releases it; it runs once, no retry used.

The interface's class (wifi, cellular, ethernet) is read from a sysfs tree the test
writes (``BGTASKS_DAEMON_NETWORK_SYSFS``; no wifi hardware here): a ``requiresWifi``
task and a ``networkType: metered`` one wait on ethernet, and each runs when the
default route's link becomes what it needs.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from bgtasks.settings import Settings
from tests.fixtures import DaemonProcess, WorkerHandle, records
from tests.integration.test_constraints import _done, _waiting
from tests.netns import require_root_and_ip

pytestmark = pytest.mark.integration



def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True, timeout=30)


class Relay:
    """A TCP relay on ``listen`` -> 127.0.0.1 ``port`` (HTTP and websockets alike), in its own thread."""

    def __init__(self, listen: str, port: int) -> None:
        self.listen, self.port = listen, port
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        self.ready.wait(30)

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)

        async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                while data := await reader.read(65536):
                    writer.write(data)
                    await writer.drain()
            except (ConnectionError, asyncio.CancelledError):
                pass
            finally:
                writer.close()

        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                up_r, up_w = await asyncio.open_connection("127.0.0.1", self.port)
            except OSError:
                writer.close()
                return
            await asyncio.gather(pipe(reader, up_w), pipe(up_r, writer))

        async def main() -> None:
            self.server = await asyncio.start_server(handle, self.listen, self.port)
            self.ready.set()
            await self.server.serve_forever()

        try:
            self.loop.run_until_complete(main())
        except asyncio.CancelledError:
            pass

    def stop(self) -> None:
        def cancel() -> None:
            for task in asyncio.all_tasks(self.loop):
                task.cancel()

        self.loop.call_soon_threadsafe(cancel)
        self.thread.join(30)


@dataclass
class Host:
    ns: str
    gateway: str
    iface: str
    sysfs: Path

    def exec(self, argv: list[str]) -> list[str]:
        return ["ip", "netns", "exec", self.ns, *argv]


@pytest.fixture(scope="module")
def offline_host(prefect_server: Any, settings: Settings) -> Iterator[Host]:
    require_root_and_ip()
    tag = secrets.token_hex(3)
    ns, outer, inner = f"bgw-{tag}", f"vo{tag}", f"vi{tag}"
    net = f"10.{200 + int(tag[:2], 16) % 50}.{int(tag[2:4], 16)}"
    _ip("netns", "add", ns)
    relay = None
    try:
        _ip("link", "add", outer, "type", "veth", "peer", "name", inner, "netns", ns)
        _ip("addr", "add", f"{net}.1/30", "dev", outer)
        _ip("link", "set", outer, "up")
        _ip("-n", ns, "addr", "add", f"{net}.2/30", "dev", inner)
        _ip("-n", ns, "link", "set", inner, "up")
        _ip("-n", ns, "link", "set", "lo", "up")
        relay = Relay(f"{net}.1", settings.server.port)
        sysfs = settings.home / f"sysfs-net-{tag}"
        (sysfs / inner).mkdir(parents=True)
        set_kind(sysfs / inner, "ethernet")
        yield Host(ns, f"{net}.1", inner, sysfs)
    finally:
        if relay is not None:
            relay.stop()
        subprocess.run(["ip", "link", "del", outer], capture_output=True, timeout=30)
        subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=30)


@pytest.fixture(scope="module")
def offline_env(offline_host: Host, settings: Settings) -> dict[str, str]:
    api = f"http://{offline_host.gateway}:{settings.server.port}/api"
    return {"PREFECT_API_URL": api, "BGTASKS_SERVER_API_URL": api,
            "BGTASKS_DAEMON_SENSORS": json.dumps(["network"]),
            "BGTASKS_DAEMON_NETWORK_SYSFS": str(offline_host.sysfs),
            "BGTASKS_DAEMON_NETWORK_POLL_S": "0.5",  # a class change in the fake tree rings no doorbell
            "BGTASKS_WORKER_CONSTRAINT_RECHECK_S": "3600"}


def set_kind(iface_dir: Path, kind: str) -> None:
    """Make the fake sysfs entry of an interface say ``kind`` (as the kernel's would)."""
    (iface_dir / "type").write_text("1\n")  # ARPHRD_ETHER: veth, NICs, wifi alike
    (iface_dir / "uevent").write_text("DEVTYPE=wwan\n" if kind == "cellular" else "INTERFACE=x\n")
    wireless = iface_dir / "wireless"
    if kind == "wifi":
        wireless.mkdir(exist_ok=True)
    elif wireless.exists():
        wireless.rmdir()


@pytest.fixture(scope="module")
def offline_worker(offline_host: Host, offline_env: dict[str, str], settings: Settings) -> Iterator[WorkerHandle]:
    w = WorkerHandle(settings, limit=2, env=offline_env)
    w.part.argv = offline_host.exec(w.part.argv)
    w.start()
    yield w
    w.stop()


@pytest.fixture(scope="module")
def offline_daemon(offline_host: Host, offline_env: dict[str, str], settings: Settings) -> Iterator[DaemonProcess]:
    d = DaemonProcess(offline_env, settings.home / "offline-host", settings.home / "logs" / "offline-daemon.log",
                      wrap=offline_host.exec)
    try:
        d.wait_ready()
        yield d
    finally:
        d.stop()


async def test_a_network_task_waits_without_a_default_route_and_runs_when_one_appears(
    manager: Any, offline_host: Host, offline_worker: WorkerHandle, offline_daemon: Any, tmp_path: Path
) -> None:
    log = tmp_path / "runs.jsonl"
    task = await manager.create({
        "name": "needs-network", "handler": "demo", "schedule": {"type": "one-time"},
        "constraints": {"requiresNetwork": True},
        "retryPolicy": {"maxRetries": 2, "initialBackoffMs": 100},
        "data": {"recordTo": str(log)},
    })
    waiting = await _waiting(manager, task.id, "requiresNetwork")
    assert "no default route" in waiting.waiting[0].reason and records(log) == []
    _ip("-n", offline_host.ns, "route", "add", "default", "via", offline_host.gateway)
    try:
        done = await _done(manager, task.id)
    finally:
        subprocess.run(["ip", "-n", offline_host.ns, "route", "del", "default"], capture_output=True, timeout=30)
    assert done.status.value == "completed" and done.result.attempts == 1
    assert len(records(log)) == 1



async def test_wifi_and_metered_tasks_wait_for_their_kind_of_network(
    manager: Any, offline_host: Host, offline_worker: WorkerHandle, offline_daemon: Any, tmp_path: Path
) -> None:
    wifi_log, metered_log = tmp_path / "wifi.jsonl", tmp_path / "metered.jsonl"
    iface = offline_host.sysfs / offline_host.iface
    _ip("-n", offline_host.ns, "route", "add", "default", "via", offline_host.gateway)
    try:
        wifi = await manager.create({
            "name": "needs-wifi", "handler": "demo", "schedule": {"type": "one-time"},
            "constraints": {"requiresWifi": True}, "data": {"recordTo": str(wifi_log)}})
        metered = await manager.create({
            "name": "needs-metered", "handler": "demo", "schedule": {"type": "one-time"},
            "constraints": {"networkType": "metered"}, "data": {"recordTo": str(metered_log)}})
        await _waiting(manager, wifi.id, "requiresWifi")
        await _waiting(manager, metered.id, "networkType=metered")
        set_kind(iface, "wifi")
        done = await _done(manager, wifi.id)
        assert done.status.value == "completed" and done.result.attempts == 1 and len(records(wifi_log)) == 1
        still = await _waiting(manager, metered.id, "networkType=metered")  # wifi is unmetered
        assert records(metered_log) == [] and "unmetered" in still.waiting[0].reason
        set_kind(iface, "cellular")  # cellular counts as metered (no NetworkManager to say otherwise)
        done = await _done(manager, metered.id)
        assert done.status.value == "completed" and done.result.attempts == 1 and len(records(metered_log)) == 1
    finally:
        set_kind(iface, "ethernet")
        subprocess.run(["ip", "-n", offline_host.ns, "route", "del", "default"], capture_output=True, timeout=30)


async def test_a_network_connected_task_runs_when_the_host_gets_a_default_route(
    manager: Any, offline_host: Host, offline_worker: WorkerHandle, offline_daemon: Any, tmp_path: Path
) -> None:
    from tests.fixtures import wait_for

    log = tmp_path / "runs.jsonl"
    await manager.create({"name": "on-connected", "handler": "demo", "schedule": {"type": "triggered"},
                          "trigger": {"on": "network.connected"}, "data": {"recordTo": str(log)}})
    _ip("-n", offline_host.ns, "route", "add", "default", "via", offline_host.gateway)
    try:
        [run] = await wait_for(lambda: asyncio.sleep(0, records(log)), 180, "the network.connected run")
    finally:
        subprocess.run(["ip", "-n", offline_host.ns, "route", "del", "default"], capture_output=True, timeout=30)
    assert run["event"]["name"] == "bgtasks.network.connected"
    assert run["event"]["payload"]["interface"] == offline_host.iface
