"""WHAT runs: the handlers, one module per handler family.

A handler is a Prefect flow built by :func:`flows._handler.background_handler`
from a plain function ``fn(data) -> JSON``. The flow applies the task's retry
policy and timeout to the function (as a Prefect task inside the flow) and
persists its return value as the run's result.

Handlers are discovered by name: the built-in ones below, plus any package that
declares an entry point in the ``bgtasks.handlers`` group (``name = module:flow``).
"""

from __future__ import annotations

import re
from importlib.metadata import entry_points

from bgtasks import stored

#: The handlers this distribution ships (also declared as entry points).
BUILTIN_HANDLERS: dict[str, str] = {
    "cleanup": "flows.cleanup:cleanup",
    "data-sync": "flows.data_sync:data_sync",
    "demo": "flows.demo:demo",
}


#: The flow of tasks that target devices (``mobile_push``): it pushes and waits for reports.
DEVICE_ENTRYPOINT = "flows.device:device_task"

#: The Prefect UI's buttons (:mod:`flows.controls`): deployment name -> flow entrypoint, as
#: ``bgtasks up`` deploys them, tagged ``CONTROL_TAG`` (they are not tasks).
CONTROL_FLOWS: dict[str, str] = {
    "create-background-task": "flows.controls:create_background_task",
    "quick-demo-task": "flows.controls:quick_demo_task",
    "execute-task-now": "flows.controls:execute_task_now",
    "simulate-failure": "flows.controls:simulate_failure",
    "clear-completed-tasks": "flows.controls:clear_completed_tasks",
}
CONTROL_TAG = stored.CONTROL_TAG


class UnknownHandler(LookupError):
    """No registered handler has this name; the message lists the ones that exist."""

    def __init__(self, wanted: str, available: list[str], field: str) -> None:
        self.field = field
        self.wanted = wanted
        self.available = available
        super().__init__(
            f"{field}: no handler named {wanted!r} (choose one with 'handler'); available: {', '.join(available) or 'none'}"
        )


def available_handlers() -> dict[str, str]:
    """Handler name -> entry point ``module:attribute``, sorted by name."""
    found = dict(BUILTIN_HANDLERS)
    for ep in entry_points(group="bgtasks.handlers"):
        found[ep.name] = ep.value
    return dict(sorted(found.items()))


def slug(name: str) -> str:
    """'Data Sync' -> 'data-sync': how a task's name is matched to a handler."""
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


def resolve_handler(task_name: str, handler: str | None) -> tuple[str, str]:
    """The handler a task runs: ``(name, entrypoint)``.

    An explicit ``handler`` must be registered. Without one, the task's name is
    matched (case and punctuation folded) against the registered names.

    Raises:
        UnknownHandler: nothing matches; the message lists what is available.
    """
    handlers = available_handlers()
    if handler is not None:
        if handler not in handlers:
            raise UnknownHandler(handler, list(handlers), "handler")
        return handler, handlers[handler]
    guess = slug(task_name)
    if guess in handlers:
        return guess, handlers[guess]
    raise UnknownHandler(task_name, list(handlers), "name")


def dotted_entrypoint(entrypoint: str) -> str:
    """'flows.demo:demo' -> 'flows.demo.demo', the module-path form Prefect imports
    without looking for flow code on disk (no pull step, no working directory)."""
    return entrypoint.replace(":", ".")
