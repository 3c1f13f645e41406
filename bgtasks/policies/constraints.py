"""Constraints at the worker, with WorkManager's meaning: a run starts only when they hold here.

- At submission: a run whose constraints fail waits, Scheduled as ``AwaitingConstraints``
  with the reasons in its message (no retry is used). At its constraint deadline it runs
  anyway (tagged) or fails, per ``onDeadline``.
- While it runs: a run whose constraints stop holding is cancelled and, once its process
  is gone, waits again (WorkManager stops its worker); opt out with
  ``stopWhenConstraintsLost: false``. A run started at its deadline is never stopped.
- Every ``BGTASKS_WORKER_CONSTRAINT_RECHECK_S``: the pool's waiting runs whose constraints
  hold here are released (the trigger daemon does it at once on a change; this covers a
  host without one).
- Several hosts: a run just released for another host (its constraints hold there) is left
  Scheduled for that host's workers, not set waiting again (no back and forth).

The host's snapshot, the evaluation and the waiting state are :mod:`triggers.constraints`,
shared with the trigger daemon.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import anyio
import anyio.to_thread

from bgtasks import stored
from bgtasks.policies.base import Periodic, Policy, Worker

if TYPE_CHECKING:
    from triggers.constraints import HostSnapshot

#: How often running runs with constraints are checked (stopped when a constraint is lost).
RUNNING_CHECK_S = 1.0


class Constraints(Policy):
    def __init__(self, settings: Any) -> None:
        self.settings = settings
        self._host: Any = None  # triggers.constraints.host.HostSensors, made on first use
        self._stopping: dict[Any, str] = {}  # runs stopped because a constraint was lost -> why
        self._overridden: set[Any] = set()  # runs started at their constraint deadline

    def periodic(self) -> list[Periodic]:
        return [Periodic(self.settings.worker.constraint_recheck_s, self._release_logged),
                Periodic(RUNNING_CHECK_S, self._watch_running)]

    def snapshot(self) -> HostSnapshot:
        """This host's state now (blocking: sysfs and psutil reads)."""
        if self._host is None:
            from triggers.constraints.host import HostSensors

            self._host = HostSensors(self.settings)
        return self._host.snapshot()

    async def before_submit(self, worker: Worker, flow_run: Any) -> bool:
        from prefect.settings import get_current_settings
        from prefect.states import Failed, Scheduled

        from triggers.constraints import describe, unmet
        from triggers.constraints.waiting import deadline_of, due_of, left_to_another_host, waiting_until

        cons = stored.constraints_of(flow_run.parameters)
        if cons is None:
            return True
        missing = unmet(cons, await anyio.to_thread.run_sync(self.snapshot))
        if not missing:
            return True
        now = datetime.now(UTC)
        due = due_of(flow_run.tags, flow_run.expected_start_time or now)
        message = describe(missing) + f" on {self.settings.host_name}"
        deadline = deadline_of(cons, due)
        prefetch = timedelta(seconds=get_current_settings().worker.prefetch_seconds)
        run_logger = worker.run_logger(flow_run)
        if deadline is not None and now + prefetch >= deadline:
            if cons.fails_at_deadline:
                await worker.client.set_flow_run_state(flow_run.id, Failed(
                    message=f"Constraints still unmet at the deadline: {message}"), force=True)
                run_logger.info("Failed at the constraint deadline: %s", message)
                return False
            await worker.client.update_flow_run(flow_run.id, tags=[*flow_run.tags, stored.OVERRIDDEN_TAG])
            self._overridden.add(flow_run.id)  # runs without its constraints: never stopped for them
            run_logger.info("Constraint deadline reached: running anyway (%s)", message)
            return True
        state = flow_run.state
        other = left_to_another_host(state.message if state else None, state.timestamp if state else None,
                                     self.settings.host_name, now)
        if other is not None:  # just released for a host where they hold: its workers take it
            worker.log.debug("Flow run %s was released for %s; left to its workers", flow_run.id, other)
            return False
        if not any(t.startswith(stored.DUE_TAG) for t in flow_run.tags):
            await worker.client.update_flow_run(flow_run.id, tags=[*flow_run.tags, stored.due_tag(due)])
        await worker.client.set_flow_run_state(
            flow_run.id, Scheduled(name=stored.AWAITING, scheduled_time=waiting_until(due, cons), message=message),
            force=True)
        run_logger.info("Not started: %s", message)
        return False

    async def after_run(self, worker: Worker, flow_run: Any) -> None:
        self._overridden.discard(flow_run.id)
        if flow_run.id in self._stopping:
            await self._requeue_stopped(worker, flow_run)

    async def _watch_running(self, worker: Worker) -> None:
        """Cancel the running runs whose constraints no longer hold here."""
        from prefect.states import Cancelling

        from triggers.constraints import describe, unmet

        watched = {rid: (fr, cons) for rid, fr in worker.running.items()
                   if rid not in self._stopping and rid not in self._overridden
                   and (cons := stored.constraints_of(fr.parameters)) is not None and cons.stops_when_lost}
        if not watched:
            return
        try:
            snapshot = await anyio.to_thread.run_sync(self.snapshot)
            for rid, (fr, cons) in watched.items():
                missing = unmet(cons, snapshot)
                if missing:
                    reason = f"Stopped: constraints lost on {self.settings.host_name}: {describe(missing)}"
                    self._stopping[rid] = reason
                    # Not forced: a run that has just finished (its process lingers a moment
                    # for its heartbeat) stays finished; the server refuses the transition.
                    result = await worker.client.set_flow_run_state(rid, Cancelling(message=reason))
                    if result.status.value != "ACCEPT":
                        self._stopping.pop(rid, None)
                        continue
                    worker.run_logger(fr).info(reason)
        except Exception as exc:  # noqa: BLE001 - the next round retries
            worker.log.debug("Running-constraints check failed: %s", exc)

    async def _requeue_stopped(self, worker: Worker, flow_run: Any) -> None:
        """After a stopped run's process is gone: back to AwaitingConstraints, due now."""
        from prefect.states import Scheduled

        from triggers.constraints.waiting import waiting_until

        reason = self._stopping.pop(flow_run.id)
        # Prefect's cancellation manager marks the run Cancelled a moment after its process
        # ended: wait for that, or it would overwrite the waiting state.
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            current = await worker.client.read_flow_run(flow_run.id)
            if current.state is None or current.state.type.value not in ("RUNNING", "CANCELLING", "PENDING"):
                break
            await anyio.sleep(0.2)
        now = datetime.now(UTC)
        tags = [*stored.without_due(flow_run.tags), stored.due_tag(now)]
        await worker.client.update_flow_run(flow_run.id, tags=tags)
        await worker.client.set_flow_run_state(flow_run.id, Scheduled(
            name=stored.AWAITING, scheduled_time=waiting_until(now, stored.constraints_of(flow_run.parameters)),
            message=reason), force=True)

    async def _release_logged(self, worker: Worker) -> None:
        try:
            await self.release_waiting(worker)
        except Exception as exc:  # noqa: BLE001 - the next round retries
            worker.log.debug("Constraint re-check failed: %s", exc)

    async def release_waiting(self, worker: Worker) -> int:
        """Release the pool's waiting runs whose constraints hold here (as the daemon does)."""
        from triggers.constraints.waiting import releasable, release_message, waiting_filter

        resp = await worker.client.request("POST", "/flow_runs/filter", json=waiting_filter(worker.pool_name))
        runs = resp.json()
        if not runs:
            return 0
        snapshot = await anyio.to_thread.run_sync(self.snapshot)
        released = releasable(runs, snapshot, release_message(self.settings.host_name, "worker"))
        for run_id, body in released:
            await worker.client.request("POST", "/flow_runs/{id}/set_state", path_params={"id": run_id}, json=body)
        return len(released)
