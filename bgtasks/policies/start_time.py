"""A periodic task's ``schedule.startTime`` is its first run: earlier scheduler runs are dropped.

Prefect's interval schedule takes the start time as an anchor (the phase) and creates runs
before it; the spec's startTime means nothing runs before it.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from bgtasks import stored
from bgtasks.models import TaskType
from bgtasks.policies.base import Policy, Worker, drop


def before_start(flow_run: Any) -> bool:
    """A run Prefect's scheduler made due (by more than a second) before its periodic task's
    ``schedule.startTime`` (run-now and triggered runs are not the schedule's)."""
    if not flow_run.auto_scheduled:
        return False
    opts = stored.peek(flow_run.parameters)
    schedule, due = (opts.schedule if opts is not None else None), flow_run.expected_start_time
    if schedule is None or schedule.type != TaskType.PERIODIC or schedule.start_time is None or due is None:
        return False
    return due < schedule.start_time - timedelta(seconds=1)


class DropBeforeStartTime(Policy):
    async def before_submit(self, worker: Worker, flow_run: Any) -> bool:
        if before_start(flow_run):
            return await drop(worker, flow_run, "due before its task's startTime")
        return True
