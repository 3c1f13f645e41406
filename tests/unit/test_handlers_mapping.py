"""Handler discovery and the deployment mapping (pure)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from bgtasks.errors import InvalidTask
from bgtasks.manager import TaskManager
from bgtasks.models import CreateTaskOptions
from bgtasks import stored
from deployments import mapping
from flows import UnknownHandler, available_handlers, resolve_handler
from flows.data_sync import sync_tree


def test_builtin_handlers_are_discoverable() -> None:
    assert {"cleanup", "data-sync", "demo"} <= set(available_handlers())


def test_name_is_matched_to_a_handler_and_unknown_lists_available() -> None:
    assert resolve_handler("Data Sync", None)[0] == "data-sync"
    assert resolve_handler("whatever", "demo")[0] == "demo"
    with pytest.raises(UnknownHandler) as info:
        resolve_handler("Nightly Report", None)
    assert info.value.field == "name" and "data-sync" in str(info.value)
    with pytest.raises(UnknownHandler) as info:
        resolve_handler("x", "nope")
    assert info.value.field == "handler"


def test_a_device_task_handler_defaults_to_the_name_slug_and_needs_one() -> None:
    device = {"schedule": {"type": "one-time"}, "target": {"platform": "ios"}}
    assert TaskManager.validate(dict(device, name="Photo Backup"))[1] == "photo-backup"
    # found by fuzzing: a name with no ASCII letters or digits slugs to "", which was stored
    # and then broke every list of tasks
    with pytest.raises(InvalidTask) as info:
        TaskManager.validate(dict(device, name="\u00d7\u00ba"))
    assert [e["field"] for e in info.value.errors] == ["handler"]
    assert TaskManager.validate(dict(device, name="\u00d7\u00ba", handler="sync"))[1] == "sync"


def test_deployment_carries_tags_parameters_and_a_readable_description() -> None:
    opts = CreateTaskOptions.model_validate({
        "name": "Data Sync", "description": "Sync user data", "priority": "high",
        "schedule": {"type": "periodic", "interval": 3_600_000},
        "constraints": {"requiresNetwork": True},
        "retryPolicy": {"maxRetries": 3, "retryOn": {"exceptions": ["ConnectionError"]}},
        "timeoutMs": 30_000, "data": {"k": 1},
    })
    assert stored.tags_for(opts, "data-sync") == ["bgtasks", "priority:high", "type:periodic", "handler:data-sync"]
    params = stored.parameters_for(opts)
    assert params["data"] == {"k": 1} and "data" not in params["task"]
    assert stored.read(params) == opts
    text = mapping.description_for(opts, "data-sync")
    for words in ("Sync user data", "every 1h", "requiresNetwork", "retries: 3", "ConnectionError", "timeout: 30s"):
        assert words in text


@pytest.mark.parametrize(
    ("state", "status"),
    [("SCHEDULED", "pending"), ("RUNNING", "running"), ("COMPLETED", "completed"), ("CRASHED", "failed"), ("CANCELLED", "cancelled")],
)
def test_status_from_prefect_state(state: str, status: str) -> None:
    assert mapping.status_of(state).value == status


def test_data_sync_copies_changed_files_only(tmp_path: Path) -> None:
    src, dst = tmp_path / "src", tmp_path / "dst"
    (src / "sub").mkdir(parents=True)
    (src / "a.txt").write_text("one")
    (src / "sub" / "b.txt").write_text("two")
    roots = [tmp_path]
    assert sync_tree(src, dst, roots) == {"copied": 2, "skipped": 0, "deleted": 0, "ignored": 0, "bytes": 6}
    assert (dst / "sub" / "b.txt").read_text() == "two"
    (src / "a.txt").write_text("uno")
    (dst / "stale.txt").write_text("x")
    assert sync_tree(src, dst, roots, delete=True) == {"copied": 1, "skipped": 1, "deleted": 1, "ignored": 0,
                                                       "bytes": 3}
    assert sorted(p.name for p in dst.iterdir()) == ["a.txt", "sub"]  # no temporary file left
    with pytest.raises(FileNotFoundError):
        sync_tree(tmp_path / "missing", dst, roots)


def test_an_unreadable_stored_definition_is_shown_from_its_tags() -> None:
    from types import SimpleNamespace

    dep = SimpleNamespace(
        id="7", name="odd", description="by hand", created=datetime(2026, 1, 1, tzinfo=UTC), paused=False, schedules=[],
        work_queue_name="low", tags=["bgtasks", "priority:low", "type:one-time", "handler:"],
        parameters={"task": {"name": "odd", "handler": "", "schedule": {"type": "one-time"}}, "data": None},
    )
    task = mapping.task_from(dep, None, None, None)
    assert (task.name, task.priority.value, task.handler, task.schedule) == ("odd", "low", None, None)
