"""A fake ``/sys/class/power_supply`` tree, as the kernel lays it out, for the power sensor."""

from __future__ import annotations

import os
from pathlib import Path


def _write(path: Path, value: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(value + "\n")
    os.replace(tmp, path)  # a reader never sees a half-written file


def write_power_tree(root: Path, percent: int, plugged: bool, charging: bool | None = None) -> None:
    """A laptop: battery ``BAT0`` at ``percent``, charger ``AC`` online when ``plugged``."""
    bat, ac = root / "BAT0", root / "AC"
    bat.mkdir(parents=True, exist_ok=True)
    ac.mkdir(parents=True, exist_ok=True)
    _write(bat / "type", "Battery")
    _write(bat / "scope", "System")
    _write(bat / "present", "1")
    _write(bat / "capacity", str(percent))
    charging = plugged and percent < 100 if charging is None else charging
    _write(bat / "status", "Charging" if charging else ("Full" if plugged else "Discharging"))
    _write(ac / "type", "Mains")
    _write(ac / "online", "1" if plugged else "0")
