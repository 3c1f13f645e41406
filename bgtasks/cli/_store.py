"""One opened, migrated bgtasks database per CLI command."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from bgtasks.cli import _common as cli

T = TypeVar("T")


def with_store(op: Callable[[Any], Awaitable[T]]) -> T:
    """Run ``op(store)`` with the settings' bgtasks database, closed afterwards."""
    from bgtasks.store import open_store

    async def go() -> T:
        store = await open_store(cli.settings().store_url)
        try:
            return await op(store)
        finally:
            await store.close()

    return asyncio.run(go())
