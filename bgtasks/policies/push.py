"""Device-task runs push through senders that live as long as the worker (one TLS
connection, one APNs provider token and one FCM access token for every run), served on a
private Unix socket by :class:`mobile_push.service.PushService`."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from bgtasks.policies.base import Policy, Worker

#: A Unix socket's path has room for about 100 bytes.
MAX_SOCKET_PATH = 100


def _remove_stale(folder: Path) -> None:
    """Sockets left by workers that were killed (their process is gone)."""
    for sock in folder.glob("push-*.sock"):
        try:
            os.kill(int(sock.stem.removeprefix("push-")), 0)
        except ProcessLookupError:
            sock.unlink(missing_ok=True)
        except (ValueError, PermissionError):
            pass  # not ours to judge


class PushSenders(Policy):
    def __init__(self, settings: Any) -> None:
        self.settings = settings
        self.service: Any = None

    async def start(self, worker: Worker) -> None:
        from mobile_push.service import PushService

        path = self.settings.home / "run" / f"push-{os.getpid()}.sock"
        if len(str(path).encode()) > MAX_SOCKET_PATH:
            worker.log.warning("The bgtasks home's path is too long for a Unix socket (%s): device-task runs "
                               "open their own push connections", path)
            return
        _remove_stale(path.parent)
        service = PushService(self.settings.push, path)
        try:
            await service.start()
        except OSError as exc:  # runs then push on their own: slower, never wrong
            worker.log.warning("The push service could not listen on %s (%s): device-task runs open their "
                               "own push connections", path, exc)
            return
        self.service = service

    async def stop(self, worker: Worker) -> None:
        if self.service is not None:
            await self.service.close()

    def child_env(self) -> dict[str, str]:
        from mobile_push.service import ENV_SOCKET

        return {ENV_SOCKET: str(self.service.path)} if self.service is not None else {}
