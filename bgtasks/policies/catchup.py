"""Missed runs of periodic tasks: the catch-up (misfire) policy.

A periodic run *misfired* when it is still waiting to start longer than the
misfire grace (``BGTASKS_WORKER_MISFIRE_GRACE_S``, 60 s) after its time: bgtasks
(or the machine) was down, or every worker slot was taken that long. Without a
policy, Prefect would start every such run at once when the worker is back, a
burst of stale work. Each periodic task says what it wants
(``schedule.catchUp``), as Quartz's misfire instructions and cron's anacron do:

- ``skip`` (default): drop the missed runs; the next run is the next one due;
- ``run-once``: run the latest missed one now, drop the others;
- ``run-all``: run every missed one, oldest first, including the occurrences
  Prefect's scheduler never created while its server was down (at most
  ``MAX_RUN_ALL`` per task; beyond, the oldest are dropped and the worker log
  says so).

Dropped runs are deleted, as Prefect deletes the scheduled runs of a paused
deployment (each is read again first: one another worker has just taken is left
alone), and the worker logs one line per task with the counts. The warm worker applies
the policy (:class:`CatchUp`) when it starts (with the look for occurrences nobody
created; nothing is polled before) and before it polls, at most every
``CATCH_UP_EVERY_S``; two workers doing it at once agree (deletes of a gone run
are ignored; created runs carry an idempotency key per occurrence).

:func:`plan` is pure; :func:`apply` talks to the Prefect API.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import anyio

from bgtasks import stored
from bgtasks.policies.base import Policy, Worker

#: Runs ``run-all`` starts per task and catch-up at most.
MAX_RUN_ALL = 1000
#: Least time between two catch-up passes of one worker.
CATCH_UP_EVERY_S = 10.0
#: Pages of 1,000 schedule dates read when looking for occurrences nobody scheduled.
_MAX_PAGES = 100
#: Tag of a run catch-up chose to run: one it created for an occurrence nobody had
#: scheduled, or the missed run ``run-once`` kept. Later passes leave such runs alone.
CATCH_UP_TAG = stored.CATCH_UP_TAG


@dataclass
class Plan:
    delete: list[str] = field(default_factory=list)  # run ids
    create: list[datetime] = field(default_factory=list)  # occurrences to run
    keep: list[str] = field(default_factory=list)  # missed runs left to run (ids, oldest first)

    @property
    def kept(self) -> int:
        return len(self.keep)


def plan(policy: str | None, missed: list[tuple[str, datetime]], unscheduled: list[datetime] = (),  # type: ignore[assignment]
         catching_up: bool = False) -> Plan:
    """What to do with one task's missed runs.

    ``missed``: its runs waiting past the grace, ``(id, scheduled time)``;
    ``unscheduled``: occurrences in the missed span that have no run at all;
    ``catching_up``: a run an earlier pass chose (tagged ``CATCH_UP_TAG``) is still waiting
    (every slot was busy): for ``run-once`` that is the one run, the newer missed ones go.
    """
    missed = sorted(missed, key=lambda m: m[1])
    unscheduled = sorted(set(unscheduled) - {t for _, t in missed})
    policy = policy or "skip"
    if policy == "skip" or (policy == "run-once" and catching_up):
        return Plan(delete=[rid for rid, _ in missed])
    if policy == "run-once":
        latest_existing = missed[-1][1] if missed else None
        latest_gap = unscheduled[-1] if unscheduled else None
        if latest_gap is not None and (latest_existing is None or latest_gap > latest_existing):
            return Plan(delete=[rid for rid, _ in missed], create=[latest_gap])
        return Plan(delete=[rid for rid, _ in missed[:-1]], keep=[rid for rid, _ in missed[-1:]])
    # run-all: every occurrence, the most recent MAX_RUN_ALL.
    everything = sorted([(t, rid) for rid, t in missed] + [(t, None) for t in unscheduled])
    dropped, runs = everything[:-MAX_RUN_ALL], everything[-MAX_RUN_ALL:]
    return Plan(delete=[rid for _, rid in dropped if rid is not None],
                create=[t for t, rid in runs if rid is None],
                keep=[rid for _, rid in runs if rid is not None])


def policy_of(parameters: dict[str, Any] | None) -> str:
    """The catch-up policy stored with a run or a deployment (``task.schedule.catchUp``)."""
    opts = stored.peek(parameters)
    return (opts.schedule.catch_up if opts is not None else None) or "skip"


async def _missed_runs(client: Any, pool: str, before: datetime) -> tuple[dict[Any, list[Any]], set[Any]]:
    """The pool's periodic runs still waiting (Scheduled or Late) from before ``before``, by
    deployment, and the deployments with a catch-up run among them (left alone)."""
    from prefect.client.schemas.filters import (
        FlowRunFilter,
        FlowRunFilterExpectedStartTime,
        FlowRunFilterState,
        FlowRunFilterStateName,
        FlowRunFilterTags,
        WorkPoolFilter,
        WorkPoolFilterName,
    )
    from prefect.client.schemas.sorting import FlowRunSort

    flt = FlowRunFilter(
        state=FlowRunFilterState(name=FlowRunFilterStateName(any_=["Scheduled", "Late"])),
        tags=FlowRunFilterTags(all_=[stored.TAG, "type:periodic"]),
        expected_start_time=FlowRunFilterExpectedStartTime(before_=before),
    )
    by_dep: dict[Any, list[Any]] = {}
    catching_up: set[Any] = set()
    for run in await _read_all(client, flt, FlowRunSort.EXPECTED_START_TIME_ASC,
                               work_pool_filter=WorkPoolFilter(name=WorkPoolFilterName(any_=[pool]))):
        if run.deployment_id is None:
            continue
        if CATCH_UP_TAG in (run.tags or []):
            catching_up.add(run.deployment_id)
        else:
            by_dep.setdefault(run.deployment_id, []).append(run)
    return by_dep, catching_up


async def _read_all(client: Any, flt: Any, sort: Any, cap: int = 100_000, **kw: Any) -> list[Any]:
    """Every flow run the filter matches, a page (the API's most, 200) at a time."""
    out: list[Any] = []
    while len(out) < cap:
        page = await client.read_flow_runs(flow_run_filter=flt, sort=sort, limit=200, offset=len(out), **kw)
        out.extend(page)
        if len(page) < 200:
            break
    return out


async def _unscheduled(client: Any, deployment: Any, cutoff: datetime) -> list[datetime]:
    """Occurrences of the deployment's schedules after its last run that started (or its
    creation) up to ``cutoff`` that have no run: the server was down when they were due."""
    from prefect.client.schemas.filters import (
        FlowRunFilter,
        FlowRunFilterDeploymentId,
        FlowRunFilterExpectedStartTime,
        FlowRunFilterStartTime,
    )
    from prefect.client.schemas.sorting import FlowRunSort
    from prefect.server.schemas import schedules as server_schedules

    started = await client.read_flow_runs(
        flow_run_filter=FlowRunFilter(deployment_id=FlowRunFilterDeploymentId(any_=[deployment.id]),
                                      start_time=FlowRunFilterStartTime(is_null_=False)),
        sort=FlowRunSort.EXPECTED_START_TIME_DESC, limit=1)
    since = started[0].expected_start_time if started else deployment.created
    if since is None:
        return []
    existing = await _read_all(client, FlowRunFilter(
        deployment_id=FlowRunFilterDeploymentId(any_=[deployment.id]),
        expected_start_time=FlowRunFilterExpectedStartTime(after_=since, before_=cutoff)),
        FlowRunSort.EXPECTED_START_TIME_ASC)
    have = {r.expected_start_time for r in existing if r.expected_start_time is not None}
    out: list[datetime] = []
    for ds in deployment.schedules or []:
        if not ds.active:
            continue
        kind = type(ds.schedule).__name__
        server_cls = getattr(server_schedules, kind, None)
        if server_cls is None:
            continue
        sched = server_cls(**ds.schedule.model_dump())
        start = since + timedelta(microseconds=1)
        if hasattr(sched, "interval"):  # no need to walk a long outage from its start
            start = max(start, cutoff - sched.interval * (MAX_RUN_ALL + 1))
        dates: list[datetime] = []
        for _ in range(_MAX_PAGES):  # Prefect looks at 1,000 candidates a call
            page = [d for d in await sched.get_dates(n=1000, start=start, end=cutoff) if d >= start]
            if not page:
                break
            dates = (dates + page)[-(MAX_RUN_ALL + 1):]
            start = page[-1] + timedelta(microseconds=1)
        out.extend(d for d in dates if d not in have)
    return out


async def apply(client: Any, pool: str, grace_s: float, now: datetime, logger: logging.Logger,
                look_for_unscheduled: bool = False) -> dict[str, int]:
    """Apply every periodic task's policy to its missed runs; counts of what was done.

    ``look_for_unscheduled``: also find occurrences nobody scheduled (at start-up:
    one query per run-once/run-all task).
    """
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterTags
    from prefect.exceptions import ObjectNotFound
    from prefect.states import Scheduled

    from deployments.query import read_all_deployments

    cutoff = now - timedelta(seconds=grace_s)
    missed, catching_up = await _missed_runs(client, pool, cutoff)
    deployments: dict[Any, Any] = {}
    if look_for_unscheduled:
        for dep in await read_all_deployments(
                client, DeploymentFilter(tags=DeploymentFilterTags(all_=[stored.TAG, "type:periodic"]))):
            if not dep.paused and policy_of(dep.parameters) != "skip":
                deployments[dep.id] = dep
    totals = {"deleted": 0, "created": 0, "kept": 0}
    for dep_id in set(missed) | set(deployments):
        runs = missed.get(dep_id, [])
        policy = policy_of(runs[0].parameters if runs else deployments[dep_id].parameters)
        try:
            gap = await _unscheduled(client, deployments[dep_id], cutoff) if dep_id in deployments else []
        except Exception:  # noqa: BLE001 - one task's schedule must not stop the others
            logger.warning("Could not list the missed occurrences of task %s", dep_id, exc_info=True)
            gap = []
        p = plan(policy, [(str(r.id), r.expected_start_time) for r in runs], gap, dep_id in catching_up)
        for rid in p.delete:
            try:
                # Read again just before: a run another worker has just taken is left alone.
                current = await client.read_flow_run(rid)
                if current.state is not None and current.state.name in ("Scheduled", "Late"):
                    await client.delete_flow_run(rid)
            except ObjectNotFound:
                pass  # another worker got there first
        if policy == "run-once":
            for run in (r for r in runs if str(r.id) in p.keep):
                # The one run: a later pass must not drop it for a newer missed one while it waits.
                await client.update_flow_run(run.id, tags=[*(run.tags or []), CATCH_UP_TAG])
        for at in p.create:
            await client.create_flow_run_from_deployment(
                dep_id, state=Scheduled(scheduled_time=at), tags=[CATCH_UP_TAG],
                idempotency_key=stored.catch_up_key(dep_id, at))
        if p.delete or p.create:
            shown = ", ".join(p.keep[:3]) + (", ..." if len(p.keep) > 3 else "")
            logger.info("Missed runs of task %s: catch-up %s: %d dropped, %d kept, %d created%s",
                        dep_id, policy, len(p.delete), p.kept, len(p.create), f" (kept {shown})" if p.keep else "")
        totals["deleted"] += len(p.delete)
        totals["created"] += len(p.create)
        totals["kept"] += p.kept
    return totals


class CatchUp(Policy):
    """:func:`apply` before the worker polls: the start-up pass first (nothing is polled before
    it: a missed run must not start meanwhile), then at most every ``CATCH_UP_EVERY_S``."""

    def __init__(self, grace_s: float) -> None:
        self.grace_s = grace_s
        self._done_at: float | None = None  # end of the last pass (monotonic)
        self._started = False  # the start-up pass (with unscheduled occurrences) is done
        self._running = False
        self._first = anyio.Lock()

    async def before_poll(self, worker: Worker) -> None:
        if not self._started:
            async with self._first:
                if not self._started:
                    await self._pass(worker)
            return
        if self._running or (self._done_at is not None and time.monotonic() - self._done_at < CATCH_UP_EVERY_S):
            return  # one pass at a time (the wake loop and Prefect's own poll loop both poll)
        await self._pass(worker)

    async def _pass(self, worker: Worker) -> None:
        self._running = True
        first = not self._started
        try:
            done = await apply(worker.client, worker.pool_name, self.grace_s, datetime.now(UTC), worker.log,
                               look_for_unscheduled=first)
            self._started = True
            if first and any(done.values()):
                worker.log.info("Catch-up at start: %s", done)
        except Exception:  # noqa: BLE001 - polling must go on; the next poll tries again
            worker.log.warning("Catch-up of missed runs failed", exc_info=True)
        finally:
            self._done_at = time.monotonic()
            self._running = False
