"""Fixtures for real components: the Prefect server, workers, task managers."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

from bgtasks.settings import Settings, load_settings
from bgtasks.stack import Process, Stack, daemon_ready, server_healthy, wait_until

T = TypeVar("T")


async def wait_for(check: Callable[[], Awaitable[T]], timeout_s: float, what: str, poll_s: float = 0.25) -> T:
    """Poll an async condition until it returns something truthy; fail after ``timeout_s``.

    The deadline is a safety net for a hung test, not a timing assertion.
    """
    deadline = time.monotonic() + timeout_s
    last: Any = None
    while time.monotonic() < deadline:
        last = await check()
        if last:
            return last
        await asyncio.sleep(poll_s)
    raise AssertionError(f"timed out after {timeout_s:g}s waiting for {what} (last: {last!r})")


class ServerHandle:
    """The session's Prefect server; restartable for persistence tests."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.stack = Stack(settings)

    @property
    def part(self) -> Process:
        return self.stack.server

    def start(self) -> None:
        self.part.start(self.stack.env, self.settings.home)
        try:
            wait_until(lambda: server_healthy(self.settings.api_url), 180, "prefect server", self.part.alive)
            asyncio.run(self.stack._ensure_pool())
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        self.part.stop((signal.SIGTERM,), grace_s=20)

    def restart(self) -> None:
        self.stop()
        self.start()


@pytest.fixture(scope="session")
def settings() -> Settings:
    return load_settings()


@pytest.fixture(scope="session")
def prefect_server(settings: Settings) -> Iterator[ServerHandle]:
    handle = ServerHandle(settings)
    handle.start()
    yield handle
    handle.stop()


class WorkerHandle:
    def __init__(self, settings: Settings, limit: int, env: dict[str, str] | None = None) -> None:
        stack = Stack(settings)
        stack.env.update(env or {})
        self.stack = stack
        self.part = stack.worker
        # One worker per test module: its own name and log.
        self.part.argv[self.part.argv.index("--limit") + 1] = str(limit)
        self.part.argv[-1] = f"test-worker-{os.getpid()}-{time.monotonic_ns()}"
        self.part.log_path = settings.home / "logs" / f"{self.part.argv[-1]}.log"

    def start(self) -> None:
        self.part.start(self.stack.env, self.stack.settings.home)
        try:
            wait_until(lambda: asyncio.run(self.stack._worker_registered()), 90, "worker", self.part.alive)
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        self.part.stop((signal.SIGINT, signal.SIGINT), grace_s=10)


def start_worker(settings: Settings, limit: int, env: dict[str, str] | None = None) -> WorkerHandle:
    """A worker of the pool; ``env`` adds to its (and its runs') environment."""
    w = WorkerHandle(settings, limit, env)
    w.start()
    return w


@pytest.fixture(scope="module")
def worker(prefect_server: ServerHandle, settings: Settings) -> Iterator[WorkerHandle]:
    w = start_worker(settings, limit=4)
    yield w
    w.stop()


@pytest.fixture
async def client(prefect_server: ServerHandle) -> AsyncIterator[Any]:
    from prefect.client.orchestration import get_client

    async with get_client() as c:
        yield c


@pytest.fixture
async def manager(client: Any, settings: Settings) -> AsyncIterator[Any]:
    """A TaskManager that deletes every task the test created (and the ids a test adds to
    ``mgr.created_ids``: tasks it made another way)."""
    from bgtasks.errors import TaskNotFound
    from bgtasks.manager import TaskManager

    mgr = TaskManager(client, settings.worker.pool)
    created: list[str] = []
    mgr.created_ids = created  # type: ignore[attr-defined]
    original = mgr.create

    async def create(body: Any) -> Any:
        task = await original(body)
        created.append(task.id)
        return task

    mgr.create = create  # type: ignore[method-assign]
    yield mgr
    for tid in created:
        try:
            await mgr.delete(tid)
        except TaskNotFound:
            pass


async def runs_of(client: Any, task_id: str) -> list[Any]:
    """Every flow run of a task's deployment, in any state."""
    from uuid import UUID

    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId

    return await client.read_flow_runs(deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[UUID(task_id)])))


def records(path: Path) -> list[dict[str, Any]]:
    """The demo handler's per-attempt records."""
    import json

    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is dead for our purposes.
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split(") ")[1][0] != "Z"
    except FileNotFoundError:
        return False



def _in_store(settings: Settings, op: Callable[[Any], Awaitable[T]]) -> T:
    """``op(store)`` on the settings' bgtasks database, from sync or async test code."""
    from bgtasks.store import open_store

    async def go() -> T:
        store = await open_store(settings.store_url)
        try:
            return await op(store)
        finally:
            await store.close()

    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(go())
    # Called from async test code: run on a thread of its own (blocking briefly is fine in a test).
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, go()).result()


def make_token(settings: Settings, *scopes: str, name: str = "test", device: str | None = None) -> str:
    """A real API token in the settings' bgtasks database; returns its secret. A ``device`` that
    is not registered yet is registered first (an iOS device with a random token)."""
    from bgtasks.auth import TokenStore, parse_scopes

    if device is not None:
        make_device(settings, device)

    async def go(store: Any) -> str:
        return (await TokenStore(store).create(name, parse_scopes(list(scopes)), device))[1]

    return _in_store(settings, go)


def make_device(settings: Settings, device_id: str) -> None:
    """Register an iOS device (random token) under ``device_id`` unless it exists."""
    import secrets

    from mobile_push.registry import DeviceIn, DeviceNotFound, DeviceRegistry

    async def go(store: Any) -> None:
        registry = DeviceRegistry(store)
        try:
            await registry.get(device_id)
        except DeviceNotFound:
            await registry.add(DeviceIn(id=device_id, platform="ios", token=secrets.token_hex(32),
                                        topic="com.example.app"))

    _in_store(settings, go)


class ApiProcess:
    """``bgtasks api`` as a child process on a free port, its output in ``log_path``; stopped by PID."""

    def __init__(self, env: dict[str, str] | None = None) -> None:
        import subprocess
        import sys

        from tests.conftest import free_port

        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.log_path = load_settings().home / "logs" / f"api-{self.port}.log"
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [str(Path(sys.executable).parent / "bgtasks"), "api", "--port", str(self.port)],
                # Devices report to this API (a device-targeted task needs the address).
                env={**os.environ, "BGTASKS_PUSH_PUBLIC_URL": self.base, **(env or {})},
                stdout=log, stderr=subprocess.STDOUT,
            )

    def wait_healthy(self) -> None:
        import httpx

        def healthy() -> bool:
            try:
                return httpx.get(f"{self.base}/health", timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        wait_until(healthy, 120, "bgtasks api", lambda: self.proc.poll() is None)

    def stop(self) -> None:
        import subprocess

        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture(scope="module")
def api_process(prefect_server: ServerHandle) -> Iterator[ApiProcess]:
    """The REST API with token auth, against the session's Prefect server."""
    proc = ApiProcess()
    try:
        proc.wait_healthy()
        yield proc
    finally:
        proc.stop()


class DaemonProcess:
    """``bgtasks daemon`` as a child process with its own environment and home, its output in
    ``log``; ``wrap`` prefixes its argv (``ip netns exec <ns>``). Stopped by PID."""

    def __init__(self, env: dict[str, str], home: Path, log: Path,
                 wrap: Callable[[list[str]], list[str]] = lambda argv: argv) -> None:
        import sys

        self.env = {**os.environ, **env, "BGTASKS_HOME": str(home)}
        self.state = home / "daemon-state.json"
        self.state.unlink(missing_ok=True)
        self.log_path = log
        self.argv = wrap([str(Path(sys.executable).parent / "bgtasks"), "daemon"])
        log.parent.mkdir(parents=True, exist_ok=True)
        self.log = open(log, "ab")
        self.start()

    def start(self) -> None:
        import subprocess

        self.proc = subprocess.Popen(self.argv, env=self.env, stdout=self.log, stderr=subprocess.STDOUT)

    def status(self) -> dict[str, Any]:
        """What the daemon last saved about itself: pid, events emitted, file rules watched."""
        import json

        try:
            return json.loads(self.state.read_text()).get("_daemon", {})
        except (OSError, ValueError):
            return {}

    def wait_ready(self, timeout_s: float = 180) -> None:
        """Until it has taken its first snapshots: later changes are edges it sees."""
        wait_until(lambda: daemon_ready(self.state, self.proc.pid), timeout_s, "the trigger daemon",
                   lambda: self.proc.poll() is None)

    def kill(self) -> None:
        """kill -9: no chance to save or flush anything."""
        self.proc.kill()
        self.proc.wait()

    def stop(self) -> None:
        import subprocess

        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()
