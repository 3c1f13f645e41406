"""`bgtasks up` as a child process in its own home and ports, for end-to-end tests."""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psutil

from tests.conftest import free_port

BIN = Path(sys.executable).parent


class Up:
    """Start with :meth:`start`, stop with :meth:`stop` (Ctrl-C, as a user would)."""

    def __init__(self, home: Path) -> None:
        self.port, self.api_port = free_port(), free_port()
        self.env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "BGTASKS_"))}
        self.env.update({"BGTASKS_HOME": str(home), "BGTASKS_SERVER_PORT": str(self.port),
                         "BGTASKS_API_PORT": str(self.api_port), "COLUMNS": "200",
                         # the demo handler records attempts under the temp directory
                         "BGTASKS_TASK_FILE_ROOTS": json.dumps([tempfile.gettempdir()])})
        self.home = home
        self.ui = f"http://127.0.0.1:{self.port}"
        self.api = f"http://127.0.0.1:{self.api_port}"
        self.proc: subprocess.Popen[str] | None = None
        self.children: list[psutil.Process] = []
        self.output: list[str] = []

    def start(self, *args: str, timeout_s: float = 240) -> None:
        if "emulator" in args:  # the push emulator's ports: free ones, not its defaults
            self.env["BGTASKS_EMULATOR_PORTS"] = ",".join(str(free_port()) for _ in range(4))
        self.proc = subprocess.Popen([str(BIN / "bgtasks"), "up", *args], env=self.env, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True)
        lines: queue.Queue[str] = queue.Queue()

        def pump() -> None:
            assert self.proc is not None and self.proc.stdout is not None
            for line in self.proc.stdout:
                lines.put(line)
            lines.put("")

        threading.Thread(target=pump, daemon=True).start()
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                line = lines.get(timeout=max(0.1, deadline - time.monotonic()))
            except queue.Empty:
                break
            if line == "":
                raise AssertionError(f"bgtasks up exited: {''.join(self.output)}")
            self.output.append(line)
            if "Press Ctrl-C to stop" in line:
                self.children = psutil.Process(self.proc.pid).children(recursive=True)
                return
        raise AssertionError(f"bgtasks up not ready within {timeout_s}s: {''.join(self.output)}")

    @property
    def auth_string(self) -> str:
        """The Prefect server's auth string, as `bgtasks up` generated it in the home."""
        return (self.home / "secrets" / "prefect-auth-string").read_text().strip()

    def cli(self, *args: str) -> str:
        p = subprocess.run([str(BIN / "bgtasks"), *args], env=self.env, capture_output=True, text=True, timeout=300)
        assert p.returncode == 0, p.stderr
        return p.stdout

    def cli_json(self, *args: str) -> Any:
        return json.loads(self.cli(*args, "-o", "json"))

    def stop(self) -> int:
        """Ctrl-C; the exit code. Kills what is left (by PID) if it does not stop."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGINT)
        try:
            return self.proc.wait(timeout=90)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            for c in self.children:
                if c.is_running():
                    c.kill()
            raise


@contextmanager
def running(home: Path) -> Iterator[Up]:
    """`bgtasks up` on ``home`` for the ``with`` block, stopped with Ctrl-C (exit code 0) after it."""
    up = Up(home)
    try:
        up.start()
        yield up
    finally:
        assert up.stop() == 0


def poll(what: str, check: Any, timeout_s: float) -> Any:
    """Call ``check`` until it returns something truthy; fail after ``timeout_s`` (a safety
    net for a hung stack, not a timing assertion)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if got := check():
            return got
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}")
