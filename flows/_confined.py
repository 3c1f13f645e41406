"""Files the built-in handlers touch stay inside the configured roots (``BGTASKS_TASK_FILE_ROOTS``).

A task's data comes from whoever holds a ``tasks:write`` token, so a path in it is
untrusted. A path is made absolute and normalised (``..`` removed) and must lie
inside a root; then it is opened one component at a time from the root's directory
descriptor with ``O_NOFOLLOW``: a symlink anywhere below the root is refused, not
followed, and a symlink swapped in after the check cannot redirect the open (there
is no second lookup by name). Temporary files get unpredictable names and are
created ``O_EXCL``.

This needs ``dir_fd`` support (Linux, macOS, the BSDs); elsewhere the handlers refuse
to touch files.
"""

from __future__ import annotations

import errno
import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

_DIR_FLAGS = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)


class OutsideRoots(PermissionError):
    """A path outside the allowed roots, or through a symlink: the task's data is wrong, and
    trying again cannot help."""

    retryable = False


def supported() -> bool:
    return os.open in os.supports_dir_fd and bool(NOFOLLOW)


def locate(path: str | Path, roots: list[Path], field: str) -> tuple[Path, tuple[str, ...]]:
    """The root ``path`` lies in and the components below it; :class:`OutsideRoots` if none.

    ``path`` is normalised without following links (``/a/b/../c`` is ``/a/c``); the
    components are then opened without following links by :func:`open_dir`.
    """
    if not supported():
        raise OutsideRoots(f"{field}: this platform cannot open files without following symlinks")
    absolute = Path(os.path.normpath(os.path.abspath(path)))
    for root in roots:
        for base in dict.fromkeys((Path(os.path.normpath(os.path.abspath(root))), Path(os.path.realpath(root)))):
            if absolute == base or absolute.is_relative_to(base):
                return base, absolute.relative_to(base).parts
    allowed = ", ".join(str(r) for r in roots) or "none"
    raise OutsideRoots(f"{field}: {path} is outside the allowed roots ({allowed}); see BGTASKS_TASK_FILE_ROOTS")


def open_dir(root: Path, parts: tuple[str, ...], field: str, create: bool = False) -> int:
    """A descriptor of ``root/parts...``, each component opened with ``O_NOFOLLOW``
    (created with mode 0700 when ``create``); the caller closes it."""
    fd = os.open(root, _DIR_FLAGS & ~NOFOLLOW)  # the root itself is the administrator's choice
    try:
        for part in parts:
            if create:
                try:
                    os.mkdir(part, 0o700, dir_fd=fd)
                except FileExistsError:
                    pass
            try:
                nfd = os.open(part, _DIR_FLAGS, dir_fd=fd)
            except OSError as exc:
                if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                    raise OutsideRoots(f"{field}: {part!r} under {root} is a symlink or not a directory; "
                                       "symlinks are not followed") from None
                raise
            os.close(fd)
            fd = nfd
        return fd
    except BaseException:
        os.close(fd)
        raise


@contextmanager
def directory(path: str | Path, roots: list[Path], field: str, create: bool = False) -> Iterator[int]:
    """:func:`open_dir` of ``path`` after :func:`locate`, closed on exit."""
    root, parts = locate(path, roots, field)
    fd = open_dir(root, parts, field, create)
    try:
        yield fd
    finally:
        os.close(fd)


def open_in(dir_fd: int, name: str, flags: int, mode: int = 0o600) -> int:
    """``os.open(name, flags | O_NOFOLLOW, dir_fd=dir_fd)``: a symlink is refused (ELOOP)."""
    try:
        return os.open(name, flags | NOFOLLOW | getattr(os, "O_CLOEXEC", 0), mode, dir_fd=dir_fd)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise OutsideRoots(f"{name!r} is a symlink; symlinks are not followed") from None
        raise


def temp_name(name: str) -> str:
    """An unpredictable name for a temporary file beside ``name``."""
    return f".{name}.{secrets.token_hex(8)}.bgtasks-tmp"


def append_line(path: str | Path, roots: list[Path], field: str, line: str) -> None:
    """Append ``line`` to the file ``path`` inside the roots (created 0600, never through a link)."""
    p = Path(os.path.normpath(os.path.abspath(path)))
    with directory(p.parent, roots, field) as dfd:
        fd = open_in(dfd, p.name, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
        with os.fdopen(fd, "a", encoding="utf-8") as fh:
            fh.write(line)


__all__ = ["OutsideRoots", "supported", "locate", "open_dir", "directory", "open_in", "temp_name", "append_line"]
