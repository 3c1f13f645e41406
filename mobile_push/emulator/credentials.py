"""API tokens for the simulated phones, minted in bgtasks' own database as an operator would
with ``bgtasks token create``: one ``devices:write`` token for the simulated app backend (it
registers the phones) and one ``devices:report`` token bound to each phone. They live as long
as the emulator and are revoked when it stops; their secrets exist only in its memory."""

from __future__ import annotations

import asyncio
from typing import Any

from .phones import Credentials


class StoreCredentials(Credentials):
    def __init__(self, store_url: str, enabled: bool = True) -> None:
        self.store_url = store_url
        self.enabled = enabled  # BGTASKS_API_AUTH=none: the API asks for no token
        self._store: Any = None
        self._lock = asyncio.Lock()
        self._backend: str | None = None
        self._devices: dict[str, str] = {}
        self._ids: list[str] = []

    async def _mint(self, name: str, scopes: set[str], device_id: str | None = None) -> str:
        from bgtasks.auth import Scope, TokenStore
        from bgtasks.store import open_store

        if self._store is None:
            self._store = await open_store(self.store_url)
        record, secret = await TokenStore(self._store).create(name, frozenset(Scope(s) for s in scopes), device_id)
        self._ids.append(record.id)
        return secret

    async def backend_headers(self) -> dict[str, str]:
        if not self.enabled:
            return {}
        async with self._lock:
            if self._backend is None:
                self._backend = await self._mint("push emulator: simulated app backend", {"devices:write"})
        return {"Authorization": f"Bearer {self._backend}"}

    async def device_headers(self, device_id: str) -> dict[str, str]:
        if not self.enabled:
            return {}
        async with self._lock:
            if device_id not in self._devices:
                self._devices[device_id] = await self._mint(f"simulated phone {device_id}", {"devices:report"},
                                                            device_id)
        return {"Authorization": f"Bearer {self._devices[device_id]}"}

    async def close(self) -> None:
        if self._store is None:
            return
        from bgtasks.auth import TokenStore

        tokens = TokenStore(self._store)
        for token_id in self._ids:
            await tokens.revoke(token_id)
        await self._store.close()
        self._store = None
