"""The daemon lists a file rule (in its state file: what `bgtasks daemon status` and the
tests read as "watching") only once the rule is armed: a file that arrives from then on
starts its task. Real inotify on a temp directory; the rules come from a stub of the
task listing, so no Prefect server is needed."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from bgtasks.settings import Settings
from triggers.daemon import TriggerDaemon
from triggers.sensors._filerules import FileRule


async def test_a_file_written_as_soon_as_the_rule_is_listed_starts_the_task(tmp_path: Path) -> None:
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    settings = Settings(home=tmp_path / "home", daemon={"sensors": ["file"], "allowed_roots": [str(tmp_path)],
                                                       "file_observer": "native"})
    emitted: list[dict[str, Any]] = []
    got_one = asyncio.Event()

    def emit(event: dict[str, Any]) -> None:
        emitted.append(event)
        got_one.set()

    daemon = TriggerDaemon(settings, emit=emit, state_path=tmp_path / "state.json")
    rule = FileRule("task-1", str(inbox), patterns=("*.csv",), kinds=frozenset({"created"}), debounce_s=0.1,
                    max_wait_s=1.0)

    async def wanted_rules() -> dict[str, FileRule]:
        return {"task-1": rule}

    daemon.wanted_rules = wanted_rules  # type: ignore[method-assign]
    save = daemon.save

    def save_then_write() -> None:
        """The moment the state file says "watching task-1", a file arrives."""
        save()
        state = json.loads(daemon.state_path.read_text())["_daemon"]
        if "task-1" in state["rules"] and not (inbox / "a.csv").exists():
            (inbox / "a.csv").write_text("1\n")

    daemon.save = save_then_write  # type: ignore[method-assign]
    stop = asyncio.Event()
    runner = asyncio.create_task(daemon._run(stop))
    try:
        await asyncio.wait_for(got_one.wait(), 60)
    except TimeoutError:
        pytest.fail("the file written once the rule was listed was never reported")
    finally:
        stop.set()
        await asyncio.wait_for(runner, 60)
    assert [e["event"] for e in emitted] == ["bgtasks.file.created"]
    assert emitted[0]["payload"]["paths"] == [str(inbox / "a.csv")]
