"""The data-sync handler: mirror new and changed files from a source to a destination.

Real local work: files under ``source`` whose size or content differs from the
copy under ``destination`` are copied (atomically: written under an unpredictable
temporary name, then renamed); unchanged files are skipped. With ``delete: true``
files that vanished from the source are removed from the destination.

``data``: ``source`` and ``destination`` directories, both inside the allowed roots
(``BGTASKS_TASK_FILE_ROOTS``, default ``<home>/sync``) and apart (neither inside the
other). Symlinks are never followed: one in the source is ignored, one on the way to
either directory is refused (:mod:`flows._confined`). Without them, the defaults are
``<bgtasks home>/sync/outbox`` -> ``<bgtasks home>/sync/synced`` (created if missing),
so the spec's "Data Sync" example runs as written.

Returns ``{"copied", "skipped", "deleted", "ignored", "bytes"}`` (``ignored``: symlinks
and special files in the source).
"""

from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from flows._confined import OutsideRoots, directory, open_in, temp_name
from flows._handler import background_handler

_SUBDIR = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0)


def _digest(fd: int) -> str:
    h = hashlib.sha256()
    os.lseek(fd, 0, os.SEEK_SET)
    while block := os.read(fd, 1 << 20):
        h.update(block)
    return h.hexdigest()


def _entries(dir_fd: int) -> Iterator[os.DirEntry[str]]:
    with os.scandir(dir_fd) as it:
        yield from sorted(it, key=lambda e: e.name)


def _same(src_fd: int, dst_dir: int, name: str, size: int) -> bool:
    try:
        dst_fd = open_in(dst_dir, name, os.O_RDONLY)
    except (FileNotFoundError, OutsideRoots):
        return False
    try:
        st = os.fstat(dst_fd)
        return stat.S_ISREG(st.st_mode) and st.st_size == size and _digest(dst_fd) == _digest(src_fd)
    finally:
        os.close(dst_fd)


def _copy(src_fd: int, dst_dir: int, name: str, st: os.stat_result) -> None:
    tmp = temp_name(name)
    out = open_in(dst_dir, tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.lseek(src_fd, 0, os.SEEK_SET)
        while block := os.read(src_fd, 1 << 20):
            os.write(out, block)
        os.fchmod(out, stat.S_IMODE(st.st_mode) & 0o777)
        os.utime(out, ns=(st.st_atime_ns, st.st_mtime_ns))
    except BaseException:
        os.close(out)
        os.unlink(tmp, dir_fd=dst_dir)
        raise
    os.close(out)
    os.rename(tmp, name, src_dir_fd=dst_dir, dst_dir_fd=dst_dir)


def _mirror(src_dir: int, dst_dir: int, counts: dict[str, int], delete: bool) -> None:
    seen: set[str] = set()
    for entry in _entries(src_dir):
        if entry.is_dir(follow_symlinks=False):
            seen.add(entry.name)
            try:
                os.mkdir(entry.name, 0o777, dir_fd=dst_dir)
            except FileExistsError:
                pass
            sub_src = open_in(src_dir, entry.name, _SUBDIR)
            try:
                sub_dst = open_in(dst_dir, entry.name, _SUBDIR)
                try:
                    _mirror(sub_src, sub_dst, counts, delete)
                finally:
                    os.close(sub_dst)
            finally:
                os.close(sub_src)
        elif entry.is_file(follow_symlinks=False):
            seen.add(entry.name)
            src_fd = open_in(src_dir, entry.name, os.O_RDONLY)
            try:
                st = os.fstat(src_fd)
                if _same(src_fd, dst_dir, entry.name, st.st_size):
                    counts["skipped"] += 1
                    continue
                _copy(src_fd, dst_dir, entry.name, st)
                counts["copied"] += 1
                counts["bytes"] += st.st_size
            finally:
                os.close(src_fd)
        else:
            counts["ignored"] += 1  # symlinks, sockets, devices: never followed or copied
    if delete:
        for entry in _entries(dst_dir):
            if entry.name not in seen and entry.is_file(follow_symlinks=False):
                os.unlink(entry.name, dir_fd=dst_dir)
                counts["deleted"] += 1


def sync_tree(source: Path, destination: Path, roots: list[Path], delete: bool = False) -> dict[str, int]:
    """Mirror ``source`` into ``destination`` (both inside ``roots``); the counts of what was done."""
    src, dst = (Path(os.path.normpath(os.path.abspath(p))) for p in (source, destination))
    if src == dst or src.is_relative_to(dst) or dst.is_relative_to(src):
        raise OutsideRoots(f"data.destination: {destination} and data.source: {source} overlap; "
                           "mirroring a directory into itself is refused")
    counts = {"copied": 0, "skipped": 0, "deleted": 0, "ignored": 0, "bytes": 0}
    try:
        with directory(src, roots, "data.source") as src_fd, \
                directory(dst, roots, "data.destination", create=True) as dst_fd:
            _mirror(src_fd, dst_fd, counts, delete)
    except FileNotFoundError as exc:
        raise FileNotFoundError(f"data.source: {source} is not a directory ({exc.strerror})") from None
    return counts


@background_handler("data-sync")
def data_sync(data: Any = None) -> dict[str, int]:
    """Sync files from a source directory to a destination directory."""
    from bgtasks.settings import load_settings

    settings = load_settings()
    opts = data if isinstance(data, dict) else {}
    if "source" in opts and "destination" in opts:
        source, destination = Path(str(opts["source"])), Path(str(opts["destination"]))
    else:
        base = settings.home / "sync"
        source, destination = base / "outbox", base / "synced"
        source.mkdir(parents=True, exist_ok=True, mode=0o700)
    result = sync_tree(source, destination, settings.handler_roots, delete=bool(opts.get("delete", False)))
    print(f"data-sync {source} -> {destination}: {result}")
    return result
