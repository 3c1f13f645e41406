"""The Prefect UI's creation form (the create-background-task control flow) covers every
CreateTaskOptions field, triggers and device targets included."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest


pytestmark = pytest.mark.integration


def test_the_form_offers_trigger_and_target() -> None:
    from prefect.utilities.callables import parameter_schema

    from flows.controls import create_background_task

    schema = parameter_schema(create_background_task.fn).model_dump()
    assert {"trigger", "target", "schedule", "constraints", "retry_policy"} <= set(schema["properties"])


def test_no_field_of_the_form_is_optional_null() -> None:
    """The Prefect UI shows an ``X | None`` field with a "Property is type None" switch: every
    field of the form has a plain default instead (only the name is required)."""
    from prefect.utilities.callables import parameter_schema

    from flows.controls import create_background_task

    schema = parameter_schema(create_background_task.fn).model_dump()
    nullable: list[str] = []

    def walk(node: Any, path: str) -> None:
        if isinstance(node, dict):
            if node.get("type") == "null" or any(isinstance(a, dict) and a.get("type") == "null"
                                                 for a in node.get("anyOf", [])):
                nullable.append(path)
            for key, value in node.items():
                walk(value, f"{path}/{key}")
        elif isinstance(node, list):
            for i, value in enumerate(node):
                walk(value, f"{path}[{i}]")

    walk(schema, "")
    assert nullable == []
    assert schema["required"] == ["name"]
    for name, definition in schema["definitions"].items():
        assert not definition.get("required"), name  # every nested field has its default


async def test_a_triggered_task_created_from_the_form_has_its_automation(
    manager: Any, client: Any, tmp_path: Path
) -> None:
    from flows.controls import create_background_task

    from flows.forms import ScheduleForm, TriggerForm

    created = await create_background_task(
        name="form-triggered", handler="demo", schedule=ScheduleForm(type="triggered"),
        trigger=TriggerForm(on="file.arrived", path=str(tmp_path)))
    try:
        task = await manager.get(created["id"])
        assert task.trigger is not None and task.trigger.on == "file.arrived"
        automations = await client.read_automations_by_name(f"bgtasks-trigger:{task.id}")
        assert len(automations) == 1 and automations[0].enabled
    finally:
        await manager.delete(created["id"])
