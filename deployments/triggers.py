"""A triggered task -> the Prefect automation that runs it (pure: builds objects, no I/O).

The trigger daemon emits ``bgtasks.<sensor>.<change>`` events with the host as
the resource (``bgtasks.host.<hostname>``; network events carry the labels
``bgtasks.network.kind`` and ``bgtasks.network.metered``) and, for file events,
the task's rule as a related resource (``bgtasks.rule.<task id>``, role
``rule``). A triggered task's automation expects its event, filtered the same
way, and runs the task's deployment with one more parameter, ``event``: the
event's name, id and payload (for files: the paths), so the handler sees what
happened. The automation is owned by the deployment (``prefect.deployment.<id>``);
pausing the task disables it.

Prefect does not retry a run-deployment action that failed (``ActionFailed``: it
emits ``prefect.automation.action.failed`` and drops it), and a busy SQLite
server answers the action's flow-run create with 503. :func:`retryable_failure`
picks those failures out of the event, :func:`event_parameters` renders the
parameters the action would have sent, and the warm worker creates the run with
the action's own idempotency key, so a retry never makes a second run.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any
from uuid import UUID

from bgtasks import stored
from bgtasks.models import TaskTrigger
from bgtasks.prefect_seam import trigger_action_key

#: Rendered by Prefect when the automation fires (Jinja over the triggering event).
EVENT_PARAMETER = {
    "name": "{{ event.event }}",
    "id": "{{ event.id | string }}",
    "occurred": "{{ event.occurred | string }}",
    "payload": "{{ event.payload }}",
    "host": "{{ event.resource.name }}",  # the daemon's host (trigger.runOn: eventHost)
}


ACTION_FAILED = "prefect.automation.action.failed"


@dataclass(frozen=True)
class FailedTrigger:
    """A triggered task's run that Prefect's automation failed to create."""

    deployment_id: UUID
    event_id: UUID  # the triggering event
    idempotency_key: str  # the one the action used (Prefect's TriggeredAction.idempotency_key)
    reason: str


def retryable_failure(event: Any) -> FailedTrigger | None:
    """The failed run of a ``prefect.automation.action.failed`` event when it is a bgtasks
    trigger's run-deployment whose create the server refused as busy (5xx); else None.
    Other failures (the deployment is gone, bad parameters) would fail again."""
    if event.event != ACTION_FAILED:
        return None
    name = event.resource.get("prefect.resource.name") or ""
    payload = event.payload or {}
    status = payload.get("status_code")
    if not name.startswith(stored.AUTOMATION_PREFIX) or payload.get("action_type") != "run-deployment":
        return None
    if not isinstance(status, int) or status < 500:
        return None
    triggering = [r.id for r in event.related if r.role == "triggering-event"]
    try:
        deployment_id = UUID(name.removeprefix(stored.AUTOMATION_PREFIX))
        event_id = UUID(triggering[0].removeprefix("prefect.event."))
        automation_id = event.resource.id.removeprefix("prefect.automation.")
        key = trigger_action_key(automation_id, int(payload["action_index"]), str(payload["invocation"]))
    except (IndexError, KeyError, TypeError, ValueError):
        return None
    return FailedTrigger(deployment_id, event_id, key, str(payload.get("reason") or f"HTTP {status}"))


def event_parameters(event: Any) -> dict[str, Any]:
    """The run's parameters the automation renders from its triggering ``event``, rendered
    by Prefect's own code (so a retried run gets exactly what the action would have sent)."""
    import copy

    from prefect.utilities.schema_tools.hydration import HydrationContext, hydrate

    from bgtasks.prefect_seam import upgrade_v1_templates

    parameters = {"event": copy.deepcopy(EVENT_PARAMETER)}
    upgrade_v1_templates(parameters)
    return hydrate(parameters, HydrationContext(render_jinja=True, jinja_context={"event": event},
                                                raise_on_error=True))


def trigger_filter(task_id: str, trigger: TaskTrigger) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(match, match_related)`` of the automation's event trigger."""
    match: dict[str, Any] = {"prefect.resource.id": f"{stored.HOST_RESOURCE}*"}
    related: dict[str, Any] = {}
    if trigger.on.startswith("file."):
        related = {"prefect.resource.id": f"{stored.RULE_RESOURCE}{task_id}", "prefect.resource.role": "rule"}
    if trigger.network_type in ("unmetered", "metered"):
        match[stored.NETWORK_METERED_LABEL] = "true" if trigger.network_type == "metered" else "false"
    elif trigger.network_type != "any":
        match[stored.NETWORK_KIND_LABEL] = trigger.network_type
    return match, related


def automation_for(deployment_id: UUID, trigger: TaskTrigger, enabled: bool = True) -> Any:
    """The ``AutomationCore`` that runs the deployment when the trigger's event arrives."""
    from prefect.events.actions import RunDeployment
    from prefect.events.schemas.automations import AutomationCore, EventTrigger, Posture

    match, related = trigger_filter(str(deployment_id), trigger)
    return AutomationCore(
        name=stored.automation_name(deployment_id),
        description=f"bgtasks: run the task when {stored.event_name(trigger.on)} happens",
        enabled=enabled,
        trigger=EventTrigger(
            expect={stored.event_name(trigger.on)},
            match=match,
            match_related=related,
            posture=Posture.Reactive,
            threshold=1,
            within=timedelta(0),
        ),
        actions=[RunDeployment(source="selected", deployment_id=deployment_id,
                               parameters={"event": dict(EVENT_PARAMETER)})],
        owner_resource=f"prefect.deployment.{deployment_id}",
    )
