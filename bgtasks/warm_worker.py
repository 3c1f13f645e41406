"""The warm worker: a Prefect worker type (``bgtasks-warm``) that runs each flow run
in a child forked from a pre-imported parent.

Prefect's ``process`` worker starts a new Python per run, which spends seconds
importing Prefect before the first line of the handler (docs/performance.md).
This worker keeps one *zygote* (:mod:`bgtasks.zygote`) that has imported Prefect,
the flow engine and every handler, and asks it to fork a child per run. The
child runs the same engine steps as ``python -m prefect.engine``.

Everything else is Prefect's own machinery, reused as the process worker uses it:

- ``BaseWorker`` polls the pool's queues by priority, honours the pool, queue
  and ``--limit`` concurrency, proposes Pending and reports a non-zero exit as
  Crashed;
- one long-lived ``FlowRunExecutorContext`` (the process worker makes one per
  run) supervises the children: cancellation of a running run through the
  control channel, then SIGTERM to the child's process group and SIGKILL after a
  grace, crash reporting when a child dies without a final state.

Being told instead of polling: the worker subscribes to the server's event
stream for flow runs entering ``Scheduled`` in its pool and polls at once, or at
the run's scheduled time (one timer over a heap of due times); the periodic
poll (``PREFECT_WORKER_QUERY_SECONDS``) stays as a safety net.

What bgtasks adds around the runs (paused tasks, start time, constraints, catch-up,
crashes, failed triggers) is not here: each is a policy of :mod:`bgtasks.policies`,
whose hooks the worker calls before a poll, before a run starts, after it ends and
on the events they ask for.

Start it with ``prefect worker start --pool background-tasks --type bgtasks-warm``
(``bgtasks up`` does). Prefect finds the type through the ``prefect.collections``
entry point of the bgtasks distribution.
"""

from __future__ import annotations

import asyncio
import contextvars
import heapq
import json
import os
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any, ClassVar

import anyio
import anyio.abc
import anyio.to_thread
from prefect.client.schemas.objects import FlowRun
from prefect.flows import load_flow_from_flow_run
from prefect.settings import get_current_settings
from prefect.workers.process import (
    ProcessJobConfiguration,
    ProcessVariables,
    ProcessWorker,
    ProcessWorkerResult,
)

from bgtasks.zygote import EXITED, READY, RUN, SPAWNED, message
from bgtasks.policies.base import Periodic, Policy
from bgtasks.prefect_seam import (
    ENV_CONTROL_PORT,
    ENV_CONTROL_TOKEN,
    ENV_FLOW_ENTRYPOINT,
    ENV_RUNNER_HOOKS,
    ENV_VERSION_CHECKED,
    FlowRunExecutionResult,
    FlowRunExecutorContext,
    ProcessHandle,
    create_isolated_termination_scope,
    check_server_version_once,
    require,
    share_verify_contexts,
    single_flight_csrf,
)

WORKER_TYPE = "bgtasks-warm"
#: How long a deployment's entrypoint is reused without reading the deployment again.
ENTRYPOINT_CACHE_S = 30.0
#: Shortest gap between two polls triggered by events or finished runs, while every slot is
#: taken (runs may be waiting in the queues) ...
MIN_POLL_INTERVAL_S = 0.5
#: ... and while slots are free: a run-now right after another is not held back.
MIN_POLL_INTERVAL_FREE_S = 0.2
#: Pending wake-ups kept (a float each); beyond, runs wait for the periodic poll.
MAX_PENDING_WAKES = 100_000
#: Events that make the worker poll (at the run's scheduled time).
WAKE_EVENTS = ("prefect.flow-run.Scheduled", "prefect.flow-run.AwaitingRetry")


#: What one run's submission has read (``"deployment.<id>"``, ``"flow.<id>"``): Prefect's worker
#: reads the deployment twice per run (that it exists, then its job variables) and the flow once;
#: within one submission the first read serves the others, and the child's events reuse them.
_SUBMISSION: contextvars.ContextVar[dict[str, Any] | None] = contextvars.ContextVar("bgtasks_submission", default=None)


class ZygoteGone(RuntimeError):
    """The zygote exited; it is restarted for the next run."""


class _ForkedProcess:
    """What ``ProcessHandle`` needs of a process: its pid and, once reaped, its exit code."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.returncode: int | None = None


class ZygoteClient:
    """Owns the zygote process: starts it, sends run requests, collects exits."""

    def __init__(self, env: dict[str, str] | None = None) -> None:
        self._env = env
        self._proc: asyncio.subprocess.Process | None = None
        self._reader: asyncio.Task[None] | None = None
        self._spawned: dict[str, asyncio.Future[int]] = {}
        self._exits: dict[int, asyncio.Future[int]] = {}
        self._early_exits: dict[int, int] = {}
        self._lock = asyncio.Lock()
        self.ready = asyncio.Event()

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    async def start(self) -> None:
        self.ready = asyncio.Event()
        self._proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bgtasks.zygote",
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            env=self._env, limit=1 << 20,
        )
        self._reader = asyncio.create_task(self._read(self._proc))
        await asyncio.wait_for(self.ready.wait(), timeout=120)

    async def _read(self, proc: asyncio.subprocess.Process) -> None:
        assert proc.stdout is not None
        while line := await proc.stdout.readline():
            msg = json.loads(line)
            if msg["op"] == READY:
                self.ready.set()
            elif msg["op"] == SPAWNED:
                fut = self._spawned.pop(msg["req"], None)
                if fut and not fut.done():
                    fut.set_result(msg["pid"])
            elif msg["op"] == EXITED:
                fut = self._exits.pop(msg["pid"], None)
                if fut and not fut.done():
                    fut.set_result(msg["code"])
                else:
                    self._early_exits[msg["pid"]] = msg["code"]
        # The zygote is gone: its orphaned children can no longer be reaped by it.
        for fut in self._spawned.values():
            if not fut.done():
                fut.set_exception(ZygoteGone("the zygote exited before starting the run"))
        self._spawned.clear()
        for pid, fut in list(self._exits.items()):
            asyncio.create_task(self._await_orphan(pid, fut))
        self._exits.clear()

    @staticmethod
    async def _await_orphan(pid: int, fut: asyncio.Future[int]) -> None:
        """A child whose zygote died: wait until it is gone; its exit code is unknown."""
        while True:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                break
            await asyncio.sleep(0.5)
        if not fut.done():
            fut.set_result(-1)

    async def spawn(
        self, flow_run_id: str, env: dict[str, str], flow_run_json: str | None = None,
        related: dict[str, str] | None = None,
    ) -> tuple[int, asyncio.Future[int]]:
        """Fork a child for the run: ``(pid, future of its exit code)``."""
        async with self._lock:
            if self._proc is None or self._proc.returncode is not None:
                await self.start()
            assert self._proc is not None and self._proc.stdin is not None
            req = uuid.uuid4().hex
            spawned: asyncio.Future[int] = asyncio.get_running_loop().create_future()
            self._spawned[req] = spawned
            line = message(RUN, req=req, flow_run_id=flow_run_id, env=env, flow_run=flow_run_json, related=related)
            self._proc.stdin.write(line.encode())
            await self._proc.stdin.drain()
            pid = await spawned
            exited: asyncio.Future[int] = asyncio.get_running_loop().create_future()
            if pid in self._early_exits:
                exited.set_result(self._early_exits.pop(pid))
            else:
                self._exits[pid] = exited
            return pid, exited

    async def stop(self) -> None:
        """Close the request pipe; the zygote exits, running children finish on their own."""
        if self._proc is None:
            return
        if self._proc.stdin is not None:
            self._proc.stdin.close()
        try:
            await asyncio.wait_for(self._proc.wait(), timeout=10)
        except TimeoutError:
            self._proc.kill()
            await self._proc.wait()
        if self._reader is not None:
            await self._reader

    async def __aenter__(self) -> ZygoteClient:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()


class ZygoteStarter:
    """A ``ProcessStarter`` (Prefect's runner protocol) that forks from the zygote.

    Builds the child's environment as ``EngineCommandStarter`` does: the job's
    env, the flow run id, the control channel's port and token (so a cancel
    reaches the engine as an intent before any signal).
    """

    def __init__(
        self, zygote: ZygoteClient, env: dict[str, str | None], control_channel: Any, entrypoint: str | None = None,
        related: dict[str, str] | None = None,
    ) -> None:
        self._zygote = zygote
        self._env = env
        self._control_channel = control_channel
        self._entrypoint = entrypoint
        self._related = related

    async def start(
        self, flow_run: FlowRun, task_status: anyio.abc.TaskStatus[ProcessHandle] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        env = {k: v for k, v in self._env.items() if v is not None}
        if self._control_channel is not None:
            try:
                port, token = self._control_channel.register(flow_run.id)
                env[ENV_CONTROL_PORT] = str(port)
                env[ENV_CONTROL_TOKEN] = token
            except RuntimeError:
                pass  # no channel: cancellation falls back to signals
        env[ENV_RUNNER_HOOKS] = "false"
        if self._entrypoint:
            env[ENV_FLOW_ENTRYPOINT] = self._entrypoint
        pid, exited = await self._zygote.spawn(str(flow_run.id), env, flow_run.model_dump_json(), self._related)
        process = _ForkedProcess(pid)
        # The child called setsid(): its pid is its process group.
        task_status.started(ProcessHandle(process, termination_scope=create_isolated_termination_scope(pid)))
        process.returncode = await exited


class WarmJobConfiguration(ProcessJobConfiguration):
    """Prefect's process job configuration, with the settings' environment computed once.

    Every run's configuration starts from ``get_current_settings().to_environment_variables()``:
    about 20 ms of CPU per run in the worker (bench/worker.py --profile) for the same answer
    while the worker's settings are the same object.
    """

    _env_of: ClassVar[tuple[Any, dict[str, str]] | None] = None

    @classmethod
    def _base_environment(cls) -> dict[str, str]:
        settings = get_current_settings()
        cached = WarmJobConfiguration._env_of
        if cached is None or cached[0] is not settings:
            cached = WarmJobConfiguration._env_of = (settings, super()._base_environment())
        return dict(cached[1])


class WarmWorker(ProcessWorker):
    """Runs flow runs in children forked from a warm, pre-imported parent; bgtasks' behaviour
    around them is its policies (:mod:`bgtasks.policies`)."""

    type = WORKER_TYPE
    job_configuration = WarmJobConfiguration
    job_configuration_variables = ProcessVariables
    _description = (
        "bgtasks warm worker: runs each flow run in a process forked from a parent that "
        "has Prefect and the handlers already imported (milliseconds to start, not seconds)."
    )
    _display_name = "bgtasks warm"

    def __init__(self, *args: Any, policies: list[Policy] | None = None, **kwargs: Any) -> None:
        single_flight_csrf()  # the worker submits runs concurrently on one client
        super().__init__(*args, **kwargs)
        if policies is None:
            from bgtasks.policies import default_policies
            from bgtasks.settings import load_settings

            policies = default_policies(load_settings())  # the worker process reads its settings once
        self.policies = policies
        self._zygote: ZygoteClient | None = None
        self._ctx: FlowRunExecutorContext | None = None
        self._wake_group: anyio.abc.TaskGroup | None = None
        self._entrypoints: dict[Any, tuple[float, str | None]] = {}
        self._queues: dict[Any, tuple[float, str]] = {}  # work queues' JSON, for _related_of
        self._due: list[float] = []  # heap of epoch times to poll at
        self._due_changed: anyio.Event | None = None
        self._backlog = False
        self._running: dict[Any, FlowRun] = {}  # runs whose process is alive
        self._proposed: set[Any] = set()  # runs whose submission got as far as proposing Pending

    # ---- what policies use (bgtasks.policies.Worker) -----------------------------

    @property
    def log(self) -> Any:
        return self._logger

    @property
    def pool_name(self) -> str:
        return self._work_pool_name

    @property
    def running(self) -> dict[Any, FlowRun]:
        return self._running

    def run_logger(self, flow_run: FlowRun) -> Any:
        return self.get_flow_run_logger(flow_run)

    def start_soon(self, fn: Callable[..., Awaitable[Any]], *args: Any) -> None:
        """Run ``fn(*args)`` in the worker's background group; a failure is logged, not raised."""
        if self._wake_group is not None:
            self._wake_group.start_soon(self._logged, fn, *args)

    async def _logged(self, fn: Callable[..., Awaitable[Any]], *args: Any) -> None:
        try:
            await fn(*args)
        except Exception:  # noqa: BLE001 - one failed action must not stop the worker
            self._logger.warning("%s failed", getattr(fn, "__qualname__", fn), exc_info=True)

    def is_ours(self, event: Any) -> bool:
        pool = self._work_pool
        if pool is None:
            return True
        wanted = f"prefect.work-pool.{pool.id}"
        return any(r.id == wanted for r in event.related)

    def wake_at(self, when: datetime | None) -> None:
        """Remember to poll at ``when`` (minus the prefetch window), or now."""
        at = time.time()
        if when is not None:
            at = max(at, when.timestamp() - get_current_settings().worker.prefetch_seconds)
        if len(self._due) < MAX_PENDING_WAKES:
            heapq.heappush(self._due, at)
        if self._due_changed is not None:
            self._due_changed.set()

    # ---- Prefect's worker, with the policies' hooks ------------------------------

    async def setup(self) -> None:
        require("worker", "child", "client")  # before a run is taken: an incompatible Prefect says which part
        # Entered before BaseWorker's own contexts, so they close after the
        # runs task group has drained: in-flight runs keep their supervisor.
        share_verify_contexts()
        zygote_env = dict(os.environ)
        api_url = get_current_settings().api.url
        if api_url and await check_server_version_once(api_url):  # once, for every run the zygote forks
            zygote_env[ENV_VERSION_CHECKED] = api_url
        self._zygote = await self._exit_stack.enter_async_context(ZygoteClient(zygote_env))
        self._ctx = await self._exit_stack.enter_async_context(FlowRunExecutorContext())
        for policy in self.policies:  # stopped after the runs task group has drained, too
            await policy.start(self)
            self._exit_stack.push_async_callback(self._logged, policy.stop, self)
        await super().setup()
        self._read_once_per_submission()
        # Its own task group, cancelled first at teardown: a wake-up timer for a
        # run due in an hour must not hold the worker's shutdown.
        self._due_changed = anyio.Event()
        self._wake_group = await self._exit_stack.enter_async_context(anyio.create_task_group())
        self._wake_group.start_soon(self._listen)
        self._wake_group.start_soon(self._wake_loop)
        for policy in self.policies:
            for job in policy.periodic():
                self._wake_group.start_soon(self._repeat, job)

    async def teardown(self, *exc_info: Any) -> None:
        if self._wake_group is not None:
            self._wake_group.cancel_scope.cancel()
        await super().teardown(*exc_info)

    async def _repeat(self, job: Periodic) -> None:
        if not job.at_start:
            await anyio.sleep(job.every_s)
        while True:
            await self._logged(job.fn, self)
            await anyio.sleep(job.every_s)

    async def _submit_run(self, flow_run: FlowRun) -> None:
        """Prefect's, and the concurrency slot its "deployment no longer exists" path keeps.

        Prefect 3.9's ``BaseWorker._submit_run`` returns early for a run whose deployment
        was deleted without releasing the slot taken for it: a worker with ``--limit 1``
        then never takes a run again. Every other path proposes Pending first (which is
        recorded here), so a run that was not proposed holds a slot nothing will release.
        """
        self._proposed.discard(flow_run.id)
        reads = _SUBMISSION.set({})  # the run's task, started in here, keeps the same reads
        try:
            await super()._submit_run(flow_run)
        finally:
            _SUBMISSION.reset(reads)
            if flow_run.id not in self._proposed:
                self._release_limit_slot(flow_run.id)  # idempotent
            self._proposed.discard(flow_run.id)

    def _read_once_per_submission(self) -> None:
        """Make the client's deployment and flow reads serve a submission's later reads
        from its first (outside a submission they are untouched)."""
        client = self.client
        for kind, name in (("deployment", "read_deployment"), ("flow", "read_flow")):
            original = getattr(client, name)

            async def read(*args: Any, _kind: str = kind, _original: Any = original, **kwargs: Any) -> Any:
                reads = _SUBMISSION.get()
                if reads is None or len(args) != 1 or kwargs:  # only the id, as Prefect's worker reads
                    return await _original(*args, **kwargs)
                key = f"{_kind}.{args[0]}"
                if key not in reads:
                    reads[key] = await _original(args[0])
                return reads[key]

            setattr(client, name, read)

    async def _related_of(self, flow_run: FlowRun) -> dict[str, str]:
        """The objects Prefect's events name as the run's related resources, as JSON by
        ``kind.id``: the child's events take them instead of reading each again."""
        reads = _SUBMISSION.get() or {}
        out = {key: reads[key].model_dump_json() for key in
               (f"flow.{flow_run.flow_id}", f"deployment.{flow_run.deployment_id}") if key in reads}
        pool = self._work_pool
        # The runs this worker takes are its pool's (the copy from the poll may not name it).
        if pool is not None and flow_run.work_pool_name in (None, pool.name):
            out[f"work-pool.{pool.name}"] = pool.model_dump_json()
        if flow_run.work_queue_id is not None:
            now = asyncio.get_running_loop().time()
            cached = self._queues.get(flow_run.work_queue_id)
            if cached is None or now - cached[0] >= ENTRYPOINT_CACHE_S:
                try:
                    cached = self._queues[flow_run.work_queue_id] = (
                        now, (await self.client.read_work_queue(flow_run.work_queue_id)).model_dump_json())
                except Exception:  # the child's events read it themselves
                    cached = None
            if cached is not None:
                out[f"work-queue.{flow_run.work_queue_id}"] = cached[1]
        return out

    async def _propose_submitting_state(self, flow_run: FlowRun) -> None:
        """No ``Submitting`` state: Prefect's worker proposes it while it provisions a run's
        infrastructure (a container, a pod); a fork from the zygote takes a millisecond. The
        run goes Pending -> Running, without a set-state call, an event and its automation
        evaluation that cost the server about 40 ms of CPU and the run 85 ms (docs/performance.md)."""
        return None

    async def _propose_pending_state(self, flow_run: FlowRun) -> bool:
        """Prefect's proposal of Pending, once every policy lets the run start."""
        self._proposed.add(flow_run.id)
        for policy in self.policies:
            if not await policy.before_submit(self, flow_run):
                return False
        return await super()._propose_pending_state(flow_run)

    async def get_and_submit_flow_runs(self) -> Any:
        for policy in self.policies:
            await policy.before_poll(self)
        try:
            return await super().get_and_submit_flow_runs()
        finally:
            # Every slot taken: runs may be left in the queues, so a finished run should
            # look for them (whichever loop polled: the wake loop or Prefect's own).
            self._backlog = self._limiter is not None and self._limiter.available_tokens == 0

    # ---- being told ------------------------------------------------------------

    async def _listen(self) -> None:
        """Poll as soon as a run of this pool is scheduled (or at its time); hand the
        policies the events they asked for."""
        from prefect.events.clients import get_events_subscriber
        from prefect.events.filters import EventFilter, EventNameFilter

        wanted: dict[str, list[Policy]] = {}
        for policy in self.policies:
            for name in policy.events:
                wanted.setdefault(name, []).append(policy)
        flt = EventFilter(event=EventNameFilter(name=sorted({*WAKE_EVENTS, *wanted})))
        while True:
            try:
                async with get_events_subscriber(filter=flt, reconnection_attempts=10) as sub:
                    # Runs scheduled before the stream was open (at start, or while it was
                    # reconnecting) sent events nobody heard: look for them once now.
                    self.wake_at(None)
                    async for event in sub:
                        if event.event in WAKE_EVENTS and self.is_ours(event):
                            self.wake_at(_scheduled_time(event))
                        for policy in wanted.get(event.event, ()):
                            self.start_soon(policy.on_event, self, event)
            except Exception as exc:  # the safety-net poll keeps working meanwhile
                self._logger.debug("Event stream interrupted (%s); reconnecting", exc)
                await anyio.sleep(2)

    async def _wake_loop(self) -> None:
        """One timer for all wake-ups: sleep until the earliest, poll, repeat.

        Polls are at least ``MIN_POLL_INTERVAL_S`` apart while the last poll left
        every slot taken: every poll makes the server mark the pool's queues ready,
        and on SQLite a burst of those locks the database (measured: 60 s stalls
        with a poll after every event and every finished run). While slots are free
        the gap is ``MIN_POLL_INTERVAL_FREE_S`` (at most 5 polls a second), so that
        a run created 0.4 s after the last poll starts at once (docs/performance.md).
        Wake-ups that come due meanwhile are served by the one poll that follows.
        """
        last_poll = 0.0
        while True:
            now = time.time()
            due = False
            while self._due and self._due[0] <= now:
                heapq.heappop(self._due)
                due = True
            if due:
                gap = MIN_POLL_INTERVAL_S if self._backlog else MIN_POLL_INTERVAL_FREE_S
                wait = last_poll + gap - time.monotonic()
                if wait > 0:
                    await anyio.sleep(wait)
                last_poll = time.monotonic()
                try:
                    await self.get_and_submit_flow_runs()  # sets _backlog
                except Exception:
                    self._logger.exception("Polling for flow runs failed")
                continue
            changed = self._due_changed = anyio.Event()
            with anyio.move_on_after(self._due[0] - now if self._due else None):
                await changed.wait()

    # ---- running -----------------------------------------------------------------

    async def _entrypoint_of(self, flow_run: FlowRun) -> str | None:
        """The deployment's module-path entrypoint, when the child may import it directly.

        Only for deployments without pull steps and with a module path
        (``flows.demo.demo``): then loading the flow is an import, already done
        in the zygote, and the child skips reading the deployment again.
        Cached for ``ENTRYPOINT_CACHE_S``: a re-deployment is seen that late.
        """
        if flow_run.deployment_id is None:
            return None
        now = asyncio.get_running_loop().time()
        cached = self._entrypoints.get(flow_run.deployment_id)
        if cached is not None and now - cached[0] < ENTRYPOINT_CACHE_S:
            return cached[1]
        dep = await self.client.read_deployment(flow_run.deployment_id)
        entry = dep.entrypoint if dep.entrypoint and ":" not in dep.entrypoint and not dep.pull_steps else None
        if entry is not None:
            module, _, attr = entry.rpartition(".")
            entry = f"{module}:{attr}"
        self._entrypoints[flow_run.deployment_id] = (now, entry)
        return entry

    async def run(
        self,
        flow_run: FlowRun,
        configuration: ProcessJobConfiguration,
        task_status: anyio.abc.TaskStatus[int] | None = None,
    ) -> ProcessWorkerResult:
        if task_status is None:
            task_status = anyio.TASK_STATUS_IGNORED
        assert self._ctx is not None and self._zygote is not None
        env = dict(configuration.env)
        for policy in self.policies:
            env.update(policy.child_env())
        starter = ZygoteStarter(self._zygote, env, self._ctx.control_channel, await self._entrypoint_of(flow_run),
                                await self._related_of(flow_run))
        executor = self._ctx.create_executor(
            flow_run, starter, resolve_flow=load_flow_from_flow_run, propose_submitting=False
        )
        execution: FlowRunExecutionResult | None = None

        async def execute(*, task_status: anyio.abc.TaskStatus[ProcessHandle] = anyio.TASK_STATUS_IGNORED) -> None:
            nonlocal execution
            execution = await executor.submit(task_status=task_status)

        try:
            async with anyio.create_task_group() as tg:
                handle = await tg.start(execute)
                if handle is None or handle.pid is None:
                    raise RuntimeError("Flow run process has no PID")
                self._running[flow_run.id] = flow_run
                task_status.started(handle.pid)
        finally:
            self._running.pop(flow_run.id, None)
            for policy in self.policies:
                await self._logged(policy.after_run, self, flow_run)
            # A slot is free again: if runs were left queued, take one now
            # rather than at the next periodic poll.
            if self._backlog:
                self.wake_at(None)
        if execution is None or execution.status_code is None or not execution.crash_unreported:
            # Exited cleanly, or its crash is already reported by the executor: BaseWorker must not
            # report it a second time (a second Crashed would land after the crash policy has put
            # the run back as AwaitingRetry, and crash the re-run before it starts).
            return ProcessWorkerResult(status_code=0, identifier=str(handle.pid))
        return ProcessWorkerResult(status_code=execution.status_code, identifier=str(execution.handle.pid))


def _scheduled_time(event: Any) -> datetime | None:
    try:
        raw = event.payload["validated_state"]["state_details"]["scheduled_time"]
    except (KeyError, TypeError):
        return None
    if not raw:
        return None
    t = datetime.fromisoformat(str(raw).replace("Z", "+00:00"))
    return t if t.tzinfo else t.replace(tzinfo=UTC)
