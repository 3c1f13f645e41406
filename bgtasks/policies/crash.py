"""Crashed runs of the pool are retried by their task's retry policy (:mod:`bgtasks.crash`).

Told by the ``Crashed`` event at once, and a scan at start and every
``BGTASKS_WORKER_CRASH_SCAN_S`` finds the crashes of a time no worker listened. Each run
goes back as ``AwaitingRetry`` after the policy's backoff, is marked Completed when its
handler had already completed (its work is not done twice), or stays Crashed when the
policy is spent.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from bgtasks import stored
from bgtasks.policies.base import Periodic, Policy, Worker

CRASHED = "prefect.flow-run.Crashed"
#: Crashed runs looked at per scan, the most recent first.
SCAN_LIMIT = 200


class CrashRecovery(Policy):
    events = (CRASHED,)

    def __init__(self, scan_s: float) -> None:
        self.scan_s = scan_s
        self._recovering: set[str] = set()  # crashed runs being looked at now
        self._settled: set[str] = set()  # crashed runs left Crashed (policy exhausted)

    def periodic(self) -> list[Periodic]:
        return [Periodic(self.scan_s, self.scan, at_start=True)]  # a failure is logged, the next round retries

    async def on_event(self, worker: Worker, event: Any) -> None:
        if worker.is_ours(event):
            await self.recover(worker, event.resource.id.removeprefix("prefect.flow-run."))

    async def scan(self, worker: Worker) -> None:
        from prefect.client.schemas.filters import (
            FlowRunFilter,
            FlowRunFilterState,
            FlowRunFilterStateType,
            FlowRunFilterTags,
            WorkPoolFilter,
            WorkPoolFilterName,
        )
        from prefect.client.schemas.sorting import FlowRunSort

        runs = await worker.client.read_flow_runs(
            flow_run_filter=FlowRunFilter(
                state=FlowRunFilterState(type=FlowRunFilterStateType(any_=["CRASHED"])),
                tags=FlowRunFilterTags(all_=[stored.TAG])),
            work_pool_filter=WorkPoolFilter(name=WorkPoolFilterName(any_=[worker.pool_name])),
            sort=FlowRunSort.EXPECTED_START_TIME_DESC, limit=SCAN_LIMIT)
        for run in runs:
            if str(run.id) not in self._settled:
                await self.recover(worker, str(run.id))

    async def recover(self, worker: Worker, run_id: str) -> None:
        """Put one crashed run back as AwaitingRetry, mark it Completed when its handler had
        finished, or leave it Crashed when its retry policy is spent."""
        from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
        from prefect.states import AwaitingRetry, Completed

        from bgtasks.crash import attempts_of, decide

        if run_id in self._recovering or run_id in self._settled:
            return
        self._recovering.add(run_id)
        try:
            run = await worker.client.read_flow_run(run_id)
            if run.state is None or run.state.type.value != "CRASHED" or stored.TAG not in (run.tags or []):
                return
            task_runs = await worker.client.read_task_runs(
                flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[run.id])))
            states = await worker.client.read_flow_run_states(run.id)
            crashes = sum(st.type.value == "CRASHED" for st in states)
            attempts = attempts_of(task_runs, states)
            run_logger = worker.run_logger(run)
            why = run.state.message or "crashed"
            if attempts.completed:
                await worker.client.set_flow_run_state(run.id, Completed(
                    message=f"The handler had completed before the run crashed ({why}); not run again"))
                run_logger.info("Crashed after its handler completed: marked Completed, not run again")
                return
            spec = stored.peek(run.parameters)  # a definition we cannot read: no policy
            decision = decide(spec.retry_policy if spec is not None else None, attempts, crashes)
            if not decision.retry:
                self._settled.add(run_id)
                run_logger.info("Crashed and not retried: %s", decision.reason)
                return
            at = datetime.now(UTC) + timedelta(seconds=decision.delay_s)
            result = await worker.client.set_flow_run_state(run.id, AwaitingRetry(
                scheduled_time=at, message=f"Crashed ({why}); {decision.reason}, in {decision.delay_s:g}s"))
            if result.status.value == "ACCEPT":
                run_logger.info("Crashed: %s, in %gs", decision.reason, decision.delay_s)
                worker.wake_at(at)
        finally:
            self._recovering.discard(run_id)
