"""The warm worker's policies: each bgtasks behaviour around Prefect's submit-and-run loop.

:class:`bgtasks.warm_worker.WarmWorker` only polls, forks and supervises runs; what bgtasks
adds (drop a paused task's runs, guard the start time, emit the event Prefect leaves out,
wait for the due time, gate on constraints, catch up, recover crashes, re-run failed
trigger actions) is a :class:`Policy` each, in its own module, composed in
:func:`default_policies` order. A reader finds "what happens to a paused task's run" in
``paused.py``. The model is dramatiq's middleware: small optional hooks, called in order.
"""

from __future__ import annotations

from typing import Any

from bgtasks.policies.base import Periodic, Policy, Worker, drop

__all__ = ["Periodic", "Policy", "Worker", "default_policies", "drop"]


def default_policies(settings: Any) -> list[Policy]:
    """The policies of a bgtasks worker, in the order their hooks run (``settings``: the
    worker's :class:`bgtasks.settings.Settings`, read once at its start)."""
    from bgtasks.policies.catchup import CatchUp
    from bgtasks.policies.constraints import Constraints
    from bgtasks.policies.crash import CrashRecovery
    from bgtasks.policies.host import RunOnEventHost
    from bgtasks.policies.failed_triggers import FailedTriggers
    from bgtasks.policies.paused import DropPausedRuns
    from bgtasks.policies.push import PushSenders
    from bgtasks.policies.scheduled_event import EmitScheduledEvent
    from bgtasks.policies.start_time import DropBeforeStartTime
    from bgtasks.policies.until_due import WaitUntilDue

    return [
        RunOnEventHost(settings.host_name),  # another host's run: not ours to touch
        DropPausedRuns(),
        DropBeforeStartTime(),
        EmitScheduledEvent(),  # before any state change follows the run's first state
        WaitUntilDue(),
        Constraints(settings),
        CatchUp(settings.worker.misfire_grace_s),
        CrashRecovery(settings.worker.crash_scan_s),
        FailedTriggers(settings.worker.crash_scan_s),
        PushSenders(settings),
    ]
