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

Every request carries the server's credentials (its auth string as HTTP basic
auth, or a Prefect Cloud API key), and every POST a CSRF token, fetched from
``/csrf-token`` as Prefect's own client does (skipped when the server has CSRF
protection off).
"""

from __future__ import annotations

import asyncio
import base64
import collections
import logging
import random
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import uuid4

import httpx

logger = logging.getLogger("bgtasks.daemon")

#: Events kept while the server is unreachable; the oldest are dropped beyond this.
OUTBOX_LIMIT = 10_000
BATCH = 200


#: A CSRF token is renewed this long before it expires.
CSRF_MARGIN = timedelta(minutes=1)


def auth_headers(auth_string: str | None = None, api_key: str | None = None) -> dict[str, str]:
    """The ``Authorization`` header Prefect's client would send (an API key wins, as in Prefect)."""
    if api_key:
        return {"Authorization": f"Bearer {api_key}"}
    if auth_string:
        return {"Authorization": "Basic " + base64.b64encode(auth_string.encode()).decode()}
    return {}


class PrefectApi:
    """A small async client of the Prefect API with an event outbox.

    ``auth_string`` / ``api_key``: the server's credentials (see :func:`auth_headers`).
    """

    def __init__(self, api_url: str, timeout_s: float = 10.0, *, auth_string: str | None = None,
                 api_key: str | None = None) -> None:
        self.api_url = api_url.rstrip("/")
        headers = {"Content-Type": "application/json", **auth_headers(auth_string, api_key)}
        self._http = httpx.AsyncClient(base_url=self.api_url, headers=headers, timeout=timeout_s)
        self.outbox: collections.deque[dict[str, Any]] = collections.deque(maxlen=OUTBOX_LIMIT)
        self._pending = asyncio.Event()
        self.sent = 0
        self._csrf_client = str(uuid4())
        self._csrf_token: str | None = None
        self._csrf_expires = datetime.min.replace(tzinfo=UTC)
        self._csrf_on = True
        # Each fetch replaces this client's previous token on the server: the loops that
        # post concurrently fetch one at a time (bgtasks.prefect_seam.single_flight_csrf has the story).
        self._csrf_lock = asyncio.Lock()

    async def _csrf_headers(self, refused: str | None = None) -> dict[str, str]:
        """The token to send; ``refused``: the token the server just refused (fetched
        again only if no concurrent request has replaced it already)."""
        if not self._csrf_on:
            return {}
        async with self._csrf_lock:
            if (self._csrf_token is None or self._csrf_token == refused
                    or datetime.now(UTC) > self._csrf_expires - CSRF_MARGIN):
                resp = await self._http.get("/csrf-token", params={"client": self._csrf_client})
                if resp.status_code == 422 and "CSRF protection is disabled" in resp.text:
                    self._csrf_on = False
                    return {}
                resp.raise_for_status()
                body = resp.json()
                self._csrf_token = body["token"]
                self._csrf_expires = datetime.fromisoformat(body["expiration"])
        return {"Prefect-Csrf-Token": self._csrf_token or "", "Prefect-Csrf-Client": self._csrf_client}

    async def post(self, path: str, body: Any) -> httpx.Response:
        """``POST path`` with its CSRF token (renewed once when the server no longer knows it);
        raises ``httpx.HTTPStatusError`` for an error answer."""
        headers = await self._csrf_headers()
        resp = await self._http.post(path, json=body, headers=headers)
        if resp.status_code == 403 and self._csrf_on and "CSRF" in resp.text:
            headers = await self._csrf_headers(refused=headers.get("Prefect-Csrf-Token"))
            resp = await self._http.post(path, json=body, headers=headers)
        resp.raise_for_status()
        return resp

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
            await self.post("/events", batch)
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
            resp = await self.post("/deployments/filter", {
                "deployments": {"tags": {"all_": tags}}, "limit": 200, "offset": offset})
            page = resp.json()
            out.extend(page)
            if len(page) < 200:
                return out
            offset += 200

    async def flow_runs(self, body: dict[str, Any]) -> list[dict[str, Any]]:
        """``POST /flow_runs/filter`` with ``body``."""
        return (await self.post("/flow_runs/filter", body)).json()

    async def set_state(self, flow_run_id: str, body: dict[str, Any]) -> dict[str, Any]:
        """``POST /flow_runs/{id}/set_state``; the orchestration result."""
        return (await self.post(f"/flow_runs/{flow_run_id}/set_state", body)).json()

    async def aclose(self) -> None:
        await self._http.aclose()
