"""A triggered task with ``trigger.runOn: "eventHost"`` runs on the host whose daemon saw the event.

The run carries the event's host (the ``event`` parameter's ``host``: the event's resource
name, ``bgtasks.host.<name>``). A worker of another host leaves such a run Scheduled, untouched,
for the workers of that host; no state is written, so the skip costs the server nothing. While
that host is down the run waits in its queue (Late, on PostgreSQL) and starts when the host's
worker is back. ``runOn: "any"`` (the default): any worker of the pool takes it.
"""

from __future__ import annotations

from typing import Any

from bgtasks import stored
from bgtasks.policies.base import Policy, Worker


def wanted_host(parameters: dict[str, Any] | None) -> str | None:
    """The host a run must run on, or None (anywhere)."""
    opts = stored.peek(parameters)
    trigger = opts.trigger if opts is not None else None
    if trigger is None or trigger.run_on != "eventHost":
        return None
    event = (parameters or {}).get("event")
    host = event.get("host") if isinstance(event, dict) else None
    return host if isinstance(host, str) and host else None


class RunOnEventHost(Policy):
    def __init__(self, host_name: str) -> None:
        self.host_name = host_name

    async def before_submit(self, worker: Worker, flow_run: Any) -> bool:
        host = wanted_host(flow_run.parameters)
        if host is None or host == self.host_name:
            return True
        worker.log.debug("Flow run %s is for host %s; left to its workers", flow_run.id, host)
        return False
