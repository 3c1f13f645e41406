"""What bgtasks keeps in Prefect, defined once: the task definition in each deployment's
parameters, the tags, the waiting state's name, event names and resources, idempotency keys.

Every room writes and reads these through here, so a name changes in one place and a
stored definition is read one way. No Prefect import: the trigger daemon (plain HTTP)
reads them too.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from uuid import uuid4

from pydantic import ValidationError

from bgtasks.models import CreateTaskOptions, TaskConstraints, TaskPriority

# -- The task definition: deployment (and flow run) parameters --------------------------
#: The definition without its data (camelCase JSON, as the REST API takes it).
TASK_PARAM = "task"
#: The task's data, a parameter of its own so that Prefect's UI shows it as the handler's input.
DATA_PARAM = "data"


def parameters_for(opts: CreateTaskOptions) -> dict[str, Any]:
    """The parameters a task's deployment stores."""
    spec = opts.to_json_dict()
    spec.pop("data", None)
    return {DATA_PARAM: opts.data, TASK_PARAM: spec}


def decode(task: dict[str, Any] | None, data: Any = None) -> CreateTaskOptions | None:
    """The stored definition (None when there is none). Validated without the clock checks
    meant for new input (a one-time task's startTime is in the past once it has run);
    raises pydantic's ValidationError when it is not a definition."""
    if not isinstance(task, dict) or not task:
        return None
    return CreateTaskOptions.model_validate({**task, "data": data}, context={"stored": True})


def read(parameters: dict[str, Any] | None) -> CreateTaskOptions | None:
    """The definition in a deployment's or flow run's parameters (strict, as :func:`decode`)."""
    parameters = parameters or {}
    return decode(parameters.get(TASK_PARAM), parameters.get(DATA_PARAM))


def peek(parameters: dict[str, Any] | None) -> CreateTaskOptions | None:
    """The definition, or None when there is none or it does not validate (edited by hand in
    Prefect): for the worker's and daemon's checks, which must not fail on one bad run."""
    try:
        return read(parameters)
    except ValidationError:
        return None


def constraints_of(parameters: dict[str, Any] | None) -> TaskConstraints | None:
    """The constraints a run must meet (None when none are required)."""
    opts = peek(parameters)
    cons = opts.constraints if opts is not None else None
    return cons if cons is not None and cons.any() else None


# -- Tags ---------------------------------------------------------------------------------
#: Every task's deployment (and so its runs).
TAG = "bgtasks"
#: A cancelled task (its deployment stays, paused, for its history).
CANCELLED_TAG = "bgtasks:cancelled"
#: The Prefect UI's buttons (control flows), which are not tasks.
CONTROL_TAG = "bgtasks-control"
#: A run the catch-up policy created or kept for missed occurrences.
CATCH_UP_TAG = "bgtasks:catch-up"
#: A run that waited for its constraints carries the time it was due (its deadline counts from it).
DUE_TAG = "bgtasks:due:"
#: A run that started at its constraint deadline with its constraints unmet.
OVERRIDDEN_TAG = "bgtasks:constraints-unmet-at-deadline"


def tags_for(opts: CreateTaskOptions, handler: str) -> list[str]:
    """A task deployment's tags: what the Prefect UI filters on."""
    return [TAG, f"priority:{opts.priority.value}", f"type:{opts.schedule.type.value}", f"handler:{handler}"]


def tag_value(tags: list[str] | None, key: str) -> str | None:
    """The value of a ``key:value`` tag (the first), if any."""
    for tag in tags or []:
        if tag.startswith(key + ":"):
            return tag.split(":", 1)[1]
    return None


def due_tag(due: datetime) -> str:
    return DUE_TAG + due.astimezone(UTC).isoformat()


def due_of(tags: list[str] | None) -> datetime | None:
    """The time in a run's due tag, if it has a readable one."""
    for tag in tags or []:
        if tag.startswith(DUE_TAG):
            try:
                return datetime.fromisoformat(tag[len(DUE_TAG):])
            except ValueError:
                return None
    return None


def without_due(tags: list[str] | None) -> list[str]:
    return [t for t in tags or [] if not t.startswith(DUE_TAG)]


# -- States ----------------------------------------------------------------------------------
#: The Scheduled state of a run waiting for its constraints (see triggers.constraints.waiting).
AWAITING = "AwaitingConstraints"


def queue_rank(queue: str | None) -> int:
    """A work queue's priority rank (high 1, normal 2, low 3; another queue after them)."""
    try:
        return TaskPriority(queue or "").rank
    except ValueError:
        return len(TaskPriority) + 1


# -- Events ----------------------------------------------------------------------------------
#: The trigger daemon's events are ``bgtasks.<sensor>.<change>``.
EVENT_PREFIX = "bgtasks"
#: An event's resource: the host it happened on (``bgtasks.host.<hostname>``).
HOST_RESOURCE = "bgtasks.host."
#: Related resources: a file rule, a network interface, a path.
RULE_RESOURCE = "bgtasks.rule."
INTERFACE_RESOURCE = "bgtasks.interface."
PATH_RESOURCE = "bgtasks.path."
#: Labels of a network event's resource, which network triggers match on.
NETWORK_KIND_LABEL = "bgtasks.network.kind"
NETWORK_METERED_LABEL = "bgtasks.network.metered"


def event_name(on: str) -> str:
    """The event a trigger's ``on`` names (``network.connected`` -> ``bgtasks.network.connected``)."""
    return f"{EVENT_PREFIX}.{on}"


#: A trigger's automation is named after its deployment.
AUTOMATION_PREFIX = "bgtasks-trigger:"


def automation_name(deployment_id: Any) -> str:
    return f"{AUTOMATION_PREFIX}{deployment_id}"


# -- Idempotency keys of the runs bgtasks creates ----------------------------------------
def one_time_key(deployment_id: Any) -> str:
    """A one-time task's single run: creating it twice makes one run."""
    return f"bgtasks-one-time-{deployment_id}"


def run_now_key() -> str:
    """Each run-now request is a run of its own."""
    return f"bgtasks-run-now:{uuid4()}"


def catch_up_key(deployment_id: Any, at: datetime) -> str:
    """One catch-up run per missed occurrence, however often the policy runs."""
    return f"{CATCH_UP_TAG}:{deployment_id}:{at.isoformat()}"
