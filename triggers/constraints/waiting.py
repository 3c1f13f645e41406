"""Runs that wait for their constraints: the ``AwaitingConstraints`` state and its release.

A run whose constraints fail on the worker's host is not started: the worker
sets it to a *Scheduled* state named ``AwaitingConstraints`` whose message says
which constraints fail and what was observed, and whose scheduled time is the
run's due time plus :data:`FAR` (a century: no worker picks it up). Nothing ran,
so no retry is used. It is released by setting it Scheduled again at its
original due time (the scheduled time minus :data:`FAR`), which keeps released
runs in their queues' order (priority first, then due time). The trigger
daemon releases waiting runs the moment a change makes their constraints hold;
the worker re-checks them slowly as well, for a host without a daemon.

With workers on several hosts, a run is released *for* the host where its constraints
hold (the release's message names it, :func:`release_message`). For
:data:`RELEASE_HOLD_S` the workers of other hosts, where they fail, leave it Scheduled for
that host's workers instead of setting it waiting again; after that, any worker treats it
as usual (the releasing host may have gone).

Pure helpers over plain JSON, shared by the worker (Prefect client) and the
daemon (plain HTTP).
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any

from bgtasks.models import TaskConstraints
from triggers.constraints.evaluate import unmet
from triggers.constraints.host import HostSnapshot
from bgtasks.stored import AWAITING, constraints_of, queue_rank
from bgtasks.stored import due_of as _tagged_due

#: Added to a waiting run's due time: far enough that no worker picks it up.
FAR = timedelta(days=36525)
#: Seconds a released run is left to the workers of the host it was released for.
RELEASE_HOLD_S = 60.0
_RELEASED = re.compile(r"^Constraints hold on (.+): released by the (?:worker|daemon)$")


def release_message(host: str, by: str) -> str:
    """The released state's message: where the constraints hold, and who released it (``by``:
    worker or daemon)."""
    return f"Constraints hold on {host}: released by the {by}"


def released_for(message: str | None) -> str | None:
    """The host a run was released for, from its state's message (None: not a release)."""
    m = _RELEASED.match(message or "")
    return m.group(1) if m else None


def left_to_another_host(message: str | None, timestamp: datetime | None, host: str,
                         now: datetime | None = None) -> str | None:
    """The host whose workers should take a run in this state, when it is not ``host`` and the
    release is less than :data:`RELEASE_HOLD_S` old; else None."""
    other = released_for(message)
    if other is None or other == host or timestamp is None:
        return None
    age = ((now or datetime.now(UTC)) - timestamp).total_seconds()
    return other if age < RELEASE_HOLD_S else None


def due_of(tags: list[str] | None, fallback: datetime) -> datetime:
    """When a run was due: its due tag (set when it first waited), else ``fallback``."""
    return _tagged_due(tags) or fallback


def deadline_of(cons: TaskConstraints, due: datetime) -> datetime | None:
    return due + timedelta(milliseconds=cons.constraint_deadline) if cons.constraint_deadline is not None else None


def waiting_until(due: datetime, cons: TaskConstraints | None = None) -> datetime:
    """The scheduled time of a waiting run: its deadline (a worker picks it up then and
    applies ``onDeadline``), or a century away."""
    deadline = deadline_of(cons, due) if cons is not None else None
    return deadline if deadline is not None else due + FAR


def original_due(waiting_scheduled_time: datetime, tags: list[str] | None = None) -> datetime:
    """The due time a waiting run had before it started to wait."""
    due = waiting_scheduled_time - FAR
    now = datetime.now(UTC)
    fallback = due if abs(due - now) < FAR / 2 else now
    return due_of(tags, fallback)


def is_waiting(state_name: str | None) -> bool:
    return state_name == AWAITING


def release_state_json(waiting_scheduled_time: datetime, tags: list[str] | None, message: str) -> dict[str, Any]:
    """The ``set_state`` body that releases a waiting run at its original due time."""
    due = original_due(waiting_scheduled_time, tags)
    return {"state": {"type": "SCHEDULED", "name": "Scheduled", "message": message,
                      "state_details": {"scheduled_time": due.isoformat()}},
            "force": True}


def release_order(queue: str | None, scheduled_time: Any) -> tuple[int, str]:
    """Sort key: high-priority queues first, then the earliest due. Releasing in this order
    keeps priority even when a worker polls between two releases."""
    return queue_rank(queue), str(scheduled_time)


def waiting_filter(pool: str, limit: int = 200, offset: int = 0) -> dict[str, Any]:
    """``POST /flow_runs/filter`` body: the runs of ``pool`` waiting for constraints."""
    return {"flow_runs": {"state": {"type": {"any_": ["SCHEDULED"]}, "name": {"any_": [AWAITING]}}},
            "work_pools": {"name": {"any_": [pool]}}, "sort": "EXPECTED_START_TIME_ASC",
            "limit": limit, "offset": offset}


def releasable(runs: list[dict[str, Any]], snapshot: HostSnapshot, message: str) -> list[tuple[str, dict[str, Any]]]:
    """The waiting runs (Prefect's JSON, from :func:`waiting_filter`) whose constraints hold in
    ``snapshot``, in release order: ``(run id, set_state body)`` each. The daemon (plain HTTP)
    and the worker (Prefect's client) release through this one function."""
    out = []
    for run in sorted(runs, key=lambda r: release_order(r.get("work_queue_name"),
                                                        r["state"]["state_details"]["scheduled_time"])):
        cons = constraints_of(run.get("parameters"))
        if cons is not None and unmet(cons, snapshot):
            continue
        scheduled = datetime.fromisoformat(run["state"]["state_details"]["scheduled_time"])
        out.append((run["id"], release_state_json(scheduled, run.get("tags"), message)))
    return out
