"""The task manager: the spec's task operations, mapped onto Prefect.

A task is a deployment of its handler's flow (task id = deployment id); a run is
a flow run. Prefect is the source of truth: nothing here keeps a second copy.
The manager is handed a Prefect client and never closes it.

Errors are those of :mod:`bgtasks.errors`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from pathlib import Path
from datetime import UTC, datetime, timedelta
from collections.abc import Iterator
from typing import Any
from uuid import UUID

from prefect.client.orchestration import PrefectClient
from prefect.client.schemas.filters import (
    DeploymentFilter,
    DeploymentFilterName,
    DeploymentFilterTags,
    FlowRunFilter,
    FlowRunFilterDeploymentId,
    FlowRunFilterId,
    FlowRunFilterState,
    FlowRunFilterStateName,
    FlowRunFilterStateType,
    TaskRunFilter,
)
from prefect.client.schemas.objects import StateType
from prefect.client.schemas.sorting import FlowRunSort
from prefect.exceptions import ObjectNotFound
from prefect.states import Cancelled, Cancelling, Scheduled
from prefect.utilities.importtools import import_object
from pydantic import ValidationError

from bgtasks import stored
from bgtasks.models import (
    BackgroundTask,
    CreateTaskOptions,
    TaskPriority,
    TaskResult,
    TaskRun,
    TaskStatus,
    TaskType,
    field_errors,
)
from bgtasks.prefect_seam import single_flight_csrf
from bgtasks.errors import InvalidTask, TaskConflict, TaskError, TaskNotFound
from bgtasks.settings import Settings, panel_url
from deployments import mapping
from deployments.query import read_all_deployments
from deployments.schedules import prefect_schedules
from deployments.triggers import automation_for
from flows import DEVICE_ENTRYPOINT, UnknownHandler, dotted_entrypoint, resolve_handler, slug

#: How many future runs Prefect pre-creates when a periodic task is created/resumed.
SCHEDULE_AHEAD_RUNS = 10
#: Prefect's largest page of flow runs.
PAGE = 200


SORTS = ("priority", "next-run", "created", "name")


def _waiting_filter() -> FlowRunFilter:
    return FlowRunFilter(state=FlowRunFilterState(name=FlowRunFilterStateName(any_=[stored.AWAITING])))


def _scheduled_not_waiting() -> FlowRunFilter:
    return FlowRunFilter(state=FlowRunFilterState(
        type=FlowRunFilterStateType(any_=[StateType.SCHEDULED]), name=FlowRunFilterStateName(not_any_=[stored.AWAITING])))


def _state_filter(*types: str) -> FlowRunFilter:
    return FlowRunFilter(state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType(t) for t in types])))


class TaskManager:
    """Create, read and control tasks through one Prefect client.

    Args:
        client: an entered ``PrefectClient`` (the caller owns it).
        pool: the work pool tasks run in (``background-tasks``).
    """

    def __init__(self, client: PrefectClient, pool: str, allowed_roots: list[Path] | None = None,
                 settings: Settings | None = None) -> None:
        single_flight_csrf()  # before the client's first change request
        self.client = client
        self.pool = pool
        self._allowed_roots = allowed_roots
        self._settings = settings

    @property
    def settings(self) -> Settings:
        if self._settings is None:
            from bgtasks.settings import load_settings

            self._settings = load_settings()
        return self._settings

    @property
    def allowed_roots(self) -> list[Path]:
        """Where file triggers may watch (the daemon's setting)."""
        if self._allowed_roots is None:
            self._allowed_roots = self.settings.daemon.allowed_roots
        return self._allowed_roots

    def check_limits(self, opts: CreateTaskOptions) -> None:
        """What the settings bound: the size of ``data``; a device task's report URL."""
        limit = self.settings.task.data_max_bytes
        size = len(json.dumps(opts.data).encode())
        if size > limit:
            raise InvalidTask([{"field": "data", "message": f"is {size} bytes as JSON, over the limit of {limit} "
                                                             "(BGTASKS_TASK_DATA_MAX_BYTES)"}])
        if opts.target is not None and not self.settings.push.public_url:
            raise InvalidTask([{"field": "target", "message": "devices report to the REST API at "
                                "BGTASKS_PUSH_PUBLIC_URL, which is not set: set it to the https address where "
                                "devices reach this API (http only on a loopback address, for development)"}])

    def check_trigger_path(self, opts: CreateTaskOptions) -> None:
        """A file trigger's path must be an existing directory inside an allowed root."""
        t = opts.trigger
        if t is None or t.path is None:
            return
        path = Path(t.path)
        resolved = path.resolve()
        if not resolved.is_dir():
            raise InvalidTask([{"field": "trigger.path", "message": f"{t.path} is not an existing directory"}])
        roots = [r.resolve() for r in self.allowed_roots]
        if not any(resolved == r or resolved.is_relative_to(r) for r in roots):
            allowed = ", ".join(str(r) for r in roots)
            raise InvalidTask([{"field": "trigger.path",
                                "message": f"{t.path} is outside the allowed roots ({allowed}); "
                                           "see BGTASKS_DAEMON_ALLOWED_ROOTS"}])

    # ---- create -------------------------------------------------------------------

    @staticmethod
    def validate(body: dict[str, Any] | CreateTaskOptions) -> tuple[CreateTaskOptions, str, str]:
        """Validate input and resolve its handler: ``(options, handler, entrypoint)``.

        Raises:
            InvalidTask: naming each bad field.
        """
        try:
            opts = body if isinstance(body, CreateTaskOptions) else CreateTaskOptions.model_validate(body)
        except ValidationError as exc:
            raise InvalidTask(field_errors(exc)) from None
        if opts.target is not None:
            # The work runs on the devices: the handler names it for them (free-form);
            # here the device flow pushes and collects their reports.
            handler = opts.handler or slug(opts.name)
            if not handler:  # a name without ASCII letters or digits gives no slug
                raise InvalidTask([{"field": "handler", "message": "required for a device task whose name "
                                    "has no ASCII letters or digits"}])
            return opts, handler, DEVICE_ENTRYPOINT
        try:
            handler, entrypoint = resolve_handler(opts.name, opts.handler)
        except UnknownHandler as exc:
            raise InvalidTask([{"field": exc.field, "message": str(exc).split(": ", 1)[1]}]) from None
        return opts, handler, entrypoint

    async def create(self, body: dict[str, Any] | CreateTaskOptions) -> BackgroundTask:
        """Validate and create a task; return it. Bad input stores nothing."""
        opts, handler, entrypoint = self.validate(body)
        self.check_limits(opts)
        self.check_trigger_path(opts)
        now = datetime.now(UTC)
        # Pin the start so that the stored definition says when the task was meant to run.
        if opts.schedule.start_time is None and opts.schedule.type != TaskType.TRIGGERED:
            opts = opts.model_copy(update={"schedule": opts.schedule.model_copy(update={"start_time": now})})
        opts = opts.model_copy(update={"handler": handler})
        warnings = await self.check_target(opts, now)

        existing = await self.client.read_deployments(
            deployment_filter=DeploymentFilter(
                name=DeploymentFilterName(any_=[opts.name]), tags=DeploymentFilterTags(all_=[stored.TAG])
            )
        )
        if existing:
            raise InvalidTask([{"field": "name", "message": f"a task named {opts.name!r} already exists ({existing[0].id})"}])

        flow_obj = import_object(entrypoint)
        flow_id = await self.client.create_flow_from_name(flow_obj.name)
        deployment_id = await self.client.create_deployment(
            flow_id=flow_id,
            name=opts.name,
            entrypoint=dotted_entrypoint(entrypoint),
            work_pool_name=self.pool,
            work_queue_name=opts.priority.value,
            tags=stored.tags_for(opts, handler),
            description=mapping.description_for(opts, handler, panel_url(self.settings)),
            parameters=stored.parameters_for(opts),
            parameter_openapi_schema=flow_obj.parameters.model_dump(mode="json"),
            schedules=prefect_schedules(opts.schedule, now),
            enforce_parameter_schema=False,
            paused=False,
        )
        try:
            if opts.schedule.type == TaskType.ONE_TIME:
                await self._schedule_one_time(deployment_id, opts.schedule.start_time or now)
            elif opts.schedule.type == TaskType.TRIGGERED:
                assert opts.trigger is not None
                await self.client.create_automation(automation_for(deployment_id, opts.trigger))
            else:
                await self._schedule_ahead(deployment_id)
        except BaseException:
            await self.client.delete_deployment(deployment_id)
            raise
        task = await self.get(str(deployment_id))
        return task.model_copy(update={"warnings": warnings}) if warnings else task

    async def check_target(self, opts: CreateTaskOptions, now: datetime) -> list[str]:
        """A device target's checks (``mobile_push.target_checks``): refuse a fifth FCM collapse key
        of a device; return a warning when the schedule exceeds the push budget."""
        if opts.target is None:
            return []
        from bgtasks.errors import FieldProblem
        from bgtasks.store import open_store
        from mobile_push.registry import DeviceRegistry
        from mobile_push.target_checks import budget_warnings, check_collapse_keys

        if opts.target.collapse_key is not None:
            deps = await read_all_deployments(self.client, DeploymentFilter(tags=DeploymentFilterTags(all_=[stored.TAG])))
            live = [(d.name, o.target) for d in deps if stored.CANCELLED_TAG not in (d.tags or [])
                    and (o := stored.peek(d.parameters)) is not None and o.target is not None]
            store = await open_store(self.settings.store_url)
            try:
                await check_collapse_keys(DeviceRegistry(store), opts.target, live)
            except FieldProblem as exc:
                raise InvalidTask([{"field": exc.field, "message": exc.reason}]) from None
            finally:
                await store.close()
        return budget_warnings(opts, self.settings.push, now)

    async def _schedule_one_time(self, deployment_id: UUID, at: datetime) -> None:
        await self.client.create_flow_run_from_deployment(
            deployment_id,
            state=Scheduled(scheduled_time=max(at, datetime.now(UTC))),
            idempotency_key=stored.one_time_key(deployment_id),
        )

    async def _schedule_ahead(self, deployment_id: UUID) -> None:
        """Ask the server to create the next runs now, not at its next scheduler loop."""
        await self.client.request(
            "POST",
            "/deployments/{id}/schedule",
            path_params={"id": deployment_id},
            json={"min_runs": SCHEDULE_AHEAD_RUNS, "max_runs": SCHEDULE_AHEAD_RUNS},
        )

    # ---- read ---------------------------------------------------------------------

    async def _deployment(self, task_id: str) -> Any:
        try:
            dep = await self.client.read_deployment(UUID(task_id))
        except (ValueError, ObjectNotFound):
            raise TaskNotFound(task_id) from None
        if stored.TAG not in (dep.tags or []):
            raise TaskNotFound(task_id)
        return dep

    async def _runs(self, deployment_id: UUID, flt: FlowRunFilter, sort: FlowRunSort, limit: int) -> list[Any]:
        flt.deployment_id = FlowRunFilterDeploymentId(any_=[deployment_id])
        return await self.client.read_flow_runs(flow_run_filter=flt, sort=sort, limit=limit)

    async def _task_runs(self, run_id: UUID) -> list[Any]:
        return await self.client.read_task_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[run_id])), task_run_filter=TaskRunFilter()
        )

    async def _attempts(self, run_id: UUID) -> int | None:
        counts = [tr.run_count for tr in await self._task_runs(run_id) if tr.run_count]
        return max(counts) if counts else None

    async def _task_runs_settled(self, run: Any, grace_s: float, poll_s: float) -> None:
        """Task-run states reach the server as events, after the flow run's own final state:
        a run that started waits (at most ``grace_s``) until its handler's task run is final,
        so the attempts it reports are the run's, not a count read mid-way."""
        if run.start_time is None:  # never started (e.g. failed at its constraint deadline)
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace_s
        while loop.time() < deadline:
            runs = await self._task_runs(run.id)
            if runs and all(tr.state is not None and tr.state.is_final() for tr in runs):
                return
            await asyncio.sleep(poll_s)

    async def _result(self, run: Any, attempts: bool) -> TaskResult | None:
        if run is None or run.state is None or run.state.type.value not in mapping.FINISHED:
            return None
        data = None
        if run.state.type == StateType.COMPLETED:
            try:
                data = await run.state.aresult(raise_on_failure=False)
            except Exception:  # result not persisted (e.g. a run skipped past endTime)
                data = None
        n = await self._attempts(run.id) if attempts else None
        return mapping.result_of(run, data, n)

    async def _view(self, dep: Any, detailed: bool) -> BackgroundTask:
        last, nxt, finished, waiting = await asyncio.gather(
            self._runs(dep.id, _state_filter(*mapping.STARTED), FlowRunSort.START_TIME_DESC, 1),
            self._runs(dep.id, _scheduled_not_waiting(), FlowRunSort.EXPECTED_START_TIME_ASC, 1),
            self._runs(dep.id, _state_filter(*mapping.FINISHED), FlowRunSort.END_TIME_DESC, 1),
            self._runs(dep.id, _waiting_filter(), FlowRunSort.EXPECTED_START_TIME_ASC, PAGE),
        )
        latest = last[0] if last else None
        done = finished[0] if finished else None
        # The reads are not one snapshot: a run can finish between them, and a run the worker
        # has just made wait can be read as due by one and as waiting by the other.
        if latest is not None and done is not None and latest.id == done.id:
            latest = done
        waiting_ids = {w.id for w in waiting}
        nxt = [r for r in nxt if r.id not in waiting_ids]
        result = await self._result(done, attempts=detailed)
        return mapping.task_from(dep, latest, nxt[0] if nxt else None, result, waiting)

    async def resolve(self, ref: str) -> str:
        """A task id from an id or a task name."""
        try:
            UUID(ref)
            return ref
        except ValueError:
            pass
        deps = await self.client.read_deployments(
            deployment_filter=DeploymentFilter(
                name=DeploymentFilterName(any_=[ref]), tags=DeploymentFilterTags(all_=[stored.TAG])
            )
        )
        if not deps:
            raise TaskNotFound(ref)
        return str(deps[0].id)

    async def wait_for_run(self, run_id: str, timeout_s: float = 3600, poll_s: float = 0.5) -> TaskResult:
        """Wait until a run finishes; its TaskResult."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while True:
            run = await self.client.read_flow_run(UUID(run_id))
            if run.state is not None and run.state.type.value in mapping.FINISHED:
                await self._task_runs_settled(run, min(30.0, max(0.0, deadline - loop.time())), poll_s)
                result = await self._result(run, attempts=True)
                assert result is not None
                return result
            if loop.time() > deadline:
                raise TaskError(f"run {run_id} did not finish within {timeout_s:g}s")
            await asyncio.sleep(poll_s)

    async def get(self, task_id: str) -> BackgroundTask:
        return await self._view(await self._deployment(task_id), detailed=True)

    async def list(
        self,
        status: TaskStatus | None = None,
        type: TaskType | None = None,
        priority: TaskPriority | None = None,
        sort: str = "priority",
    ) -> list[BackgroundTask]:
        """All tasks, filtered, sorted by ``priority`` (then next run), ``next-run``,
        ``created`` or ``name``."""
        if sort not in SORTS:
            raise InvalidTask([{"field": "sort", "message": f"must be one of {', '.join(SORTS)}"}])
        tags = [stored.TAG]
        if type is not None:
            tags.append(f"type:{type.value}")
        if priority is not None:
            tags.append(f"priority:{priority.value}")
        deps = await read_all_deployments(self.client, DeploymentFilter(tags=DeploymentFilterTags(all_=tags)))
        sem = asyncio.Semaphore(8)

        async def view(dep: Any) -> BackgroundTask:
            async with sem:
                return await self._view(dep, detailed=False)

        tasks = await asyncio.gather(*(view(d) for d in deps))
        if status is not None:
            tasks = [t for t in tasks if t.status == status]
        far = datetime.max.replace(tzinfo=UTC)
        keys = {
            "priority": lambda t: (t.priority.rank, t.next_run or far, t.name),
            "next-run": lambda t: (t.next_run or far, t.priority.rank, t.name),
            "created": lambda t: (t.created_at, t.name),
            "name": lambda t: (t.name.lower(), t.created_at),
        }
        return sorted(tasks, key=keys[sort])

    async def history(self, task_id: str, limit: int = 50) -> list[TaskRun]:
        """The task's runs that have started, newest first, each with its TaskResult."""
        dep = await self._deployment(task_id)
        runs = await self._runs(dep.id, _state_filter(*mapping.STARTED), FlowRunSort.START_TIME_DESC, limit)
        out = []
        for run in runs:
            attempts = await self._attempts(run.id)
            result = await self._result(run, attempts=False)
            if result is not None:
                result = result.model_copy(update={"attempts": attempts})
            out.append(mapping.run_view(run, result, attempts))
        return out

    # ---- control ------------------------------------------------------------------

    @staticmethod
    def _ensure_not_cancelled(dep: Any, action: str) -> None:
        if stored.CANCELLED_TAG in (dep.tags or []):
            raise TaskConflict(f"task {dep.name!r} is cancelled and cannot {action}; create it again")

    async def run_now(self, task_id: str, delay_s: float = 0) -> str:
        """Start a run now (or ``delay_s`` seconds from now), in the task's priority queue;
        return the run id."""
        dep = await self._deployment(task_id)
        self._ensure_not_cancelled(dep, "run")
        if dep.paused:
            raise TaskConflict(f"task {dep.name!r} is paused; resume it first (`bgtasks task resume {dep.id}`)")
        # The key makes a request the client resends (after a 503 whose run was in fact
        # created) return the same run instead of a second one.
        run = await self.client.create_flow_run_from_deployment(
            dep.id, state=Scheduled(scheduled_time=datetime.now(UTC) + timedelta(seconds=delay_s)), tags=["run-now"],
            idempotency_key=stored.run_now_key(),
        )
        return str(run.id)

    async def _scheduled_runs(self, dep_id: UUID) -> list[Any]:
        return await self._runs(dep_id, _state_filter("SCHEDULED"), FlowRunSort.EXPECTED_START_TIME_ASC, PAGE)

    async def pause(self, task_id: str) -> BackgroundTask:
        """No scheduled, queued or run-now run starts until resumed."""
        dep = await self._deployment(task_id)
        self._ensure_not_cancelled(dep, "be paused")
        await self.client.pause_deployment(dep.id)
        await self._set_triggers(dep.id, enabled=False)
        # Prefect deletes only auto-scheduled runs: the one-time run and queued
        # run-now runs would still start. Resume recreates what is due.
        while runs := await self._scheduled_runs(dep.id):
            for run in runs:
                with _gone_ok():
                    await self.client.delete_flow_run(run.id)
        # A run a worker submitted just before the pause (Pending: its process is starting, its
        # handler has not) is cancelled: its engine's move to Running is refused and it exits.
        # A run already Running finishes.
        for run in await self._runs(dep.id, _state_filter("PENDING"), FlowRunSort.EXPECTED_START_TIME_ASC, PAGE):
            with _gone_ok():
                await self.client.set_flow_run_state(
                    run.id, Cancelled(message="Its task was paused before the run started"), force=True)
        return await self.get(task_id)

    async def resume(self, task_id: str) -> BackgroundTask:
        dep = await self._deployment(task_id)
        self._ensure_not_cancelled(dep, "be resumed")
        await self.client.resume_deployment(dep.id)
        await self._set_triggers(dep.id, enabled=True)
        opts = stored.read(dep.parameters)
        ttype = opts.schedule.type if opts else (TaskType.PERIODIC if dep.schedules else TaskType.ONE_TIME)
        if ttype == TaskType.PERIODIC:
            await self._schedule_ahead(dep.id)
        elif ttype == TaskType.ONE_TIME:
            started = await self._runs(dep.id, _state_filter(*mapping.STARTED), FlowRunSort.START_TIME_DESC, 1)
            if not started and not await self._scheduled_runs(dep.id):
                at = opts.schedule.start_time if opts and opts.schedule.start_time else datetime.now(UTC)
                await self.client.create_flow_run_from_deployment(
                    dep.id, state=Scheduled(scheduled_time=max(at, datetime.now(UTC)))
                )
        return await self.get(task_id)

    async def _triggers(self, dep_id: UUID) -> list[Any]:
        return await self.client.read_automations_by_name(stored.automation_name(dep_id))

    async def _set_triggers(self, dep_id: UUID, enabled: bool) -> None:
        """Disable (pause) or enable (resume) the task's trigger automations: a paused
        Prefect deployment would still be run by them."""
        for automation in await self._triggers(dep_id):
            if automation.enabled != enabled:
                if enabled:
                    await self.client.resume_automation(automation.id)
                else:
                    await self.client.pause_automation(automation.id)

    async def _stop_runs(self, dep_id: UUID) -> None:
        """Cancel every run that has not finished: queued ones at once, running ones
        through Cancelling, so the worker stops their process."""
        while runs := await self._runs(dep_id, _state_filter(*mapping.ACTIVE), FlowRunSort.EXPECTED_START_TIME_ASC, PAGE):
            for run in runs:
                if run.state.type.value in ("RUNNING", "PENDING"):
                    state = Cancelling(message="Cancelled by bgtasks")
                else:
                    state = Cancelled(message="Cancelled by bgtasks")
                with _gone_ok():
                    await self.client.set_flow_run_state(run.id, state, force=True)

    async def cancel(self, task_id: str) -> BackgroundTask:
        """Stop the task for good: no further runs; pending runs cancelled, running ones stopped."""
        dep = await self._deployment(task_id)
        if stored.CANCELLED_TAG not in (dep.tags or []):
            await self.client.update_deployment(dep.id, _deployment_update(tags=[*dep.tags, stored.CANCELLED_TAG], paused=True))
        await self._set_triggers(dep.id, enabled=False)
        await self._stop_runs(dep.id)
        return await self.get(task_id)

    async def delete(self, task_id: str) -> None:
        """Stop the task's runs (pending ones end Cancelled, running ones are stopped),
        then remove the task."""
        dep = await self._deployment(task_id)
        await self.client.pause_deployment(dep.id)
        await self._set_triggers(dep.id, enabled=False)
        await self._stop_runs(dep.id)  # leaves no Scheduled run behind
        for automation in await self._triggers(dep.id):
            with _gone_ok():
                await self.client.delete_automation(automation.id)
        try:
            await self.client.delete_deployment(dep.id)
        except ObjectNotFound:  # deleted by another caller meanwhile
            raise TaskNotFound(task_id) from None


@contextlib.contextmanager
def _gone_ok() -> Iterator[None]:
    """A run (or automation) deleted meanwhile needs no stopping: the worker drops a paused
    task's scheduler-made runs at submission, and may do so between our read and our write."""
    try:
        yield
    except ObjectNotFound:
        pass


def _deployment_update(**fields: Any) -> Any:
    from prefect.client.schemas.actions import DeploymentUpdate

    return DeploymentUpdate(**fields)
