"""The cleanup handler: delete finished flow runs older than N days.

Prefect keeps every flow run and result file forever.
``data``: ``olderThanDays`` (default 7), ``states`` (default ``["COMPLETED"]``;
add ``"FAILED"``, ``"CANCELLED"``, ``"CRASHED"`` to clear those too).

Returns ``{"deleted": n, "olderThanDays": d}``.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    FlowRunFilter,
    FlowRunFilterEndTime,
    FlowRunFilterState,
    FlowRunFilterStateType,
)
from prefect.client.schemas.objects import StateType
from prefect.runtime import flow_run

from bgtasks.errors import FieldProblem
from flows._handler import background_handler

_TERMINAL = {"COMPLETED", "FAILED", "CANCELLED", "CRASHED"}


def old_runs_filter(older_than_days: float, states: list[str]) -> FlowRunFilter:
    """Finished runs of the given state types that ended before the cut-off."""
    unknown = sorted(set(states) - _TERMINAL)
    if unknown:
        raise FieldProblem("data.states", f"{unknown} are not finished states {sorted(_TERMINAL)}")
    cutoff = datetime.now(UTC) - timedelta(days=older_than_days)
    return FlowRunFilter(
        end_time=FlowRunFilterEndTime(before_=cutoff),
        state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType(s) for s in states])),
    )


@background_handler("cleanup")
def cleanup(data: Any = None) -> dict[str, Any]:
    """Delete finished flow runs older than N days (default 7)."""
    opts = data if isinstance(data, dict) else {}
    days = float(opts.get("olderThanDays", 7))
    if days < 0:
        raise FieldProblem("data.olderThanDays", "must not be negative")
    flt = old_runs_filter(days, list(opts.get("states", ["COMPLETED"])))
    me = flow_run.id
    deleted = 0
    with get_client(sync_client=True) as client:
        while True:
            runs = [r for r in client.read_flow_runs(flow_run_filter=flt, limit=200) if str(r.id) != me]
            if not runs:
                break
            for run in runs:
                client.delete_flow_run(run.id)
                deleted += 1
    print(f"cleanup: deleted {deleted} runs older than {days:g} days")
    return {"deleted": deleted, "olderThanDays": days}
