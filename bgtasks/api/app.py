"""The REST API app: the routers of :mod:`bgtasks.api.routes`, their errors, the doors.

JSON bodies are the spec's shapes (``CreateTaskOptions`` in, ``BackgroundTask``,
``TaskResult`` out). Errors are RFC 9457 problem documents (:mod:`bgtasks.api.errors`).
What every request passes first (Host and Origin, token, body limits) is
:mod:`bgtasks.api.middleware`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import Depends, FastAPI

from bgtasks.api import errors, openapi, panel
from bgtasks.api.deps import refuse_nul
from bgtasks.api.middleware import install_doors
from bgtasks.api.routes import ROUTERS
from bgtasks.settings import Settings, is_loopback


def create_app(settings: Settings, store: Any = None) -> FastAPI:
    """The API, talking to the Prefect API named by ``settings``.

    ``store``: an opened :class:`bgtasks.store.Store` (tests); by default the API
    opens and migrates ``settings.store_url`` itself.
    """

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        from prefect.client.orchestration import get_client

        from bgtasks.api.live import RunEvents
        from bgtasks.auth import TokenStore
        from bgtasks.manager import TaskManager
        from bgtasks.store import open_store
        from mobile_push.registry import DeviceRegistry
        from mobile_push.reports import RunLedger

        own = store is None
        db = await open_store(settings.store_url) if own else store
        app.state.tokens = TokenStore(db)
        app.state.devices = DeviceRegistry(db)
        app.state.ledger = RunLedger(db)
        app.state.events = RunEvents()
        try:
            async with get_client() as client:
                app.state.manager = TaskManager(client, settings.worker.pool, settings=settings)
                yield
        finally:
            await app.state.events.close()
            if own:
                await db.close()

    app = FastAPI(title="bgtasks", version="1", lifespan=lifespan, dependencies=[Depends(refuse_nul)],
                  description="Background tasks for desktop and mobile apps, on Prefect. "
                  "Every route but /health needs a bearer token with the scope it names.")
    app.state.settings = settings
    for router in (*ROUTERS, panel.router):
        app.include_router(router)
    errors.install(app)
    openapi.install(app)
    install_doors(app, settings)
    return app


__all__ = ["create_app", "is_loopback"]
