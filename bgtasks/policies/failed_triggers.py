"""Trigger actions the Prefect server refused as busy are run again, once.

An automation's run-deployment action fails when the server answers 5xx (SQLite busy under
load); Prefect does not retry it. The worker hears the failure event at once, and a scan
every ``BGTASKS_WORKER_CRASH_SCAN_S`` finds the failures of the last ``LOOKBACK`` no worker
heard. The run is created with the action's own idempotency key: however often this runs,
and on however many workers, there is one run.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Any

import anyio

from bgtasks.policies.base import Periodic, Policy, Worker
from deployments.triggers import ACTION_FAILED

#: How far back each scan looks for failed actions.
LOOKBACK = timedelta(minutes=15)
#: Events per page of the events API (its maximum).
EVENTS_PAGE = 50


async def read_failed_triggers(client: Any, lookback: timedelta) -> list[Any]:
    """The bgtasks trigger actions of the last ``lookback`` worth running again
    (:func:`deployments.triggers.retryable_failure`), oldest first."""
    from prefect.events.filters import (
        EventFilter,
        EventNameFilter,
        EventOccurredFilter,
        EventResourceFilter,
    )

    from deployments.triggers import retryable_failure

    now = datetime.now(UTC)
    page = await client.read_events(filter=EventFilter(
        occurred=EventOccurredFilter(since=now - lookback, until=now),
        event=EventNameFilter(name=[ACTION_FAILED]),
        resource=EventResourceFilter(id_prefix=["prefect.automation."])), limit=EVENTS_PAGE)
    found = []
    while True:
        found.extend(f for f in map(retryable_failure, page.events) if f is not None)
        if page.next_page is None:
            return found[::-1]  # the API answers newest first
        page = await client.read_events_page(page.next_page)


class FailedTriggers(Policy):
    events = (ACTION_FAILED,)

    def __init__(self, scan_s: float) -> None:
        self.scan_s = scan_s
        self._done: dict[str, float] = {}  # idempotency keys re-run -> when (monotonic)
        self._busy: set[str] = set()  # being re-run now

    def periodic(self) -> list[Periodic]:
        return [Periodic(self.scan_s, self.scan, at_start=True)]  # a failure is logged, the next round retries

    async def on_event(self, worker: Worker, event: Any) -> None:
        from deployments.triggers import retryable_failure

        failure = retryable_failure(event)  # any pool's: rerun() checks the deployment's
        if failure is None:
            return
        try:
            await self.rerun(worker, failure, wait_s=30)
        except Exception:  # noqa: BLE001 - the next scan retries
            worker.log.warning("Re-running a failed trigger action failed; the next scan retries it",
                               exc_info=True)

    async def scan(self, worker: Worker) -> None:
        horizon = time.monotonic() - 2 * LOOKBACK.total_seconds()
        for key in [k for k, at in self._done.items() if at < horizon]:
            del self._done[key]
        for failure in await read_failed_triggers(worker.client, LOOKBACK):
            await self.rerun(worker, failure)

    async def rerun(self, worker: Worker, failure: Any, wait_s: float = 0) -> None:
        """Create the run a trigger's automation failed to create, with the action's key."""
        from prefect.events.filters import (
            EventFilter,
            EventIDFilter,
            EventOccurredFilter,
        )
        from prefect.exceptions import ObjectNotFound

        from deployments.triggers import event_parameters

        key = failure.idempotency_key
        if key in self._done or key in self._busy:
            return
        self._busy.add(key)
        try:
            try:
                dep = await worker.client.read_deployment(failure.deployment_id)
            except ObjectNotFound:  # the task was deleted since
                self._done[key] = time.monotonic()
                return
            if dep.work_pool_name != worker.pool_name or dep.paused:
                # Another pool's workers see it too; a paused task's triggers are off.
                self._done[key] = time.monotonic()
                return
            since = datetime.now(UTC) - 2 * LOOKBACK
            flt = EventFilter(occurred=EventOccurredFilter(since=since), id=EventIDFilter(id=[failure.event_id]))
            deadline = time.monotonic() + wait_s
            while not (found := await worker.client.read_events(filter=flt, limit=1)).events:
                if time.monotonic() >= deadline:
                    worker.log.info("Trigger of task %s: Prefect's action failed (%s); its event is not "
                                    "stored yet, the next scan re-runs it", dep.name, failure.reason)
                    return
                await anyio.sleep(1)  # the server stores events in batches
            run = await worker.client.create_flow_run_from_deployment(
                dep.id, parameters=event_parameters(found.events[0]), idempotency_key=key)
            self._done[key] = time.monotonic()
            # The same key returns the run an earlier re-run made (e.g. before a restart).
            worker.log.info("Trigger of task %s: Prefect's action failed (%s); its run is %s",
                            dep.name, failure.reason, run.id)
        finally:
            self._busy.discard(key)
