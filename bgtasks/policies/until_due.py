"""A run starts at its time, not before.

Runs are picked up to ``prefetch_seconds`` early and the server's own check
(WaitForScheduledTime) rounds the wait to whole seconds, so without this wait a run could
start up to half a second early.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import anyio

from bgtasks.policies.base import Policy, Worker


async def until_due(flow_run: Any) -> None:
    """Sleep until the run is due (again if the wall clock was slewed meanwhile)."""
    state = flow_run.state
    due = state.state_details.scheduled_time if state is not None and state.is_scheduled() else None
    due = due or flow_run.expected_start_time
    while due is not None and (wait := (due - datetime.now(UTC)).total_seconds()) > 0:
        await anyio.sleep(wait)


class WaitUntilDue(Policy):
    async def before_submit(self, worker: Worker, flow_run: Any) -> bool:
        await until_due(flow_run)
        return True
