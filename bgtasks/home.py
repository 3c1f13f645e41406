"""The bgtasks home is private: directories 0700, files 0600 from their first byte.

The home holds the Prefect database, run results, logs and secrets, so nobody but
its owner may read it. Every bgtasks entry point calls :func:`private_umask`, so
what it and its children create (Prefect's SQLite file, result files, logs) is
private when it is created, not chmod-ed afterwards; :func:`ensure_home` makes the
directory itself 0700 (tightening a home an older bgtasks made 0755).

Secrets bgtasks generates (the Prefect server's auth string) live in
``<home>/secrets/`` and are created atomically: written under a temporary name
with mode 0600, then hard-linked into place, so two processes starting at once
read the same value and nobody ever reads a half-written file.
"""

from __future__ import annotations

import os
import secrets
import stat
from pathlib import Path

#: Bytes of randomness in a generated secret (256 bits).
SECRET_BYTES = 32


def private_umask() -> None:
    """Files and directories this process (and its children) creates are its owner's alone."""
    if os.name == "posix":
        os.umask(0o077)


def ensure_home(home: Path) -> Path:
    """Create ``home`` (mode 0700) or tighten it to 0700; return it."""
    home.mkdir(parents=True, exist_ok=True, mode=0o700)
    if os.name == "posix":
        st = home.stat()
        if st.st_uid == os.geteuid() and stat.S_IMODE(st.st_mode) & 0o077:
            os.chmod(home, 0o700)
    return home


def open_private(path: Path, append: bool = True) -> int:
    """A file descriptor for writing ``path``, created 0600 if it does not exist."""
    flags = os.O_WRONLY | os.O_CREAT | (os.O_APPEND if append else os.O_TRUNC)
    return os.open(path, flags | getattr(os, "O_CLOEXEC", 0), 0o600)


def write_private(path: Path, data: bytes, exclusive: bool = False) -> bool:
    """Write ``path`` atomically with mode 0600 from the first byte.

    ``exclusive``: keep an existing file (return False) instead of replacing it.
    """
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o600)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        if not exclusive:
            os.replace(tmp, path)
            return True
        try:
            os.link(tmp, path)  # fails if another process got there first
            return True
        except FileExistsError:
            return False
    finally:
        tmp.unlink(missing_ok=True)


def read_or_create_secret(path: Path) -> str:
    """The secret in ``path``; a new random one (written 0600) when there is none yet.

    A secret file that others may read is refused: it may have been seen.
    """
    if not path.exists():
        write_private(path, (secrets.token_urlsafe(SECRET_BYTES) + "\n").encode(), exclusive=True)
    check_private(path, "secret file")
    value = path.read_text().strip()
    if not value:
        raise PermissionError(f"{path} is empty: delete it to have a new secret generated")
    return value


def check_private(path: Path, what: str) -> None:
    """Refuse a file that its group or others may read or write (POSIX)."""
    if os.name != "posix":
        return
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        raise PermissionError(
            f"{what} {path} is open to group/others (mode {mode:04o}); make it private: chmod 600 {path}")


__all__ = ["private_umask", "ensure_home", "open_private", "write_private", "read_or_create_secret",
           "check_private"]
