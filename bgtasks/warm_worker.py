"""The warm worker: a Prefect worker type (``bgtasks-warm``) that runs each flow run
in a child forked from a pre-imported parent.

Prefect's ``process`` worker starts a new Python per run, which spends seconds
importing Prefect before the first line of the handler (README, "Performance").
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

Start it with ``prefect worker start --pool background-tasks --type bgtasks-warm``
(``bgtasks up`` does). Prefect finds the type through the ``prefect.collections``
entry point of the bgtasks distribution.
"""

from __future__ import annotations

import asyncio
import heapq
import json
import os
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

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

from bgtasks.prefect_seam import (
    ENV_CONTROL_PORT,
    ENV_CONTROL_TOKEN,
    ENV_FLOW_ENTRYPOINT,
    ENV_RUNNER_HOOKS,
    FlowRunExecutionResult,
    FlowRunExecutorContext,
    ProcessHandle,
    create_isolated_termination_scope,
    require,
    single_flight_csrf,
)

WORKER_TYPE = "bgtasks-warm"
#: How long a deployment's entrypoint is reused without reading the deployment again.
ENTRYPOINT_CACHE_S = 30.0
#: How often the worker re-checks runs waiting for constraints (the trigger daemon
#: releases them at once on a change; this covers a host without a daemon).
CONSTRAINT_RECHECK_S = float(os.environ.get("BGTASKS_WORKER_CONSTRAINT_RECHECK_S", "30"))
#: How often running runs with constraints are checked (stopped when a constraint is lost).
RUNNING_CHECK_S = 1.0
#: How often the pool's crashed runs are looked for (a Crashed event is acted on at once).
CRASH_SCAN_S = float(os.environ.get("BGTASKS_WORKER_CRASH_SCAN_S", "60"))
#: Crashed runs looked at per scan, the most recent first.
CRASH_SCAN_LIMIT = 200
#: How far back each scan looks for trigger actions that failed (the scan runs with the
#: crashed-runs scan; a failure event seen live is acted on at once).
TRIGGER_LOOKBACK = timedelta(minutes=15)
#: Events per page of the events API (its maximum).
EVENTS_PAGE = 50
#: Shortest gap between two polls triggered by events or finished runs.
MIN_POLL_INTERVAL_S = 0.5
#: Pending wake-ups kept (a float each); beyond, runs wait for the periodic poll.
MAX_PENDING_WAKES = 100_000
#: The server links a state event to the previous state's event (``follows``) when that
#: state is less than 5 minutes old (prefect.server.models.events); one more minute
#: covers clock skew between this host and the server's.
FOLLOWS_WINDOW = timedelta(minutes=6)


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
            if msg["op"] == "ready":
                self.ready.set()
            elif msg["op"] == "spawned":
                fut = self._spawned.pop(msg["req"], None)
                if fut and not fut.done():
                    fut.set_result(msg["pid"])
            elif msg["op"] == "exited":
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
        self, flow_run_id: str, env: dict[str, str], flow_run_json: str | None = None
    ) -> tuple[int, asyncio.Future[int]]:
        """Fork a child for the run: ``(pid, future of its exit code)``."""
        async with self._lock:
            if self._proc is None or self._proc.returncode is not None:
                await self.start()
            assert self._proc is not None and self._proc.stdin is not None
            req = uuid.uuid4().hex
            spawned: asyncio.Future[int] = asyncio.get_running_loop().create_future()
            self._spawned[req] = spawned
            line = json.dumps(
                {"op": "run", "req": req, "flow_run_id": flow_run_id, "env": env, "flow_run": flow_run_json}
            )
            self._proc.stdin.write(line.encode() + b"\n")
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
        self, zygote: ZygoteClient, env: dict[str, str | None], control_channel: Any, entrypoint: str | None = None
    ) -> None:
        self._zygote = zygote
        self._env = env
        self._control_channel = control_channel
        self._entrypoint = entrypoint

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
        pid, exited = await self._zygote.spawn(str(flow_run.id), env, flow_run.model_dump_json())
        process = _ForkedProcess(pid)
        # The child called setsid(): its pid is its process group.
        task_status.started(ProcessHandle(process, termination_scope=create_isolated_termination_scope(pid)))
        process.returncode = await exited


class WarmWorker(ProcessWorker):
    """Runs flow runs in children forked from a warm, pre-imported parent."""

    type = WORKER_TYPE
    job_configuration = ProcessJobConfiguration
    job_configuration_variables = ProcessVariables
    _description = (
        "bgtasks warm worker: runs each flow run in a process forked from a parent that "
        "has Prefect and the handlers already imported (milliseconds to start, not seconds)."
    )
    _display_name = "bgtasks warm"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        single_flight_csrf()  # the worker submits runs concurrently on one client
        super().__init__(*args, **kwargs)
        self._zygote: ZygoteClient | None = None
        self._ctx: FlowRunExecutorContext | None = None
        self._wake_group: anyio.abc.TaskGroup | None = None
        self._entrypoints: dict[Any, tuple[float, str | None]] = {}
        self._due: list[float] = []  # heap of epoch times to poll at
        self._due_changed: anyio.Event | None = None
        self._backlog = False
        self._host: Any = None  # triggers.host.HostSensors, made on first use
        self._running: dict[Any, FlowRun] = {}  # runs whose process is alive, for constraint checks
        self._stopping: dict[Any, str] = {}  # runs stopped because a constraint was lost -> why
        self._overridden: set[Any] = set()  # runs started at their constraint deadline
        self._proposed: set[Any] = set()  # runs whose submission got as far as proposing Pending
        self._recovering: set[str] = set()  # crashed runs being looked at now
        self._caught_up_at: float | None = None  # end of the last catch-up pass (monotonic)
        self._caught_up_once = False  # the start-up pass (with unscheduled occurrences) is done
        self._catching_up = False
        self._first_catch_up = anyio.Lock()
        self._settled: set[str] = set()  # crashed runs left Crashed (policy exhausted)
        self._triggers_done: dict[str, float] = {}  # failed trigger actions re-run -> when (monotonic)
        self._triggers_busy: set[str] = set()  # failed trigger actions being re-run now

    async def setup(self) -> None:
        require("worker", "child", "client")  # before a run is taken: an incompatible Prefect says which part
        # Entered before BaseWorker's own contexts, so they close after the
        # runs task group has drained: in-flight runs keep their supervisor.
        self._zygote = await self._exit_stack.enter_async_context(ZygoteClient())
        self._ctx = await self._exit_stack.enter_async_context(FlowRunExecutorContext())
        await super().setup()
        # Its own task group, cancelled first at teardown: a wake-up timer for a
        # run due in an hour must not hold the worker's shutdown.
        self._due_changed = anyio.Event()
        self._wake_group = await self._exit_stack.enter_async_context(anyio.create_task_group())
        self._wake_group.start_soon(self._listen_for_runs)
        self._wake_group.start_soon(self._wake_loop)
        self._wake_group.start_soon(self._recheck_constraints_loop)
        self._wake_group.start_soon(self._watch_running_constraints)
        self._wake_group.start_soon(self._recover_crashed_loop)

    async def teardown(self, *exc_info: Any) -> None:
        if self._wake_group is not None:
            self._wake_group.cancel_scope.cancel()
        await super().teardown(*exc_info)

    # ---- constraints -------------------------------------------------------------

    def _host_snapshot(self) -> dict[str, Any]:
        if self._host is None:
            from bgtasks.settings import load_settings
            from triggers.host import HostSensors

            self._host = HostSensors(load_settings())
        return self._host.snapshot()

    async def _submit_run(self, flow_run: FlowRun) -> None:
        """Prefect's, and the concurrency slot its "deployment no longer exists" path keeps.

        Prefect 3.9's ``BaseWorker._submit_run`` returns early for a run whose deployment
        was deleted without releasing the slot taken for it: a worker with ``--limit 1``
        then never takes a run again. Every other path proposes Pending first (which is
        recorded here), so a run that was not proposed holds a slot nothing will release.
        """
        self._proposed.discard(flow_run.id)
        try:
            await super()._submit_run(flow_run)
        finally:
            if flow_run.id not in self._proposed:
                self._release_limit_slot(flow_run.id)  # idempotent
            self._proposed.discard(flow_run.id)

    async def _propose_pending_state(self, flow_run: FlowRun) -> bool:
        """Start a run only when its constraints hold on this host; otherwise it waits,
        Scheduled as ``AwaitingConstraints`` with the reasons in its message (no retry used).
        At its constraint deadline it runs anyway (tagged) or fails, per ``onDeadline``."""
        from prefect.states import Failed, Scheduled

        from triggers.constraints import describe, unmet

        self._proposed.add(flow_run.id)
        from triggers.waiting import (
            AWAITING,
            OVERRIDDEN_TAG,
            constraints_of,
            deadline_of,
            due_of,
            due_tag,
            waiting_until,
        )

        if flow_run.auto_scheduled and flow_run.deployment_id is not None and await self._paused(flow_run):
            # Prefect's scheduler can make a run just after a pause deleted the scheduled
            # ones (measured: 50-175 ms later); a paused task never runs on schedule.
            return await self._drop(flow_run, "its task is paused")
        if _before_start(flow_run):
            # Prefect's interval schedule takes startTime as an anchor (the phase) and creates
            # runs before it; the spec's startTime is the first run: those never run.
            return await self._drop(flow_run, "due before its task's startTime")
        await self._emit_missing_scheduled_event(flow_run)  # before any state change follows it
        await _until_due(flow_run)
        cons = constraints_of(flow_run.parameters)
        if cons is not None:
            missing = unmet(cons, await anyio.to_thread.run_sync(self._host_snapshot))
            if missing:
                now = datetime.now(UTC)
                due = due_of(flow_run.tags, flow_run.expected_start_time or now)
                message = describe(missing) + f" on {os.uname().nodename}"
                deadline = deadline_of(cons, due)
                prefetch = timedelta(seconds=get_current_settings().worker.prefetch_seconds)
                run_logger = self.get_flow_run_logger(flow_run)
                if deadline is not None and now + prefetch >= deadline:
                    if cons.fails_at_deadline:
                        await self.client.set_flow_run_state(flow_run.id, Failed(
                            message=f"Constraints still unmet at the deadline: {message}"), force=True)
                        run_logger.info("Failed at the constraint deadline: %s", message)
                        return False
                    await self.client.update_flow_run(flow_run.id, tags=[*flow_run.tags, OVERRIDDEN_TAG])
                    self._overridden.add(flow_run.id)  # runs without its constraints: never stopped for them
                    run_logger.info("Constraint deadline reached: running anyway (%s)", message)
                    return await super()._propose_pending_state(flow_run)
                if not any(t.startswith("bgtasks:due:") for t in flow_run.tags):
                    await self.client.update_flow_run(flow_run.id, tags=[*flow_run.tags, due_tag(due)])
                await self.client.set_flow_run_state(
                    flow_run.id,
                    Scheduled(name=AWAITING, scheduled_time=waiting_until(due, cons), message=message),
                    force=True)
                run_logger.info("Not started: %s", message)
                return False
        return await super()._propose_pending_state(flow_run)

    async def _emit_missing_scheduled_event(self, flow_run: FlowRun) -> None:
        """Emit the first state event of a run Prefect's scheduler made, if it is missing
        and recent enough to be followed (:func:`missing_scheduled_event`)."""
        from prefect.events import emit_event

        state = flow_run.state
        if not flow_run.auto_scheduled or state is None or state.name not in ("Scheduled", "Late"):
            return
        initial = state
        if state.name == "Late":  # the server's late-runs service moved it on; its event follows the first
            try:
                history = await self.client.read_flow_run_states(flow_run.id)
            except Exception as exc:  # noqa: BLE001 - the run starts anyway; only its events wait
                self._logger.debug("Reading the states of run %s failed: %s", flow_run.id, exc)
                return
            initial = min(history, key=lambda st: st.timestamp) if history else None
        if initial is not None and (leader := missing_scheduled_event(flow_run, initial, datetime.now(UTC))):
            emit_event(**leader)

    async def _drop(self, flow_run: FlowRun, why: str) -> bool:
        """Delete a run that must never start; False (not submitted)."""
        from prefect.exceptions import ObjectNotFound

        try:
            await self.client.delete_flow_run(flow_run.id)
        except ObjectNotFound:
            pass
        self._logger.info("Dropped run %s: %s", flow_run.id, why)
        return False

    async def _watch_running_constraints(self) -> None:
        """Stop a running run whose constraints stop holding (WorkManager stops its worker):
        it is cancelled, then waits again as AwaitingConstraints with the stop reason; that
        is neither a failure nor a retry. Opt out per task: ``stopWhenConstraintsLost: false``."""
        from prefect.states import Cancelling

        from triggers.constraints import describe, unmet
        from triggers.waiting import constraints_of

        while True:
            await anyio.sleep(RUNNING_CHECK_S)
            watched = {rid: (fr, cons) for rid, fr in self._running.items()
                       if rid not in self._stopping and rid not in self._overridden
                       and (cons := constraints_of(fr.parameters)) is not None and cons.stops_when_lost}
            if not watched:
                continue
            try:
                snapshot = await anyio.to_thread.run_sync(self._host_snapshot)
                for rid, (fr, cons) in watched.items():
                    missing = unmet(cons, snapshot)
                    if missing:
                        reason = f"Stopped: constraints lost on {os.uname().nodename}: {describe(missing)}"
                        self._stopping[rid] = reason
                        # Not forced: a run that has just finished (its process lingers a moment
                        # for its heartbeat) stays finished; the server refuses the transition.
                        result = await self.client.set_flow_run_state(rid, Cancelling(message=reason))
                        if result.status.value != "ACCEPT":
                            self._stopping.pop(rid, None)
                            continue
                        self.get_flow_run_logger(fr).info(reason)
            except Exception as exc:  # noqa: BLE001 - the next round retries
                self._logger.debug("Running-constraints check failed: %s", exc)

    async def _requeue_stopped(self, flow_run: FlowRun) -> None:
        """After a stopped run's process is gone: back to AwaitingConstraints, due now."""
        from prefect.states import Scheduled

        from triggers.waiting import AWAITING, constraints_of, due_tag, waiting_until

        reason = self._stopping.pop(flow_run.id)
        # Prefect's cancellation manager marks the run Cancelled a moment after its process
        # ended: wait for that, or it would overwrite the waiting state.
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            current = await self.client.read_flow_run(flow_run.id)
            if current.state is None or current.state.type.value not in ("RUNNING", "CANCELLING", "PENDING"):
                break
            await anyio.sleep(0.2)
        now = datetime.now(UTC)
        tags = [t for t in flow_run.tags if not t.startswith("bgtasks:due:")] + [due_tag(now)]
        await self.client.update_flow_run(flow_run.id, tags=tags)
        await self.client.set_flow_run_state(flow_run.id, Scheduled(
            name=AWAITING, scheduled_time=waiting_until(now, constraints_of(flow_run.parameters)),
            message=reason), force=True)

    async def _recheck_constraints_loop(self) -> None:
        """The slow re-check for a host without a trigger daemon: release the pool's waiting
        runs whose constraints hold here (the daemon does it at once on a change)."""
        while True:
            await anyio.sleep(CONSTRAINT_RECHECK_S)
            try:
                await self._release_waiting()
            except Exception as exc:  # noqa: BLE001 - the next round retries
                self._logger.debug("Constraint re-check failed: %s", exc)

    async def _release_waiting(self) -> int:
        """Release the pool's waiting runs whose constraints hold here (as the daemon does)."""
        from triggers.waiting import releasable, waiting_filter

        resp = await self.client.request("POST", "/flow_runs/filter", json=waiting_filter(self._work_pool_name))
        runs = resp.json()
        if not runs:
            return 0
        snapshot = await anyio.to_thread.run_sync(self._host_snapshot)
        released = releasable(runs, snapshot, f"Constraints hold on {os.uname().nodename}: released by the worker")
        for run_id, body in released:
            await self.client.request("POST", "/flow_runs/{id}/set_state", path_params={"id": run_id}, json=body)
        return len(released)

    # ---- missed runs -------------------------------------------------------------

    async def _paused(self, flow_run: FlowRun) -> bool:
        """Whether the run's deployment is paused now (read fresh: pause must win at once)."""
        from prefect.exceptions import ObjectNotFound

        try:
            return bool((await self.client.read_deployment(flow_run.deployment_id)).paused)
        except ObjectNotFound:
            return False

    async def get_and_submit_flow_runs(self) -> Any:
        await self._catch_up()
        try:
            return await super().get_and_submit_flow_runs()
        finally:
            # Every slot taken: runs may be left in the queues, so a finished run should
            # look for them (whichever loop polled: the wake loop or Prefect's own).
            self._backlog = self._limiter is not None and self._limiter.available_tokens == 0

    async def _catch_up(self) -> None:
        """Apply the periodic tasks' catch-up policies before polling (:mod:`bgtasks.catchup`):
        at start with the look for occurrences nobody scheduled, then at most every
        ``CATCH_UP_EVERY_S``."""
        from bgtasks import catchup
        from bgtasks.settings import load_settings

        if not self._caught_up_once:
            # Nothing is polled before the start-up pass: a missed run must not start meanwhile.
            async with self._first_catch_up:
                if not self._caught_up_once:
                    await self._catch_up_pass(catchup, load_settings)
            return
        now = time.monotonic()
        if self._catching_up or (self._caught_up_at is not None
                                 and now - self._caught_up_at < catchup.CATCH_UP_EVERY_S):
            return  # one pass at a time (the wake loop and Prefect's own poll loop both poll)
        await self._catch_up_pass(catchup, load_settings)

    async def _catch_up_pass(self, catchup: Any, load_settings: Any) -> None:
        self._catching_up = True
        first = not self._caught_up_once
        try:
            done = await catchup.apply(
                self.client, self._work_pool_name, load_settings().worker.misfire_grace_s,
                datetime.now(UTC), self._logger, look_for_unscheduled=first)
            self._caught_up_once = True
            if first and any(done.values()):
                self._logger.info("Catch-up at start: %s", done)
        except Exception:  # noqa: BLE001 - polling must go on; the next poll tries again
            self._logger.warning("Catch-up of missed runs failed", exc_info=True)
        finally:
            self._caught_up_at = time.monotonic()
            self._catching_up = False

    # ---- crashed runs ------------------------------------------------------------

    async def _recover_crashed_loop(self) -> None:
        """Retry the pool's crashed runs (:mod:`bgtasks.crash`): told by the Crashed event,
        and a scan at start and every ``CRASH_SCAN_S`` for crashes while no worker listened."""
        while True:
            try:
                await self._scan_crashed()
            except Exception:  # noqa: BLE001 - the next round retries
                self._logger.warning("Crashed-runs scan failed; retrying in %gs", CRASH_SCAN_S, exc_info=True)
            try:
                await self._scan_failed_triggers()
            except Exception:  # noqa: BLE001 - the next round retries
                self._logger.warning("Failed-triggers scan failed; retrying in %gs", CRASH_SCAN_S, exc_info=True)
            await anyio.sleep(CRASH_SCAN_S)

    async def _scan_crashed(self) -> None:
        from prefect.client.schemas.filters import (
            FlowRunFilter,
            FlowRunFilterState,
            FlowRunFilterStateType,
            FlowRunFilterTags,
            WorkPoolFilter,
            WorkPoolFilterName,
        )
        from prefect.client.schemas.sorting import FlowRunSort

        from deployments.mapping import TAG

        runs = await self.client.read_flow_runs(
            flow_run_filter=FlowRunFilter(
                state=FlowRunFilterState(type=FlowRunFilterStateType(any_=["CRASHED"])),
                tags=FlowRunFilterTags(all_=[TAG])),
            work_pool_filter=WorkPoolFilter(name=WorkPoolFilterName(any_=[self._work_pool_name])),
            sort=FlowRunSort.EXPECTED_START_TIME_DESC, limit=CRASH_SCAN_LIMIT)
        for run in runs:
            if str(run.id) not in self._settled:
                await self._recover_crashed(str(run.id))

    async def _recover_crashed(self, run_id: str) -> None:
        """Put one crashed run back as AwaitingRetry, mark it Completed when its handler had
        finished, or leave it Crashed when its retry policy is spent."""
        from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
        from prefect.states import AwaitingRetry, Completed

        from bgtasks.crash import attempts_of, decide
        from deployments.mapping import TAG
        from flows._handler import parse_task_spec

        if run_id in self._recovering or run_id in self._settled:
            return
        self._recovering.add(run_id)
        try:
            run = await self.client.read_flow_run(run_id)
            if run.state is None or run.state.type.value != "CRASHED" or TAG not in (run.tags or []):
                return
            task_runs = await self.client.read_task_runs(
                flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[run.id])))
            states = await self.client.read_flow_run_states(run.id)
            crashes = sum(st.type.value == "CRASHED" for st in states)
            attempts = attempts_of(task_runs, states)
            run_logger = self.get_flow_run_logger(run)
            why = run.state.message or "crashed"
            if attempts.completed:
                await self.client.set_flow_run_state(run.id, Completed(
                    message=f"The handler had completed before the run crashed ({why}); not run again"))
                run_logger.info("Crashed after its handler completed: marked Completed, not run again")
                return
            try:
                spec = parse_task_spec(run.parameters.get("task"), run.parameters.get("data"))
            except Exception:  # noqa: BLE001 - a definition we cannot read: no policy
                spec = None
            decision = decide(spec.retry_policy if spec is not None else None, attempts, crashes)
            if not decision.retry:
                self._settled.add(run_id)
                run_logger.info("Crashed and not retried: %s", decision.reason)
                return
            at = datetime.now(UTC) + timedelta(seconds=decision.delay_s)
            result = await self.client.set_flow_run_state(run.id, AwaitingRetry(
                scheduled_time=at, message=f"Crashed ({why}); {decision.reason}, in {decision.delay_s:g}s"))
            if result.status.value == "ACCEPT":
                run_logger.info("Crashed: %s, in %gs", decision.reason, decision.delay_s)
                self._wake_at(at)
        finally:
            self._recovering.discard(run_id)

    # ---- failed trigger actions -----------------------------------------------------

    async def _scan_failed_triggers(self) -> None:
        """Re-run the trigger actions of the last ``TRIGGER_LOOKBACK`` that the server
        refused as busy (the failure event may have come while no worker listened, or
        its triggering event was not stored yet)."""
        horizon = time.monotonic() - 2 * TRIGGER_LOOKBACK.total_seconds()
        for key in [k for k, at in self._triggers_done.items() if at < horizon]:
            del self._triggers_done[key]
        for failure in await read_failed_triggers(self.client, TRIGGER_LOOKBACK):
            await self._rerun_trigger(failure)

    async def _rerun_trigger_logged(self, failure: Any) -> None:
        try:
            await self._rerun_trigger(failure, wait_s=30)
        except Exception:  # noqa: BLE001 - the next scan retries
            self._logger.warning("Re-running a failed trigger action failed; the next scan retries it",
                                 exc_info=True)

    async def _rerun_trigger(self, failure: Any, wait_s: float = 0) -> None:
        """Create the run a trigger's automation failed to create, with the action's own
        idempotency key: however often this runs (and on however many workers), one run."""
        from prefect.events.filters import EventFilter, EventIDFilter, EventOccurredFilter
        from prefect.exceptions import ObjectNotFound

        from deployments.triggers import event_parameters

        key = failure.idempotency_key
        if key in self._triggers_done or key in self._triggers_busy:
            return
        self._triggers_busy.add(key)
        try:
            try:
                dep = await self.client.read_deployment(failure.deployment_id)
            except ObjectNotFound:  # the task was deleted since
                self._triggers_done[key] = time.monotonic()
                return
            if dep.work_pool_name != self._work_pool_name or dep.paused:
                # Another pool's workers see it too; a paused task's triggers are off.
                self._triggers_done[key] = time.monotonic()
                return
            since = datetime.now(UTC) - 2 * TRIGGER_LOOKBACK
            flt = EventFilter(occurred=EventOccurredFilter(since=since), id=EventIDFilter(id=[failure.event_id]))
            deadline = time.monotonic() + wait_s
            while not (found := await self.client.read_events(filter=flt, limit=1)).events:
                if time.monotonic() >= deadline:
                    self._logger.info("Trigger of task %s: Prefect's action failed (%s); its event is not "
                                      "stored yet, the next scan re-runs it", dep.name, failure.reason)
                    return
                await anyio.sleep(1)  # the server stores events in batches
            run = await self.client.create_flow_run_from_deployment(
                dep.id, parameters=event_parameters(found.events[0]), idempotency_key=key)
            self._triggers_done[key] = time.monotonic()
            # The same key returns the run an earlier re-run made (e.g. before a restart).
            self._logger.info("Trigger of task %s: Prefect's action failed (%s); its run is %s",
                              dep.name, failure.reason, run.id)
        finally:
            self._triggers_busy.discard(key)

    # ---- being told ------------------------------------------------------------

    async def _listen_for_runs(self) -> None:
        """Poll as soon as a run of this pool is scheduled (or at its time)."""
        from prefect.events.clients import get_events_subscriber
        from prefect.events.filters import EventFilter, EventNameFilter

        from deployments.triggers import ACTION_FAILED, retryable_failure

        flt = EventFilter(event=EventNameFilter(name=[
            "prefect.flow-run.Scheduled", "prefect.flow-run.AwaitingRetry", "prefect.flow-run.Crashed",
            ACTION_FAILED]))
        while True:
            try:
                async with get_events_subscriber(filter=flt, reconnection_attempts=10) as sub:
                    # Runs scheduled before the stream was open (at start, or while it was
                    # reconnecting) sent events nobody heard: look for them once now.
                    self._wake_at(None)
                    async for event in sub:
                        if event.event == ACTION_FAILED:
                            failure = retryable_failure(event)
                            if failure is not None and self._wake_group is not None:
                                self._wake_group.start_soon(self._rerun_trigger_logged, failure)
                            continue
                        if not self._is_ours(event):
                            continue
                        if event.event == "prefect.flow-run.Crashed":
                            if self._wake_group is not None:
                                self._wake_group.start_soon(
                                    self._recover_crashed, event.resource.id.removeprefix("prefect.flow-run."))
                        else:
                            self._wake_at(_scheduled_time(event))
            except Exception as exc:  # the safety-net poll keeps working meanwhile
                self._logger.debug("Event stream interrupted (%s); reconnecting", exc)
                await anyio.sleep(2)

    def _is_ours(self, event: Any) -> bool:
        pool = self._work_pool
        if pool is None:
            return True
        wanted = f"prefect.work-pool.{pool.id}"
        return any(r.id == wanted for r in event.related)

    def _wake_at(self, when: datetime | None) -> None:
        """Remember to poll at ``when`` (minus the prefetch window), or now."""
        at = time.time()
        if when is not None:
            at = max(at, when.timestamp() - get_current_settings().worker.prefetch_seconds)
        if len(self._due) < MAX_PENDING_WAKES:
            heapq.heappush(self._due, at)
        if self._due_changed is not None:
            self._due_changed.set()

    async def _wake_loop(self) -> None:
        """One timer for all wake-ups: sleep until the earliest, poll, repeat.

        Polls are at least ``MIN_POLL_INTERVAL_S`` apart: every poll makes the
        server mark the pool's queues ready, and on SQLite a burst of those
        locks the database (measured: 60 s stalls with a poll after every
        event and every finished run). Wake-ups that come due meanwhile are
        served by the one poll that follows.
        """
        last_poll = 0.0
        while True:
            now = time.time()
            due = False
            while self._due and self._due[0] <= now:
                heapq.heappop(self._due)
                due = True
            if due:
                wait = last_poll + MIN_POLL_INTERVAL_S - time.monotonic()
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
        starter = ZygoteStarter(
            self._zygote, dict(configuration.env), self._ctx.control_channel, await self._entrypoint_of(flow_run)
        )
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
            self._overridden.discard(flow_run.id)
            if flow_run.id in self._stopping:
                await self._requeue_stopped(flow_run)
            # A slot is free again: if runs were left queued, take one now
            # rather than at the next periodic poll.
            if self._backlog:
                self._wake_at(None)
        if execution is None or execution.status_code is None or not execution.crash_unreported:
            # Exited cleanly, or its crash is already reported by the executor: BaseWorker must not
            # report it a second time (a second Crashed would land after the crash policy has put
            # the run back as AwaitingRetry, and crash the re-run before it starts).
            return ProcessWorkerResult(status_code=0, identifier=str(handle.pid))
        return ProcessWorkerResult(status_code=execution.status_code, identifier=str(execution.handle.pid))


async def read_failed_triggers(client: Any, lookback: timedelta) -> list[Any]:
    """The bgtasks trigger actions of the last ``lookback`` worth running again
    (:func:`deployments.triggers.retryable_failure`), oldest first."""
    from prefect.events.filters import (
        EventFilter,
        EventNameFilter,
        EventOccurredFilter,
        EventResourceFilter,
    )

    from deployments.triggers import ACTION_FAILED, retryable_failure

    now = datetime.now(UTC)
    page = await client.read_events(filter=EventFilter(
        occurred=EventOccurredFilter(since=now - lookback, until=now),
        event=EventNameFilter(name=[ACTION_FAILED]),
        resource=EventResourceFilter(id_prefix=["prefect.automation."])), limit=EVENTS_PAGE)
    found = []
    while True:
        found.extend(f for f in map(retryable_failure, page.events) if f is not None)
        if page.next_page is None:
            return found[::-1]  # the API answers newest first
        page = await client.read_events_page(page.next_page)


async def _until_due(flow_run: FlowRun) -> None:
    """Wait until the run is due. Runs are picked up to ``prefetch_seconds`` early and the
    server's own check (WaitForScheduledTime) rounds the wait to whole seconds, so without
    this a run could start up to half a second before its time."""
    state = flow_run.state
    due = state.state_details.scheduled_time if state is not None and state.is_scheduled() else None
    due = due or flow_run.expected_start_time
    while due is not None and (wait := (due - datetime.now(UTC)).total_seconds()) > 0:
        await anyio.sleep(wait)  # again if the wall clock was slewed meanwhile


def missing_scheduled_event(flow_run: FlowRun, initial: Any, now: datetime) -> dict[str, Any] | None:
    """The ``prefect.flow-run.Scheduled`` event Prefect's scheduler never emitted for a
    run it created (``emit_event`` keyword arguments), or None when nothing is missing.
    ``initial``: the run's first state.

    The server emits an event for every later state change, with the state's id as the
    event's id and, when the previous state is less than 5 minutes old, that state's id
    as the event it ``follows``. Prefect's automations hold an event until the one it
    follows has been seen, for up to 15 minutes (PRECEDING_EVENT_LOOKBACK). A periodic
    run created less than 5 minutes before it is due (any task's first runs; every run
    of a task due again within minutes after a pause or a restart) thus had all its
    state events held for 15 minutes: the crashed-runs automation saw its first
    heartbeat but not its ``Completed`` and tried to mark it Crashed (refused: the run
    was final), and a user's automation on its ``Completed`` acted 15 minutes late. This is
    that first event, with the id and time of the run's initial state.
    """
    from prefect.client.schemas.objects import StateType

    state = initial
    if (not flow_run.auto_scheduled or state.type != StateType.SCHEDULED or state.name != "Scheduled"
            or state.timestamp is None or now - state.timestamp >= FOLLOWS_WINDOW):
        return None  # not the scheduler's initial state, or too old for a state event to follow it
    related = [{"prefect.resource.id": f"prefect.flow.{flow_run.flow_id}", "prefect.resource.role": "flow"}]
    if flow_run.deployment_id is not None:
        related.append({"prefect.resource.id": f"prefect.deployment.{flow_run.deployment_id}",
                        "prefect.resource.role": "deployment"})
    if flow_run.work_queue_id is not None:
        related.append({"prefect.resource.id": f"prefect.work-queue.{flow_run.work_queue_id}",
                        "prefect.resource.role": "work-queue"})
    related += [{"prefect.resource.id": f"prefect.tag.{tag}", "prefect.resource.role": "tag"}
                for tag in sorted(flow_run.tags or [])]
    return {
        "event": "prefect.flow-run.Scheduled",
        "id": state.id,
        "occurred": state.timestamp,
        "resource": {
            "prefect.resource.id": f"prefect.flow-run.{flow_run.id}",
            "prefect.resource.name": flow_run.name,
            "prefect.run-count": str(flow_run.run_count),
            "prefect.state-message": state.message or "",
            "prefect.state-name": "Scheduled",
            "prefect.state-timestamp": state.timestamp.isoformat(),
            "prefect.state-type": "SCHEDULED",
        },
        "related": related,
        "payload": {"intended": {"from": None, "to": "SCHEDULED"},
                    "emitted_by": "bgtasks worker: Prefect's scheduler creates runs without this event"},
    }


def _before_start(flow_run: FlowRun) -> bool:
    """A run Prefect's scheduler made due (by more than a second) before its periodic task's
    ``schedule.startTime`` (run-now and triggered runs are not the schedule's)."""
    if not flow_run.auto_scheduled:
        return False
    schedule = ((flow_run.parameters or {}).get("task") or {}).get("schedule") or {}
    start, due = schedule.get("startTime"), flow_run.expected_start_time
    if schedule.get("type") != "periodic" or not start or due is None:
        return False
    first = datetime.fromisoformat(str(start).replace("Z", "+00:00"))
    return due < first - timedelta(seconds=1)


def _scheduled_time(event: Any) -> datetime | None:
    try:
        raw = event.payload["validated_state"]["state_details"]["scheduled_time"]
    except (KeyError, TypeError):
        return None
    if not raw:
        return None
    t = datetime.fromisoformat(str(raw).replace("Z", "+00:00"))
    return t if t.tzinfo else t.replace(tzinfo=UTC)
