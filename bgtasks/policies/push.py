"""Device-task runs push through senders that live as long as the worker (one TLS
connection, one APNs provider token and one FCM access token for every run), served on a
private Unix socket by :class:`mobile_push.service.PushService`."""

from __future__ import annotations

import os
from typing import Any

from bgtasks.policies.base import Policy, Worker

#: A Unix socket's path has room for about 100 bytes.
MAX_SOCKET_PATH = 100


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
        self.service = PushService(self.settings.push, path)
        await self.service.start()

    async def stop(self, worker: Worker) -> None:
        if self.service is not None:
            await self.service.close()

    def child_env(self) -> dict[str, str]:
        from mobile_push.service import ENV_SOCKET

        return {ENV_SOCKET: str(self.service.path)} if self.service is not None else {}
