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
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any
from uuid import UUID

from bgtasks.models import TaskTrigger

HOST_RESOURCE = "bgtasks.host."
RULE_RESOURCE = "bgtasks.rule."

#: Rendered by Prefect when the automation fires (Jinja over the triggering event).
EVENT_PARAMETER = {
    "name": "{{ event.event }}",
    "id": "{{ event.id | string }}",
    "occurred": "{{ event.occurred | string }}",
    "payload": "{{ event.payload }}",
}


def automation_name(deployment_id: UUID | str) -> str:
    return f"bgtasks-trigger:{deployment_id}"


def trigger_filter(task_id: str, trigger: TaskTrigger) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(match, match_related)`` of the automation's event trigger."""
    match: dict[str, Any] = {"prefect.resource.id": f"{HOST_RESOURCE}*"}
    related: dict[str, Any] = {}
    if trigger.on.startswith("file."):
        related = {"prefect.resource.id": f"{RULE_RESOURCE}{task_id}", "prefect.resource.role": "rule"}
    if trigger.network_type in ("unmetered", "metered"):
        match["bgtasks.network.metered"] = "true" if trigger.network_type == "metered" else "false"
    elif trigger.network_type != "any":
        match["bgtasks.network.kind"] = trigger.network_type
    return match, related


def automation_for(deployment_id: UUID, trigger: TaskTrigger, enabled: bool = True) -> Any:
    """The ``AutomationCore`` that runs the deployment when the trigger's event arrives."""
    from prefect.events.actions import RunDeployment
    from prefect.events.schemas.automations import AutomationCore, EventTrigger, Posture

    match, related = trigger_filter(str(deployment_id), trigger)
    return AutomationCore(
        name=automation_name(deployment_id),
        description=f"bgtasks: run the task when bgtasks.{trigger.on} happens",
        enabled=enabled,
        trigger=EventTrigger(
            expect={f"bgtasks.{trigger.on}"},
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
