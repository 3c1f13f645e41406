"""The two calls the trigger daemon makes to the Prefect API, over plain httpx.

The daemon runs all day on every host: importing Prefect's client would cost
~30 MiB of RSS for four endpoints. So it speaks HTTP itself:

- ``POST /api/events``: a batch of events (the server's bulk ingestion route);
- ``POST /api/deployments/filter``: the triggered tasks, to learn file rules;
- ``POST /api/flow_runs/filter`` and ``/flow_runs/{id}/set_state``: release runs
  waiting for constraints that now hold.

Events go through an outbox: emitting never blocks a sensor; a sender task
posts batches and, while the server does not answer, keeps them (bounded) and
retries with capped backoff. Each event carries its own id, so a batch posted
twice is recognised by the server's de-duplication.
"""

from __future__ import annotations

import asyncio
import base64
import collections
import logging
import os
import random
from datetime import UTC, datetime
from typing import Any
from uuid import uuid4

import httpx

logger = logging.getLogger("bgtasks.daemon")

#: Events kept while the server is unreachable; the oldest are dropped beyond this.
OUTBOX_LIMIT = 10_000
BATCH = 200


def _headers() -> dict[str, str]:
    headers = {"Content-Type": "application/json"}
    if key := os.environ.get("PREFECT_API_KEY"):
        headers["Authorization"] = f"Bearer {key}"
    elif auth := os.environ.get("PREFECT_API_AUTH_STRING"):
        headers["Authorization"] = "Basic " + base64.b64encode(auth.encode()).decode()
    return headers


class PrefectApi:
    """A small async client of the Prefect API with an event outbox."""

    def __init__(self, api_url: str, timeout_s: float = 10.0) -> None:
        self.api_url = api_url.rstrip("/")
        self._http = httpx.AsyncClient(base_url=self.api_url, headers=_headers(), timeout=timeout_s)
        self.outbox: collections.deque[dict[str, Any]] = collections.deque(maxlen=OUTBOX_LIMIT)
        self._pending = asyncio.Event()
        self.sent = 0

    def emit(self, event: str, resource: dict[str, str], related: list[dict[str, str]] | None = None,
             payload: dict[str, Any] | None = None) -> dict[str, Any]:
        """Queue one event (never blocks); :meth:`flush` or :meth:`sender` posts it."""
        body = {"id": str(uuid4()), "occurred": datetime.now(UTC).isoformat(), "event": event,
                "resource": resource, "related": related or [], "payload": payload or {}}
        if len(self.outbox) == self.outbox.maxlen:
            logger.warning("event outbox full (%d): dropping the oldest event", OUTBOX_LIMIT)
        self.outbox.append(body)
        self._pending.set()
        return body

    async def flush(self) -> None:
        """Post everything queued; raises httpx errors (the events stay queued)."""
        while self.outbox:
            batch = [self.outbox[i] for i in range(min(BATCH, len(self.outbox)))]
            resp = await self._http.post("/events", json=batch)
            resp.raise_for_status()
            for _ in batch:
                self.outbox.popleft()
            self.sent += len(batch)

    async def sender(self, stop: asyncio.Event) -> None:
        """Post queued events as they come; back off (capped, jittered) while the server is away."""
        delay = 0.5
        while True:
            if not self.outbox:
                if stop.is_set():
                    return
                self._pending.clear()
                waiter = asyncio.ensure_future(self._pending.wait())
                stopper = asyncio.ensure_future(stop.wait())
                await asyncio.wait({waiter, stopper}, return_when=asyncio.FIRST_COMPLETED)
                waiter.cancel()
                stopper.cancel()
                continue
            try:
                await self.flush()
                delay = 0.5
            except httpx.HTTPError as exc:
                if stop.is_set():
                    logger.warning("stopping with %d unsent event(s): %s", len(self.outbox), exc)
                    return
                logger.warning("cannot post %d event(s) to %s (%s); retrying in %.1fs",
                               len(self.outbox), self.api_url, exc, delay)
                try:
                    await asyncio.wait_for(stop.wait(), delay * (0.5 + random.random() / 2))
                except TimeoutError:
                    pass
                delay = min(delay * 2, 30.0)

    async def triggered_deployments(self, tags: list[str]) -> list[dict[str, Any]]:
        """Deployments carrying all ``tags`` (paged)."""
        out: list[dict[str, Any]] = []
        offset = 0
        while True:
            resp = await self._http.post("/deployments/filter", json={
                "deployments": {"tags": {"all_": tags}}, "limit": 200, "offset": offset})
            resp.raise_for_status()
            page = resp.json()
            out.extend(page)
            if len(page) < 200:
                return out
            offset += 200

    async def flow_runs(self, body: dict[str, Any]) -> list[dict[str, Any]]:
        """``POST /flow_runs/filter`` with ``body``."""
        resp = await self._http.post("/flow_runs/filter", json=body)
        resp.raise_for_status()
        return resp.json()

    async def set_state(self, flow_run_id: str, body: dict[str, Any]) -> dict[str, Any]:
        """``POST /flow_runs/{id}/set_state``; the orchestration result."""
        resp = await self._http.post(f"/flow_runs/{flow_run_id}/set_state", json=body)
        resp.raise_for_status()
        return resp.json()

    async def aclose(self) -> None:
        await self._http.aclose()
