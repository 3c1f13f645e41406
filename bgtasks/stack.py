"""The embedded stack behind ``bgtasks up``: Prefect server + UI, a worker of the pool,
the trigger daemon and bgtasks' REST API.

Each part (:mod:`bgtasks.parts`, the same argv and stop grace as the service files)
is a child process of ours, started with the settings' Prefect environment, its output
in ``<home>/logs/<part>.log``; ``bgtasks up`` serves the REST API from a thread of its own
process instead (it has Prefect's client imported already; the ``api`` argument).
Start order: server, wait until ``/api/health`` answers, create the pool and its queues,
worker, wait until the worker has registered with the pool, the trigger daemon (until it
has written its first snapshots), REST API.
Stop order is the reverse. Each part gets its graceful signal and its grace; the
worker (in-flight runs finish) then a second SIGINT, which makes Prefect's worker kill
itself, as a service manager's SIGKILL would; whatever is left is killed.

Every part runs with umask 077 in a home of mode 0700 (:mod:`bgtasks.home`), and the
embedded server with its auth string: nothing the stack writes or serves is open.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from bgtasks import parts, stored
from bgtasks.home import ensure_home, open_private, private_umask
from bgtasks.settings import Settings

#: Seconds a part gets after a forcing signal (the worker's second SIGINT) before SIGKILL.
FORCE_WAIT_S = 5


class StackError(RuntimeError):
    """A part of the stack did not start; the message says which and where its log is."""


@dataclass
class Process:
    """A part running as our child (``argv`` is a list: the tests rename their workers)."""

    name: str
    argv: list[str]
    log_path: Path
    stop_grace_s: float = 10
    proc: subprocess.Popen[bytes] | None = None
    _log: object = field(default=None, repr=False)

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    @property
    def started(self) -> bool:
        return self.proc is not None

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self, env: dict[str, str], cwd: Path) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        log = os.fdopen(open_private(self.log_path), "ab", buffering=0)
        self._log = log
        self.proc = subprocess.Popen(
            self.argv,
            env=env,
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # Ctrl-C in the terminal reaches us, not them
        )

    def wait(self, timeout_s: float) -> bool:
        if self.proc is None:
            return True
        try:
            self.proc.wait(timeout=timeout_s)
            return True
        except subprocess.TimeoutExpired:
            return False

    def stop(self, signals: tuple[signal.Signals, ...], grace_s: float | None = None) -> None:
        """Send the first signal and wait ``grace_s`` (the part's grace), each further one
        and wait ``FORCE_WAIT_S``, then SIGKILL."""
        if self.proc is None:
            return
        for i, sig in enumerate(signals):
            if not self.alive():
                break
            self.proc.send_signal(sig)
            if self.wait((self.stop_grace_s if grace_s is None else grace_s) if i == 0 else FORCE_WAIT_S):
                break
        if self.alive():
            self.proc.kill()
            self.wait(10)
        if self._log is not None:
            self._log.close()  # type: ignore[attr-defined]
            self._log = None


def _child_env(settings: Settings) -> dict[str, str]:
    env = dict(os.environ)
    env.update(settings.prefect_env())
    # The worker runs flows with `python -m prefect.engine`: make that our Python.
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    return env


def wait_until(check: Callable[[], bool], timeout_s: float, what: str, alive: Callable[[], bool]) -> None:
    """Poll ``check`` until it holds; fail when ``timeout_s`` passes or the process dies."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():
            return
        if not alive():
            raise StackError(f"{what} exited during start-up")
        time.sleep(0.2)
    raise StackError(f"{what} was not ready after {timeout_s:g}s")


def healthy(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def daemon_ready(state: Path, pid: int | None) -> bool:
    """The daemon has written its state (its first snapshots) since it started."""
    import json

    try:
        return json.loads(state.read_text()).get("_daemon", {}).get("pid") == pid
    except (OSError, ValueError):
        return False


def server_healthy(api_url: str) -> bool:
    return healthy(f"{api_url}/health")


async def prepare_server(settings: Settings) -> None:
    """What the Prefect server needs before a worker starts (idempotent): the pool and its
    priority queues, the UI's control deployments, the crashed-runs automation."""
    from prefect.client.orchestration import get_client

    from bgtasks.crash import ensure_crash_detection
    from deployments.controls import ensure_control_deployments
    from deployments.pool import ensure_pool

    async with get_client() as client:
        await ensure_pool(client, settings.worker.pool, settings.worker.type)
        await ensure_control_deployments(client, settings.worker.pool)
        await ensure_crash_detection(client, stored.TAG, settings.worker.crash_after_s)


class Stack:
    """Start, supervise and stop the embedded server and worker."""

    def __init__(self, settings: Settings, with_server: bool = True,
                 api: Callable[[str, Path], Any] | None = None) -> None:
        """``api``: makes the REST API part from its name and log path instead of a process
        (``bgtasks up`` serves it from a thread: bgtasks.cli.stack_cmds.ApiInProcess)."""
        settings.ensure_auth_string()
        self.settings = settings
        self.env = _child_env(settings)
        logs = settings.home / "logs"
        py = sys.executable
        specs = parts.parts(settings, py, str(Path(py).parent / "bgtasks"),
                            f"bgtasks-{settings.host_name}-{os.getpid()}", with_server=True)
        self.server, self.worker, self.daemon, rest = (
            Process(p.name, list(p.argv), logs / f"{p.name}.log", p.stop_grace_s) for p in specs)
        self.api: Any = api(rest.name, rest.log_path) if api is not None else rest
        self.with_server = with_server and not settings.server.api_url
        self.parts = [p for p in (self.server if self.with_server else None, self.worker, self.daemon, self.api) if p]

    def start(self, progress: Callable[[str], None] = lambda s: None) -> None:
        s = self.settings
        private_umask()  # inherited by every part
        ensure_home(s.home)
        s.prefect_home.mkdir(parents=True, exist_ok=True)
        try:
            if self.with_server:
                if server_healthy(s.api_url):
                    raise StackError(
                        f"something already serves {s.api_url}; stop it or choose another port "
                        "(BGTASKS_SERVER_PORT)"
                    )
                progress("starting the Prefect server")
                self.server.start(self.env, s.home)
                wait_until(lambda: server_healthy(s.api_url), s.server.start_timeout_s,
                           f"the Prefect server (log: {self.server.log_path})", self.server.alive)
            progress("creating the work pool, its queues, the UI controls and crash detection")
            asyncio.run(self._ensure_pool())
            progress("starting the worker")
            self.worker.start(self.env, s.home)
            wait_until(lambda: asyncio.run(self._worker_registered()), 60,
                       f"the worker (log: {self.worker.log_path})", self.worker.alive)
            progress("starting the trigger daemon")
            self.daemon.start(self.env, s.home)
            state = s.home / "daemon-state.json"
            wait_until(lambda: daemon_ready(state, self.daemon.pid), 60,
                       f"the trigger daemon (log: {self.daemon.log_path})", self.daemon.alive)
            progress("starting the REST API")
            self.api.start(self.env, s.home)
            wait_until(lambda: healthy(f"{self.api_url}/health"), 60,
                       f"the REST API (log: {self.api.log_path})", self.api.alive)
        except BaseException:
            self.stop()
            raise

    async def _ensure_pool(self) -> None:
        await prepare_server(self.settings)

    async def _worker_registered(self) -> bool:
        from prefect.client.orchestration import get_client

        async with get_client() as client:
            workers = await client.read_workers_for_work_pool(self.settings.worker.pool)
        return any(w.name == self.worker.argv[-1] for w in workers)

    @property
    def api_url(self) -> str:
        return f"http://{self.settings.api.host}:{self.settings.api.port}"

    def dead_part(self) -> Any:
        return next((p for p in self.parts if p.started and not p.alive()), None)

    def stop(self) -> None:
        """API and worker first (the worker gets SIGINT twice: graceful, then forced), then the server."""
        self.api.stop((signal.SIGTERM,))
        self.daemon.stop((signal.SIGTERM,))
        self.worker.stop((signal.SIGINT, signal.SIGINT))
        if self.with_server:
            self.server.stop((signal.SIGTERM,))
