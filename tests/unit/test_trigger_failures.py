"""Which failed trigger actions the worker re-runs (deployments.triggers.retryable_failure)."""

from __future__ import annotations

from typing import Any
from uuid import uuid4

import pytest
from prefect.events.schemas.events import Event

from bgtasks.stored import automation_name
from deployments.triggers import retryable_failure

DEP, AUTOMATION, TRIGGERING, INVOCATION = uuid4(), uuid4(), uuid4(), uuid4()


def failed(status: Any = 503, name: str | None = None, action_type: str = "run-deployment",
           event: str = "prefect.automation.action.failed", related: bool = True) -> Event:
    payload = {"action_index": 0, "action_type": action_type, "invocation": str(INVOCATION), "reason": "busy"}
    if status is not None:
        payload["status_code"] = status
    return Event(
        event=event,
        resource={"prefect.resource.id": f"prefect.automation.{AUTOMATION}",
                  "prefect.resource.name": name or automation_name(DEP)},
        related=[{"prefect.resource.id": f"prefect.event.{TRIGGERING}", "prefect.resource.role": "triggering-event"}]
        if related else [],
        payload=payload,
    )


def test_a_busy_server_is_retried_with_the_actions_own_key() -> None:
    failure = retryable_failure(failed(503))
    assert failure is not None
    assert (failure.deployment_id, failure.event_id) == (DEP, TRIGGERING)
    assert failure.idempotency_key == f"automation {AUTOMATION}, action 0, invocation {INVOCATION}"
    assert retryable_failure(failed(500)) is not None


@pytest.mark.parametrize("event", [
    failed(404), failed(409), failed(None), failed("503"),
    failed(name="someone-elses-automation"), failed(action_type="pause-deployment"),
    failed(event="prefect.automation.action.executed"), failed(related=False),
    failed(name="bgtasks-trigger:not-a-uuid"),
], ids=["not-found", "invalid", "no-status", "status-not-int", "not-bgtasks", "other-action",
        "not-a-failure", "no-triggering-event", "bad-name"])
def test_failures_that_would_fail_again_or_are_not_ours_are_left_alone(event: Event) -> None:
    assert retryable_failure(event) is None


def test_the_key_is_the_one_prefect_gives_the_action() -> None:
    """Prefect's own TriggeredAction.idempotency_key for that automation, index and invocation."""
    from prefect.server.events.actions import RunDeployment
    from prefect.server.events.schemas.automations import Automation, EventTrigger, TriggeredAction

    automation = Automation(id=AUTOMATION, name=automation_name(DEP),
                            trigger=EventTrigger(expect={"bgtasks.power.battery-low"}, posture="Reactive",
                                                 threshold=1),
                            actions=[RunDeployment(source="selected", deployment_id=DEP)])
    action = TriggeredAction.model_construct(automation=automation, action=automation.actions[0], action_index=0,
                                             id=INVOCATION)
    failure = retryable_failure(failed(503))
    assert failure is not None and failure.idempotency_key == action.idempotency_key()
