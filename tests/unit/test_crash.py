"""Crashed runs: counting the tries a crash used and deciding on a retry (bgtasks.crash)."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace as NS

from bgtasks.crash import MAX_START_CRASHES, Attempts, attempts_of, crash_detection, decide, remaining_retries
from bgtasks.models import RetryPolicy

T0 = datetime(2026, 1, 1, tzinfo=UTC)
POLICY = RetryPolicy.model_validate(
    {"maxRetries": 3, "initialBackoffMs": 1000, "backoffMultiplier": 2, "maxBackoffMs": 3000, "jitter": 0})


def _states(*kinds: str) -> list[NS]:
    return [NS(type=NS(value=k), timestamp=T0 + timedelta(seconds=i)) for i, k in enumerate(kinds)]


def _task_run(kind: str, run_count: int) -> NS:
    return NS(state=NS(type=NS(value=kind)), run_count=run_count)


def test_tries_come_from_task_runs_and_a_crash_out_of_running_counts_one() -> None:
    assert attempts_of([_task_run("FAILED", 2)], _states("SCHEDULED", "PENDING", "RUNNING", "CRASHED")).used == 2
    # The killed process's task-run events never arrived: the crash out of Running is one try.
    assert attempts_of([], _states("SCHEDULED", "PENDING", "RUNNING", "CRASHED")) == Attempts(1, False)
    # Crashed at start-up (out of Pending): no try used.
    assert attempts_of([], _states("SCHEDULED", "PENDING", "CRASHED")).used == 0
    # A try cancelled because constraints were lost used nothing; a completed one is seen.
    assert attempts_of([_task_run("CANCELLED", 1)], _states("PENDING", "CANCELLED")).used == 0
    assert attempts_of([_task_run("COMPLETED", 1)], _states("RUNNING", "CRASHED")).completed


def test_decide_follows_the_policy() -> None:
    rng = random.Random(1)
    d = decide(POLICY, Attempts(1, False), crashes=1, rng=rng)
    assert d.retry and d.delay_s == 1.0 and "attempt 2 of 4" in d.reason
    assert decide(POLICY, Attempts(3, False), crashes=1, rng=rng).delay_s == 3.0  # capped (4 s > 3 s)
    spent = decide(POLICY, Attempts(4, False), crashes=2, rng=rng)
    assert not spent.retry and "exhausted" in spent.reason
    assert not decide(None, Attempts(1, False), crashes=1).retry  # no policy: one try
    assert decide(None, Attempts(0, False), crashes=1).retry  # never started: restarted
    assert not decide(None, Attempts(0, False), crashes=2 + MAX_START_CRASHES).retry  # but not forever


def test_remaining_retries_after_earlier_runs() -> None:
    assert [remaining_retries(POLICY, used) for used in range(6)] == [3, 2, 1, 0, 0, 0]


def test_the_automation_watches_heartbeats_and_running_and_never_forces() -> None:
    a = crash_detection("bgtasks", 45)
    assert a.trigger.after == {"prefect.flow-run.heartbeat", "prefect.flow-run.Pending", "prefect.flow-run.Running"}
    assert "prefect.flow-run.Completed" in a.trigger.expect and a.trigger.within == timedelta(seconds=45)
    assert a.trigger.posture == "Proactive" and a.actions[0].force is False
