"""Crashed runs: how they are detected and how they are retried.

Detection. A run's process emits a ``prefect.flow-run.heartbeat`` event every
``BGTASKS_WORKER_HEARTBEAT_S`` (Prefect's ``PREFECT_FLOWS_HEARTBEAT_FREQUENCY``,
at least 30 s). When the process dies with its worker (kill -9 of the service,
a host that loses power), nobody reports the run: it would stay Running
forever. The automation :func:`crash_detection` marks a
run of ours Crashed when no heartbeat and no state change follows a heartbeat
within ``BGTASKS_WORKER_CRASH_AFTER_S`` (the window also opens when the run enters
Pending or Running, for a worker or process that dies before the first heartbeat
is delivered). A run whose process alone dies while
its worker lives is reported Crashed by the worker at once.

Retry. A crash is not the handler's failure, but it may be the handler's
doing (it ran out of memory), so it is retried by the task's retry policy:
the worker puts the run back as ``AwaitingRetry`` after the policy's backoff,
and the re-run's handler gets only the attempts that are left. The attempts
used are the attempt task runs of the flow run that ran (Prefect records each
try in the task run's ``run_count``); one that Completed means the handler
finished before the crash, so the run is marked Completed instead of running
the work twice. A run that crashed before its handler started (the process
died at start-up) used no attempt and is restarted, up to
``MAX_START_CRASHES`` times beyond its policy.

Pure, apart from the two small readers at the end.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from bgtasks.models import RetryPolicy
from bgtasks.retry import backoff_ms

#: Restarts of a run that crashed before its handler started, beyond its policy.
MAX_START_CRASHES = 3
#: The automation's name (one per Prefect server; bgtasks up keeps it current).
AUTOMATION_NAME = "bgtasks: crashed runs"
#: State changes that end a heartbeat window (any of them means the run is not lost).
_STATE_EVENTS = (
    "Completed", "Failed", "TimedOut", "Crashed", "Cancelled", "Cancelling", "Paused", "Suspended",
    "Scheduled", "AwaitingRetry", "AwaitingConstraints", "Late", "Pending", "Submitting", "Running", "Retrying",
)


def crash_detection(tag: str, within_s: float) -> Any:
    """The proactive automation that marks a silent run tagged ``tag`` Crashed."""
    from prefect.client.schemas.objects import StateType
    from prefect.events.actions import ChangeFlowRunState
    from prefect.events.schemas.automations import AutomationCore, EventTrigger, Posture

    return AutomationCore(
        name=AUTOMATION_NAME,
        description=(f"bgtasks: a run whose process sent no heartbeat for {within_s:g}s is Crashed "
                     "(its worker retries it by the task's retry policy)"),
        enabled=True,
        trigger=EventTrigger(
            match={"prefect.resource.id": "prefect.flow-run.*"},
            match_related={"prefect.resource.id": f"prefect.tag.{tag}", "prefect.resource.role": "tag"},
            # Pending and Running too (the server emits them): a worker that dies between
            # taking a run and starting it, or a process killed before its first heartbeat
            # reached the server, is still caught.
            after={"prefect.flow-run.heartbeat", "prefect.flow-run.Pending", "prefect.flow-run.Running"},
            expect={"prefect.flow-run.heartbeat", *(f"prefect.flow-run.{s}" for s in _STATE_EVENTS)},
            for_each={"prefect.resource.id"},
            posture=Posture.Proactive,
            threshold=1,
            within=timedelta(seconds=within_s),
        ),
        # Not forced: a run that has reached a final state meanwhile keeps it.
        actions=[ChangeFlowRunState(
            state=StateType.CRASHED,
            message=f"No heartbeat for {within_s:g}s: the run's process is gone (its worker or host died)",
        )],
    )


async def ensure_crash_detection(client: Any, tag: str, within_s: float) -> None:
    """Create the automation, or bring an existing one (another ``within``) up to date."""
    wanted = crash_detection(tag, within_s)
    existing = await client.read_automations_by_name(AUTOMATION_NAME)
    if not existing:
        await client.create_automation(wanted)
        return
    first, *extra = existing
    if first.trigger != wanted.trigger or first.actions != wanted.actions or not first.enabled:
        await client.delete_automation(first.id)
        await client.create_automation(wanted)
    for dup in extra:  # two `bgtasks up` racing at first start
        await client.delete_automation(dup.id)


@dataclass(frozen=True)
class Attempts:
    """What a crashed flow run's attempt task runs say."""

    used: int  # tries of the handler that started (each counts against the policy)
    completed: bool  # the handler finished before the crash


def attempts_of(task_runs: list[Any], states: list[Any]) -> Attempts:
    """Count the handler tries of a flow run from its task runs and its state history.

    Task runs reach the server as events sent by the run's process, so a process
    killed a moment after its handler began may leave no trace of that try; a
    crash straight out of Running counts as one try then (a crash out of Pending,
    at start-up, does not). A cancelled try (the run was stopped because its
    constraints were lost) used nothing: waiting for constraints burns no retry.
    """
    used = 0
    completed = False
    for tr in task_runs:
        kind = tr.state.type.value if tr.state is not None else None
        if kind == "CANCELLED":
            continue
        if kind == "COMPLETED":
            completed = True
        used += max(int(tr.run_count or 0), 1 if kind in ("RUNNING", "FAILED", "CRASHED", "COMPLETED") else 0)
    kinds = [st.type.value for st in sorted(states, key=lambda st: st.timestamp)]
    running_crashes = sum(1 for a, b in zip(kinds, kinds[1:]) if a == "RUNNING" and b == "CRASHED")
    return Attempts(used=max(used, running_crashes), completed=completed)


@dataclass(frozen=True)
class Decision:
    retry: bool
    delay_s: float
    reason: str


def decide(policy: RetryPolicy | None, attempts: Attempts, crashes: int,
           rng: random.Random | None = None) -> Decision:
    """Retry a crashed run or leave it Crashed, and after how long.

    ``crashes``: Crashed states in the run's history, this one included.
    """
    allowed = 1 + (policy.max_retries if policy is not None else 0)
    if attempts.used == 0:
        if crashes > allowed + MAX_START_CRASHES:
            return Decision(False, 0.0, f"crashed {crashes} times before its handler started")
        return Decision(True, 0.0, "crashed before its handler started: restarted")
    if attempts.used >= allowed:
        return Decision(False, 0.0, f"retries exhausted ({attempts.used} of {allowed} attempts used)")
    assert policy is not None
    delay = backoff_ms(policy, attempts.used - 1) * (1.0 - policy.jitter * (rng or random.Random()).random())
    return Decision(True, round(delay / 1000.0, 3),
                    f"attempt {attempts.used + 1} of {allowed} by the task's retry policy")


def remaining_retries(policy: RetryPolicy, used: int) -> int:
    """Retries a re-run's handler still has after ``used`` tries in earlier runs."""
    return max(0, policy.max_retries - used)
