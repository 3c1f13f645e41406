"""Retry policy and timeouts, as Prefect applies them in a real run."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from bgtasks.models import RetryPolicy, TaskStatus
from bgtasks.retry import backoff_ms
from tests.fixtures import pid_alive, records, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("worker")]


async def _run_once(manager: Any, body: dict[str, Any], settle: bool = True) -> Any:
    """Create a one-time task and wait for its run to finish.

    With ``settle``, also wait until the handler's task run is final in the API:
    task-run states reach the server as events, after the flow run's own final
    state, and the attempt count is read from them.
    """
    task = await manager.create({"schedule": {"type": "one-time"}, "handler": "demo", **body})

    async def done() -> Any:
        t = await manager.get(task.id)
        return t if t.result is not None else None

    t = await wait_for(done, 180, f"task {body['name']} to finish")
    if settle:
        await _task_run(manager.client, t.result.run_id, final=True)
        t = await manager.get(task.id)
    return t


async def _task_run(client: Any, run_id: str, final: bool) -> Any:
    """The flow run's one task run, once the server has it (final, if asked)."""
    from uuid import UUID

    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    async def check() -> Any:
        runs = await client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[UUID(run_id)])))
        if len(runs) == 1 and (not final or (runs[0].state is not None and runs[0].state.is_final())):
            return runs[0]
        return None

    return await wait_for(check, 120, f"the task run of {run_id}")


async def _retry_delays(client: Any, run_id: str) -> list[float]:
    """The delays Prefect scheduled between attempts, from the task run's AwaitingRetry states."""
    task_run = await _task_run(client, run_id, final=True)

    async def states() -> Any:
        got = await client.read_task_run_states(task_run.id)
        return got if any(s.type.value == "COMPLETED" or s.name == "Failed" for s in got) else None

    history = await wait_for(states, 60, "the task run's states to be recorded")
    return [
        (s.state_details.scheduled_time - s.timestamp).total_seconds()
        for s in sorted(history, key=lambda s: s.timestamp)
        if s.name == "AwaitingRetry"
    ]


async def test_fails_twice_then_succeeds_on_attempt_3(manager: Any, client: Any, tmp_path: Path) -> None:
    policy = {"maxRetries": 4, "initialBackoffMs": 1000, "backoffMultiplier": 3, "maxBackoffMs": 2000, "jitter": 0.2}
    rec = tmp_path / "rec"
    task = await _run_once(manager, {"name": "flaky", "retryPolicy": policy, "data": {"failTimes": 2, "recordTo": str(rec)}})
    assert task.status == TaskStatus.COMPLETED
    assert task.result.success and task.result.attempts == 3 and task.result.data["attempt"] == 3
    assert [r["attempt"] for r in records(rec)] == [1, 2, 3]

    delays = await _retry_delays(client, task.result.run_id)
    p = RetryPolicy.model_validate(policy)
    assert len(delays) == 2
    for i, d in enumerate(delays):
        hi = backoff_ms(p, i) / 1000  # 1.0, then min(3.0, 2.0) = 2.0: the cap
        assert hi * (1 - p.jitter) - 0.01 <= d <= hi + 0.01, (i, d)
        assert d <= p.max_backoff_ms / 1000 + 0.01
    # Each attempt started no earlier than its scheduled delay after the previous one.
    times = [r["at"] for r in records(rec)]
    from datetime import datetime

    starts = [datetime.fromisoformat(t) for t in times]
    for (a, b), d in zip(zip(starts, starts[1:]), delays):
        assert b - a >= timedelta(seconds=d)


async def test_retries_exhausted_fails_with_error_in_result(manager: Any) -> None:
    task = await _run_once(manager, {
        "name": "always-fails",
        "retryPolicy": {"maxRetries": 2, "initialBackoffMs": 200, "maxBackoffMs": 400},
        "data": {"fail": True, "errorMessage": "the remote said no"},
    })
    assert task.status == TaskStatus.FAILED
    assert not task.result.success and task.result.attempts == 3
    assert "the remote said no" in task.result.error


async def test_failure_excluded_by_retry_on_is_not_retried(manager: Any, tmp_path: Path) -> None:
    rec = tmp_path / "rec"
    task = await _run_once(manager, {
        "name": "not-retryable",
        "retryPolicy": {"maxRetries": 3, "initialBackoffMs": 100, "retryOn": {"exceptions": ["ConnectionError"]}},
        "data": {"fail": True, "errorType": "ValueError", "recordTo": str(rec)},
    })
    assert task.status == TaskStatus.FAILED and task.result.attempts == 1
    assert len(records(rec)) == 1


async def test_failure_matching_retry_on_message_is_retried(manager: Any) -> None:
    task = await _run_once(manager, {
        "name": "retry-by-message",
        "retryPolicy": {"maxRetries": 2, "initialBackoffMs": 100,
                        "retryOn": {"exceptions": ["KeyError"], "messagePattern": "temporar(y|ily)"}},
        "data": {"failTimes": 1, "errorType": "ValueError", "errorMessage": "temporarily unavailable"},
    })
    assert task.status == TaskStatus.COMPLETED and task.result.attempts == 2


#: Generous: the handler must have started (and recorded its attempt) well before it.
TIMEOUT_MS = 8000


@pytest.mark.parametrize("block_signals", [False, True], ids=["interruptible", "signals-blocked"])
async def test_timeout_stops_the_handler(manager: Any, tmp_path: Path, block_signals: bool) -> None:
    rec = tmp_path / "rec"
    task = await _run_once(manager, {
        "name": f"too-slow-{block_signals}",
        "timeoutMs": TIMEOUT_MS,
        "data": {"sleepSeconds": 600, "blockSignals": block_signals, "recordTo": str(rec)},
    }, settle=False)
    assert task.status == TaskStatus.FAILED
    assert task.result.state == "TimedOut" and not task.result.success
    [attempt] = records(rec)
    await wait_for(lambda: _false(pid_alive(attempt["pid"])), 60, "the handler's process to be gone")


async def test_a_timed_out_attempt_is_retried_by_the_policy(manager: Any, tmp_path: Path) -> None:
    """The timeout is per attempt and a timeout is a failure the policy retries."""
    rec = tmp_path / "rec"
    task = await _run_once(manager, {
        "name": "slow-once",
        "timeoutMs": TIMEOUT_MS,
        "retryPolicy": {"maxRetries": 2, "initialBackoffMs": 100, "maxBackoffMs": 100},
        "data": {"sleepSeconds": 600, "sleepAttempts": 1, "recordTo": str(rec)},
    })
    assert task.status == TaskStatus.COMPLETED and task.result.success
    assert task.result.attempts == 2 and task.result.data["attempt"] == 2
    assert [r["attempt"] for r in records(rec)] == [1, 2]


async def _false(value: bool) -> bool:
    return not value
