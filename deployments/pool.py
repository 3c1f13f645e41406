"""The work pool ``background-tasks`` and its priority queues, created idempotently.

Priority is the queue: ``high`` (Prefect priority 1), ``normal`` (2), ``low`` (3).
A worker drains a higher queue before a lower one, FIFO inside each. The pool's own ``default`` queue is pushed behind them.

The pool's job template runs each flow run with ``python -m prefect.engine``,
which skips the workspace supervisor that imports Prefect a second time (half the
start-up cost of a run). ``python`` is the one on the worker's PATH, so a worker
started from the bgtasks environment runs its flows there.
"""

from __future__ import annotations

from typing import Any

from prefect.client.orchestration import PrefectClient
from prefect.client.schemas.actions import WorkPoolCreate
from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound

from bgtasks.models import TaskPriority

ENGINE_COMMAND = "python -m prefect.engine"


def process_job_template() -> dict[str, Any]:
    """Prefect's process worker template with the engine command as the default.

    The warm worker takes the same job variables (env, working_dir...); it
    ignores ``command`` since it forks instead of starting one.
    """
    from prefect.workers.process import ProcessWorker

    template = ProcessWorker.get_default_base_job_template()
    template["variables"]["properties"]["command"]["default"] = ENGINE_COMMAND
    return template


async def ensure_pool(client: PrefectClient, pool: str, pool_type: str = "bgtasks-warm") -> None:
    """Create the pool and its three priority queues if missing; fix their priorities.

    An existing pool keeps its type: Prefect cannot change it, and both worker
    types run the same job template (a mismatch only makes Prefect log a warning).
    """
    try:
        await client.read_work_pool(pool)
    except ObjectNotFound:
        template = process_job_template()
        try:
            await client.create_work_pool(
                WorkPoolCreate(
                    name=pool,
                    type=pool_type,
                    description="bgtasks: background tasks by priority (high, normal, low)",
                    base_job_template=template,
                )
            )
        except ObjectAlreadyExists:
            pass
    queues = {q.name: q for q in await client.read_work_queues(work_pool_name=pool)}
    for prio in TaskPriority:
        queue = queues.get(prio.value)
        if queue is None:
            try:
                await client.create_work_queue(
                    name=prio.value,
                    work_pool_name=pool,
                    priority=prio.rank,
                    description=f"bgtasks {prio.value}-priority tasks",
                )
            except ObjectAlreadyExists:
                pass
        elif queue.priority != prio.rank:
            await client.update_work_queue(queue.id, priority=prio.rank)
