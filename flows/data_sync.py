"""The data-sync handler: mirror new and changed files from a source to a destination.

Real local work: files under ``source`` whose size or content differs from the
copy under ``destination`` are copied (atomically: write to a temporary name,
then rename); unchanged files are skipped. With ``delete: true`` files that
vanished from the source are removed from the destination.

``data``: ``source`` and ``destination`` directories. Without them, the
defaults are ``<bgtasks home>/sync/outbox`` -> ``<bgtasks home>/sync/synced``
(created if missing), so the spec's "Data Sync" example runs as written.

Returns ``{"copied", "skipped", "deleted", "bytes"}``.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path
from typing import Any

from flows._handler import background_handler


def _digest(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def sync_tree(source: Path, destination: Path, delete: bool = False) -> dict[str, int]:
    """Mirror ``source`` into ``destination``; the counts of what was done."""
    if not source.is_dir():
        raise FileNotFoundError(f"data.source: {source} is not a directory")
    destination.mkdir(parents=True, exist_ok=True)
    copied = skipped = removed = nbytes = 0
    seen: set[Path] = set()
    for src in sorted(p for p in source.rglob("*") if p.is_file()):
        rel = src.relative_to(source)
        seen.add(rel)
        dst = destination / rel
        if dst.is_file() and dst.stat().st_size == src.stat().st_size and _digest(dst) == _digest(src):
            skipped += 1
            continue
        dst.parent.mkdir(parents=True, exist_ok=True)
        tmp = dst.with_name(f".{dst.name}.bgtasks-tmp")
        shutil.copy2(src, tmp)
        os.replace(tmp, dst)
        copied += 1
        nbytes += src.stat().st_size
    if delete:
        for dst in sorted(p for p in destination.rglob("*") if p.is_file()):
            if dst.relative_to(destination) not in seen:
                dst.unlink()
                removed += 1
    return {"copied": copied, "skipped": skipped, "deleted": removed, "bytes": nbytes}


@background_handler("data-sync")
def data_sync(data: Any = None) -> dict[str, int]:
    """Sync files from a source directory to a destination directory."""
    opts = data if isinstance(data, dict) else {}
    if "source" in opts and "destination" in opts:
        source, destination = Path(opts["source"]), Path(opts["destination"])
    else:
        from bgtasks.settings import load_settings

        base = load_settings().home / "sync"
        source, destination = base / "outbox", base / "synced"
        source.mkdir(parents=True, exist_ok=True)
    result = sync_tree(source, destination, delete=bool(opts.get("delete", False)))
    print(f"data-sync {source} -> {destination}: {result}")
    return result
