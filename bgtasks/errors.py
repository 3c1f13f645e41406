"""The task manager's errors, by what the caller should do (no Prefect import here)::

    TaskError
    ├── InvalidTask      bad input: fix the named field (nothing was stored)
    ├── TaskNotFound     no such task
    └── TaskConflict     the task's state forbids it (paused, cancelled)

and :class:`FieldProblem`, what a validator raises: the field it is about, as data.
"""

from __future__ import annotations


class FieldProblem(ValueError):
    """A value refused by a check that spans fields (or sits outside pydantic): ``field`` is
    the JSON path it names, ``reason`` why. Pydantic keeps it in the error's context, so
    :func:`bgtasks.models.errors_from` reads the field from here, never from the text."""

    def __init__(self, field: str, reason: str) -> None:
        self.field = field
        self.reason = reason
        super().__init__(f"{field}: {reason}")


class TaskError(Exception):
    """Base of the task manager's errors."""


class InvalidTask(TaskError):
    """The input is invalid; ``errors`` names each field and reason. Nothing was stored."""

    def __init__(self, errors: list[dict[str, str]]) -> None:
        self.errors = errors
        super().__init__("; ".join(f"{e['field']}: {e['message']}" for e in errors))


class TaskNotFound(TaskError):
    def __init__(self, task_id: str) -> None:
        self.task_id = task_id
        super().__init__(f"no task with id {task_id!r} (list them with `bgtasks task ls`)")


class TaskConflict(TaskError):
    """The task exists but its state does not allow the operation."""
