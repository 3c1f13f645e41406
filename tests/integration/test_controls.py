"""The Prefect UI's creation form (the create-background-task control flow) covers every
CreateTaskOptions field, triggers and device targets included."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from bgtasks.models import TaskSchedule, TaskTrigger, TaskType

pytestmark = pytest.mark.integration


def test_the_form_offers_trigger_and_target() -> None:
    from prefect.utilities.callables import parameter_schema

    from flows.controls import create_background_task

    schema = parameter_schema(create_background_task.fn).model_dump()
    assert {"trigger", "target", "schedule", "constraints", "retry_policy"} <= set(schema["properties"])


async def test_a_triggered_task_created_from_the_form_has_its_automation(
    manager: Any, client: Any, tmp_path: Path
) -> None:
    from flows.controls import create_background_task

    created = await create_background_task(
        name="form-triggered", handler="demo", schedule=TaskSchedule(type=TaskType.TRIGGERED),
        trigger=TaskTrigger.model_validate({"on": "file.arrived", "path": str(tmp_path)}))
    try:
        task = await manager.get(created["id"])
        assert task.trigger is not None and task.trigger.on == "file.arrived"
        automations = await client.read_automations_by_name(f"bgtasks-trigger:{task.id}")
        assert len(automations) == 1 and automations[0].enabled
    finally:
        await manager.delete(created["id"])
