"""The built-in handlers touch files only inside ``BGTASKS_TASK_FILE_ROOTS``, never through a symlink.

A ``tasks:write`` token chooses a task's data. Before this, data-sync could plant files
in ``~/.ssh`` or site-packages, or delete everything under the home, and demo's
``recordTo`` appended to any file. The file operations are checked on real
directories here, and real runs through the warm worker show the refusal is a
failure that is not retried.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from flows._confined import OutsideRoots, append_line
from tests.fixtures import runs_of
from flows.data_sync import sync_tree
from flows.demo import InvalidData, check_data


@pytest.fixture
def outside() -> Iterator[Path]:
    """A directory outside the roots the tests give (and outside the session's /tmp root)."""
    path = Path("/var/tmp") / f"bgtasks-outside-{uuid.uuid4().hex[:8]}"
    path.mkdir()
    (path / "victim.txt").write_text("precious")
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def _tree(path: Path) -> dict[str, str]:
    return {str(p.relative_to(path)): p.read_text() for p in sorted(path.rglob("*")) if p.is_file()}


def test_data_sync_refuses_paths_outside_the_roots(tmp_path: Path, outside: Path) -> None:
    root = tmp_path / "root"
    (root / "src").mkdir(parents=True)
    (root / "src" / "authorized_keys").write_text("ssh-ed25519 attacker")
    before = _tree(outside)
    with pytest.raises(OutsideRoots, match="data.destination: .* outside the allowed roots"):
        sync_tree(root / "src", outside / "ssh", [root])
    with pytest.raises(OutsideRoots, match="data.source"):
        sync_tree(outside, root / "dst", [root])
    with pytest.raises(OutsideRoots, match="data.destination"):  # `..` does not climb out
        sync_tree(root / "src", root / ".." / ".." / outside.relative_to("/"), [root])
    # "delete everything": an empty source mirrored onto the root itself is still inside the root,
    # but a destination holding the source is refused.
    with pytest.raises(OutsideRoots, match="overlap"):
        sync_tree(root / "src", root, [root], delete=True)
    assert _tree(outside) == before and not (outside / "ssh").exists()
    assert (root / "src" / "authorized_keys").exists()


def test_data_sync_never_follows_a_symlink(tmp_path: Path, outside: Path) -> None:
    root = tmp_path / "root"
    (root / "src").mkdir(parents=True)
    (root / "src" / "a.txt").write_text("new")
    (root / "src" / "leak").symlink_to(outside / "victim.txt")  # would copy a file from outside
    (root / "dst-link").symlink_to(outside, target_is_directory=True)  # would write outside
    with pytest.raises(OutsideRoots, match="symlink"):
        sync_tree(root / "src", root / "dst-link" / "sub", [root])
    with pytest.raises(OutsideRoots, match="symlink"):
        sync_tree(root / "src", root / "dst-link", [root], delete=True)
    counts = sync_tree(root / "src", root / "dst", [root])
    assert counts["copied"] == 1 and counts["ignored"] == 1
    assert _tree(root / "dst") == {"a.txt": "new"}  # the symlink's target was not read
    # A destination file replaced by a link to outside is replaced, not written through.
    (root / "src" / "a.txt").write_text("newer")
    (root / "dst" / "a.txt").unlink()
    (root / "dst" / "a.txt").symlink_to(outside / "victim.txt")
    sync_tree(root / "src", root / "dst", [root])
    assert (outside / "victim.txt").read_text() == "precious"
    assert not (root / "dst" / "a.txt").is_symlink() and (root / "dst" / "a.txt").read_text() == "newer"


def test_demo_record_to_stays_inside_the_roots(tmp_path: Path, outside: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    with pytest.raises(OutsideRoots, match="data.recordTo"):
        append_line(outside / "victim.txt", [root], "data.recordTo", "x\n")
    (root / "log").symlink_to(outside / "victim.txt")
    with pytest.raises(OutsideRoots, match="symlink"):
        append_line(root / "log", [root], "data.recordTo", "x\n")
    (root / "dir").symlink_to(outside, target_is_directory=True)
    with pytest.raises(OutsideRoots, match="symlink"):
        append_line(root / "dir" / "new.log", [root], "data.recordTo", "x\n")
    assert _tree(outside) == {"victim.txt": "precious"}
    append_line(root / "ok.log", [root], "data.recordTo", "line\n")
    assert (root / "ok.log").read_text() == "line\n" and (root / "ok.log").stat().st_mode & 0o777 == 0o600


@pytest.mark.parametrize(("data", "field"), [
    ({"sleepSeconds": 10 ** 9}, "sleepSeconds"), ({"sleepSeconds": -1}, "sleepSeconds"),
    ({"failTimes": 10 ** 6}, "failTimes"), ({"exitCode": 4096}, "exitCode"), ({"sleepSeconds": "1e9"}, "sleepSeconds"),
    ({"message": "x" * 5000}, "message"), ({"recordTo": ["/etc/passwd"]}, "recordTo"),
])
def test_demo_knobs_are_bounded(data: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidData, match=f"data.{field}"):
        check_data(data)


# ---- real runs through the warm worker ----------------------------------------------------


@pytest.mark.integration
@pytest.mark.parametrize("handler", ["data-sync", "demo"])
async def test_a_run_pointed_outside_the_roots_fails_without_retries(manager: Any, worker: Any, outside: Path,
                                                                     tmp_path: Path, handler: str) -> None:
    data = ({"source": str(tmp_path), "destination": str(outside / "planted")} if handler == "data-sync"
            else {"recordTo": str(outside / "victim.txt")})
    task = await manager.create({"name": f"confined-{handler}", "handler": handler, "schedule": {"type": "one-time"},
                                 "retryPolicy": {"maxRetries": 3, "initialBackoffMs": 100}, "data": data})
    [run] = await runs_of(manager.client, task.id)
    result = await manager.wait_for_run(str(run.id), timeout_s=180)
    assert result.success is False and result.attempts == 1, result
    assert "outside the allowed roots" in (result.error or "")
    assert _tree(outside) == {"victim.txt": "precious"}
    assert sorted(os.listdir(outside)) == ["victim.txt"]  # nothing planted, no directory made


@pytest.mark.parametrize("which", ["fcm", "apns"])
def test_push_credentials_others_may_read_are_refused(tmp_path: Path, which: str) -> None:
    """A service-account JSON or a .p8 key that group or others may read may have leaked:
    no sender is built from it, and the error names the setting and the fix."""
    from bgtasks.settings import PushSettings
    from mobile_push.senders import make_senders

    path = tmp_path / ("service-account.json" if which == "fcm" else "AuthKey_ABC123DEFG.p8")
    path.write_text("{}" if which == "fcm" else "-----BEGIN PRIVATE KEY-----\n")
    os.chmod(path, 0o644)
    settings = (PushSettings(fcm_credentials_file=path) if which == "fcm" else
                PushSettings(apns_key_file=path, apns_key_id="ABC123DEFG", apns_team_id="TEAM123456"))
    setting = "BGTASKS_PUSH_FCM_CREDENTIALS_FILE" if which == "fcm" else "BGTASKS_PUSH_APNS_KEY_FILE"
    with pytest.raises(ValueError, match=rf"{setting}.*open to group/others.*chmod 600"):
        make_senders(settings)
