"""The first state event of a run Prefect's scheduler made, which Prefect leaves out.

The server emits an event for every later state change, linked to the previous state's
event when that state is under 5 minutes old; automations hold an event until the one it
follows is seen, for up to 15 minutes. Without the first event, a periodic run created
shortly before it was due had every state event held 15 minutes. The worker emits it,
with the initial state's id and time, before the run's next state change.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from bgtasks.policies.base import Policy, Worker

#: The server links a state event to the previous state's event (``follows``) when that
#: state is less than 5 minutes old (prefect.server.models.events); one more minute
#: covers clock skew between this host and the server's.
FOLLOWS_WINDOW = timedelta(minutes=6)


def missing_scheduled_event(flow_run: Any, initial: Any, now: datetime) -> dict[str, Any] | None:
    """The ``prefect.flow-run.Scheduled`` event Prefect's scheduler never emitted for a
    run it created (``emit_event`` keyword arguments), or None when nothing is missing.
    ``initial``: the run's first state. The event has that state's id and time, so the
    server's next state event follows it (docs/prefect.md says what went wrong without it).
    """
    from prefect.client.schemas.objects import StateType

    state = initial
    if (not flow_run.auto_scheduled or state.type != StateType.SCHEDULED or state.name != "Scheduled"
            or state.timestamp is None or now - state.timestamp >= FOLLOWS_WINDOW):
        return None  # not the scheduler's initial state, or too old for a state event to follow it
    related = [{"prefect.resource.id": f"prefect.flow.{flow_run.flow_id}", "prefect.resource.role": "flow"}]
    if flow_run.deployment_id is not None:
        related.append({"prefect.resource.id": f"prefect.deployment.{flow_run.deployment_id}",
                        "prefect.resource.role": "deployment"})
    if flow_run.work_queue_id is not None:
        related.append({"prefect.resource.id": f"prefect.work-queue.{flow_run.work_queue_id}",
                        "prefect.resource.role": "work-queue"})
    related += [{"prefect.resource.id": f"prefect.tag.{tag}", "prefect.resource.role": "tag"}
                for tag in sorted(flow_run.tags or [])]
    return {
        "event": "prefect.flow-run.Scheduled",
        "id": state.id,
        "occurred": state.timestamp,
        "resource": {
            "prefect.resource.id": f"prefect.flow-run.{flow_run.id}",
            "prefect.resource.name": flow_run.name,
            "prefect.run-count": str(flow_run.run_count),
            "prefect.state-message": state.message or "",
            "prefect.state-name": "Scheduled",
            "prefect.state-timestamp": state.timestamp.isoformat(),
            "prefect.state-type": "SCHEDULED",
        },
        "related": related,
        "payload": {"intended": {"from": None, "to": "SCHEDULED"},
                    "emitted_by": "bgtasks worker: Prefect's scheduler creates runs without this event"},
    }


class EmitScheduledEvent(Policy):
    async def before_submit(self, worker: Worker, flow_run: Any) -> bool:
        """Emit the run's missing first event (and go on: the run is not held)."""
        from prefect.events import emit_event

        state = flow_run.state
        if not flow_run.auto_scheduled or state is None or state.name not in ("Scheduled", "Late"):
            return True
        initial = state
        if state.name == "Late":  # the server's late-runs service moved it on; its event follows the first
            try:
                history = await worker.client.read_flow_run_states(flow_run.id)
            except Exception as exc:  # noqa: BLE001 - the run starts anyway; only its events wait
                worker.log.debug("Reading the states of run %s failed: %s", flow_run.id, exc)
                return True
            initial = min(history, key=lambda st: st.timestamp) if history else None
        if initial is not None and (leader := missing_scheduled_event(flow_run, initial, datetime.now(UTC))):
            emit_event(**leader)
        return True
