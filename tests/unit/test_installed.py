"""A package named like one of bgtasks' rooms, earlier on the import path, is refused by
name before anything starts (bgtasks.installed)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from bgtasks.installed import ROOMS, shadowed


def test_bgtasks_own_rooms_are_found_where_it_is_installed() -> None:
    assert shadowed() == []


def test_up_refuses_a_flows_package_that_shadows_bgtasks_own(tmp_path: Path) -> None:
    (tmp_path / "flows").mkdir()
    (tmp_path / "flows" / "__init__.py").write_text("raise SystemExit('the wrong flows was imported')\n")
    env = {**os.environ, "PYTHONPATH": str(tmp_path), "BGTASKS_HOME": str(tmp_path / "home")}
    bgtasks = Path(sys.executable).with_name("bgtasks")
    proc = subprocess.run([str(bgtasks), "up"], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    out = " ".join((proc.stdout + proc.stderr).split())
    assert f"'flows' is imported from {tmp_path / 'flows'}" in out and "the wrong flows" not in out
    assert not (tmp_path / "home" / "logs").exists()  # nothing started


def test_every_room_is_checked(tmp_path: Path) -> None:
    for room in ROOMS:
        (tmp_path / room).mkdir()
        (tmp_path / room / "__init__.py").write_text("")
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    code = "from bgtasks.installed import shadowed\nfor problem in shadowed(): print(problem)"
    out = subprocess.run([sys.executable, "-c", code], env=env, cwd=tmp_path.parent, capture_output=True, text=True,
                         check=True).stdout
    assert [line.split("'")[1] for line in out.splitlines()] == list(ROOMS)
