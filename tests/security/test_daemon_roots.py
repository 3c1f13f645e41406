"""The trigger daemon watches only inside ``BGTASKS_DAEMON_ALLOWED_ROOTS``, with symlinks resolved.

File rules can come from deployments made through the Prefect API or ``prefect deploy``,
which skip the REST API's check, so the daemon checks each rule itself whenever it arms
or re-arms it. Here the tasks are created with a manager that allows a wider root than
the daemon does (as such a deployment would be), against a real daemon with inotify.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bgtasks.settings import Settings
from tests.fixtures import DaemonProcess, wait_for

pytestmark = pytest.mark.integration

DEADLINE_S = 180


@pytest.fixture
def dirs(tmp_path: Path) -> Iterator[tuple[Path, Path]]:
    allowed, outside = tmp_path / "allowed", tmp_path / "outside"
    allowed.mkdir()
    outside.mkdir()
    yield allowed, outside
    shutil.rmtree(tmp_path, ignore_errors=True)


@pytest.fixture
def daemon(prefect_server: Any, settings: Settings, dirs: tuple[Path, Path]) -> Iterator[DaemonProcess]:
    d = DaemonProcess({"BGTASKS_DAEMON_ALLOWED_ROOTS": json.dumps([str(dirs[0])]),
                       "BGTASKS_DAEMON_SENSORS": json.dumps(["file"]),
                       "BGTASKS_DAEMON_RULES_REFRESH_S": "0.5"},
                      settings.home, settings.home / "logs" / "test-daemon-roots.log")
    try:
        d.wait_ready()
        yield d
    finally:
        d.stop()


async def _rules(daemon: DaemonProcess, want: Any, what: str) -> list[str]:
    async def check() -> tuple[list[str]] | None:  # a tuple: an empty rule list is an answer too
        assert daemon.proc.poll() is None, "the daemon exited"
        rules = daemon.status().get("rules", [])
        return (rules,) if want(rules) else None

    return (await wait_for(check, DEADLINE_S, what))[0]


async def test_rules_outside_the_roots_are_not_armed(manager: Any, daemon: DaemonProcess,
                                                     dirs: tuple[Path, Path], tmp_path: Path) -> None:
    from bgtasks.manager import TaskManager

    allowed, outside = dirs
    (allowed / "sneaky").symlink_to(outside, target_is_directory=True)
    (allowed / "inbox").mkdir()
    lax = TaskManager(manager.client, manager.pool, allowed_roots=[tmp_path])  # as `prefect deploy` would

    async def make(name: str, path: Path) -> str:
        task = await lax.create({"name": name, "handler": "demo", "schedule": {"type": "triggered"},
                                 "trigger": {"on": "file.created", "path": str(path)}})
        manager.created_ids.append(task.id)
        return task.id

    foreign = await make("watch-outside", outside)
    linked = await make("watch-through-a-link", allowed / "sneaky")
    inside = await make("watch-inside", allowed / "inbox")
    # The daemon reads all three in one pass: once it watches the third, it has refused the others.
    rules = await _rules(daemon, lambda r: inside in r, "the daemon to watch the allowed rule")
    assert foreign not in rules and linked not in rules
    log = daemon.log_path.read_text()
    assert "watch-outside: not watching" in log and "watch-through-a-link: not watching" in log

    # Re-armed with symlinks resolved: the watched directory replaced by a link to outside is dropped.
    (allowed / "inbox").rmdir()
    (allowed / "inbox").symlink_to(outside, target_is_directory=True)
    await _rules(daemon, lambda r: inside not in r, "the daemon to drop the rule whose path left the roots")
