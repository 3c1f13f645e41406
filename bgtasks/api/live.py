"""Changes as they happen, for the task panel: Prefect's flow-run events of bgtasks' tasks
and its deployment events, fanned out to every open ``GET /tasks/events`` stream
(server-sent events).

One subscription to the Prefect server's event stream is open while at least one panel
listens. A ``run`` message names the task (``taskId``: its deployment), the run and its
new state; a ``task`` message says a task was created, changed or deleted (by anyone: the
panel, the CLI, the Prefect UI). The panel then reads what changed through the REST API. A ``resync`` message says
events may have been missed (the stream (re)connected, or a slow reader's queue filled):
read everything again.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator
from typing import Any

from bgtasks import stored

logger = logging.getLogger("bgtasks.api")

#: Messages kept for a reader that has not caught up; past that it gets one ``resync``.
QUEUE = 256
RESYNC = {"kind": "resync"}


#: A deployment was created, changed (paused, resumed, cancelled...) or deleted: the list changes.
DEPLOYMENT_EVENTS = ("prefect.deployment.created", "prefect.deployment.updated", "prefect.deployment.deleted")


def message_of(event: Any) -> dict[str, Any] | None:
    """The panel's message for a Prefect event, or None when it is not about a bgtasks task."""
    if event.event in DEPLOYMENT_EVENTS:
        # These events carry no tags: the panel reads the list again and sees whether it changed.
        return {"kind": "task", "taskId": event.resource.id.removeprefix("prefect.deployment."),
                "change": event.event.removeprefix("prefect.deployment."), "occurred": event.occurred.isoformat()}
    tags = {r.id for r in event.related if r.get("prefect.resource.role") == "tag"}
    if f"prefect.tag.{stored.TAG}" not in tags:
        return None
    deployment = next((r.id for r in event.related if r.get("prefect.resource.role") == "deployment"), None)
    if deployment is None:
        return None
    return {"kind": "run", "taskId": deployment.removeprefix("prefect.deployment."),
            "runId": event.resource.id.removeprefix("prefect.flow-run."),
            "state": event.resource.get("prefect.state-name"), "occurred": event.occurred.isoformat()}


class RunEvents:
    """The fan-out: each reader's queue gets every message."""

    def __init__(self) -> None:
        self._queues: set[asyncio.Queue[dict[str, Any]]] = set()
        self._pump: asyncio.Task[None] | None = None

    def publish(self, message: dict[str, Any]) -> None:
        for q in self._queues:
            try:
                q.put_nowait(message)
            except asyncio.QueueFull:  # a slow reader: drop what it holds, tell it to read again
                while not q.empty():
                    q.get_nowait()
                q.put_nowait(RESYNC)

    def subscribe(self) -> asyncio.Queue[dict[str, Any]]:
        """A reader's queue; the Prefect subscription starts with the first reader."""
        q: asyncio.Queue[dict[str, Any]] = asyncio.Queue(QUEUE)
        self._queues.add(q)
        if self._pump is None or self._pump.done():
            self._pump = asyncio.create_task(self._subscribe())
        return q

    def unsubscribe(self, q: asyncio.Queue[dict[str, Any]]) -> None:
        """The reader went away; the subscription ends with the last one."""
        self._queues.discard(q)
        if not self._queues and self._pump is not None:
            self._pump.cancel()
            self._pump = None

    async def close(self) -> None:
        if self._pump is not None:
            self._pump.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._pump

    async def _subscribe(self) -> None:
        from prefect.events.clients import get_events_subscriber
        from prefect.events.filters import EventFilter, EventNameFilter

        # (prefix and name would both have to match: the deployment events are picked in message_of)
        flt = EventFilter(event=EventNameFilter(prefix=["prefect.flow-run.", "prefect.deployment."]))
        while True:
            try:
                async with get_events_subscriber(filter=flt, reconnection_attempts=10) as sub:
                    self.publish(RESYNC)  # what changed before the stream was open was not heard
                    async for event in sub:
                        if (message := message_of(event)) is not None:
                            self.publish(message)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the resync sent on reconnection makes readers read everything again
                logger.debug("Prefect event stream interrupted (%s); reconnecting", exc)
                await asyncio.sleep(2)


async def sse(events: RunEvents, heartbeat_s: float = 15.0) -> AsyncIterator[bytes]:
    """``text/event-stream`` frames of ``events``; a comment every ``heartbeat_s`` keeps
    proxies from closing a quiet stream and finds readers that went away."""
    q = events.subscribe()
    try:
        yield b"retry: 3000\n\n"
        while True:
            try:
                message = await asyncio.wait_for(q.get(), heartbeat_s)
            except TimeoutError:
                yield b": keep-alive\n\n"
                continue
            yield f"event: {message['kind']}\ndata: {json.dumps(message)}\n\n".encode()
    finally:
        events.unsubscribe(q)
