"""Nothing lost when processes die: kill -9 of the worker (alone, or with the run's
process as when the host or the service dies), and of the Prefect server mid-run.

The session's server runs the crashed-runs automation (bgtasks.crash) with the
test setting ``BGTASKS_WORKER_CRASH_AFTER_S=45`` (heartbeat every 30 s).
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest

from bgtasks.settings import Settings
from tests.fixtures import ServerHandle, records, start_worker, wait_for

pytestmark = pytest.mark.integration

ONCE = {"type": "one-time", "startTime": "2099-01-01T00:00:00Z"}  # runs only when told
POLICY = {"maxRetries": 2, "initialBackoffMs": 1000, "backoffMultiplier": 2, "maxBackoffMs": 4000, "jitter": 0}


async def _states(client: Any, run_id: str) -> list[str]:
    return [s.name for s in sorted(await client.read_flow_run_states(UUID(run_id)), key=lambda s: s.timestamp)]


async def _attempts_started(rec: Path, n: int) -> list[dict[str, Any]] | None:
    got = records(rec)
    return got if len(got) >= n else None


def _kill_group(pid: int) -> None:
    """SIGKILL a process and its process group (the worker and its zygote; systemd's
    KillMode=control-group or a power cut take them all)."""
    try:
        os.killpg(os.getpgid(pid), signal.SIGKILL)
    except ProcessLookupError:
        pass


@pytest.mark.parametrize("handler_then", ["succeeds", "keeps-failing"])
async def test_worker_and_run_killed_the_run_is_crashed_then_retried_by_its_policy(
    prefect_server: ServerHandle, settings: Settings, manager: Any, client: Any, tmp_path: Path, handler_then: str
) -> None:
    """The crash uses one of the policy's three tries: the re-run completes once, or,
    when the handler keeps failing, gets the two tries that are left."""
    rec = tmp_path / "rec"
    fails = handler_then == "keeps-failing"
    task = await manager.create({
        "name": f"crash-killed-with-worker-{handler_then}", "handler": "demo", "schedule": ONCE, "retryPolicy": POLICY,
        "data": {"sleepSeconds": 600, "sleepRuns": 1, "recordTo": str(rec), "fail": fails},
    })
    first = await asyncio.to_thread(start_worker, settings, 2)
    second = None
    try:
        run_id = await manager.run_now(task.id)
        [attempt] = await wait_for(lambda: _attempts_started(rec, 1), 120, "the handler to start")
        assert first.part.pid is not None
        _kill_group(first.part.pid)
        os.kill(attempt["pid"], signal.SIGKILL)  # the run's own session (setsid)
        killed_at = time.monotonic()

        async def crashed() -> Any:
            run = await client.read_flow_run(UUID(run_id))
            return run if run.state.type.value == "CRASHED" else None

        run = await wait_for(crashed, settings.worker.crash_after_s + 120, "the automation to mark the run Crashed")
        print(f"\nkill -9 of worker and run -> Crashed after {time.monotonic() - killed_at:.1f}s "
              f"(heartbeat {settings.worker.heartbeat_s}s, crash after {settings.worker.crash_after_s:g}s)")
        assert "No heartbeat" in (run.state.message or "")

        second = await asyncio.to_thread(start_worker, settings, 2)  # the service manager restarts it

        final = "FAILED" if fails else "COMPLETED"

        async def finished() -> Any:
            run = await client.read_flow_run(UUID(run_id))
            return run if run.state.type.value == final else None

        await wait_for(finished, 180, f"the retried run to end {final}")
        attempts = records(rec)
        assert len(attempts) == (3 if fails else 2) and attempts[0]["pid"] != attempts[1]["pid"], attempts
        states = await _states(client, run_id)
        end = "Failed" if fails else "Completed"
        assert states.count(end) == 1 and "Crashed" in states and "AwaitingRetry" in states, states
        assert states.index("Crashed") < states.index("AwaitingRetry") < states.index(end), states
        retry = next(st for st in await client.read_flow_run_states(UUID(run_id)) if st.name == "AwaitingRetry")
        assert "attempt 2 of 3" in (retry.message or ""), retry.message  # the crash used one try
    finally:
        first.stop()
        if second is not None:
            second.stop()


async def test_worker_killed_alone_its_run_finishes_once(
    prefect_server: ServerHandle, settings: Settings, manager: Any, client: Any, tmp_path: Path
) -> None:
    """The run's process outlives its worker (its own session) and reports its own end;
    the restarted worker does not run it again."""
    rec = tmp_path / "rec"
    task = await manager.create({
        "name": "crash-worker-alone", "handler": "demo", "schedule": ONCE, "retryPolicy": POLICY,
        "data": {"sleepSeconds": 3, "recordTo": str(rec)},
    })
    first = await asyncio.to_thread(start_worker, settings, 2)
    second = None
    try:
        run_id = await manager.run_now(task.id)
        await wait_for(lambda: _attempts_started(rec, 1), 120, "the handler to start")
        assert first.part.pid is not None
        _kill_group(first.part.pid)
        second = await asyncio.to_thread(start_worker, settings, 2)
        result = await manager.wait_for_run(run_id, timeout_s=120)
        assert result.success
        assert len(records(rec)) == 1
        states = await _states(client, run_id)
        assert states.count("Completed") == 1 and "Crashed" not in states, states
        run = await client.read_flow_run(UUID(run_id))
        assert run.run_count == 1
    finally:
        first.stop()
        if second is not None:
            second.stop()


async def test_server_killed_mid_run_the_run_ends_right_and_nothing_is_lost(
    prefect_server: ServerHandle, settings: Settings, manager: Any, client: Any, tmp_path: Path
) -> None:
    rec = tmp_path / "rec"
    task = await manager.create({
        "name": "crash-server", "handler": "demo", "schedule": ONCE, "retryPolicy": POLICY,
        "data": {"sleepSeconds": 8, "recordTo": str(rec)},
    })
    before = {t.id for t in await manager.list()}
    w = await asyncio.to_thread(start_worker, settings, 2)
    try:
        run_id = await manager.run_now(task.id)
        await wait_for(lambda: _attempts_started(rec, 1), 120, "the handler to start")
        assert prefect_server.part.proc is not None
        prefect_server.part.proc.kill()  # kill -9
        prefect_server.part.proc.wait()
        await asyncio.to_thread(prefect_server.start)
        result = await manager.wait_for_run(run_id, timeout_s=settings.worker.crash_after_s + 240)
        assert result.success, result
        states = await _states(client, run_id)
        # Ended right: Completed once, never Crashed, and the handler ran once (a crash
        # followed by a re-run would also end "Completed once").
        assert states.count("Completed") == 1 and "Crashed" not in states, states
        assert len(records(rec)) == 1, records(rec)
        assert {t.id for t in await manager.list()} == before
    finally:
        w.stop()


# ---- a live worker, told by the Crashed event ---------------------------------------------


@pytest.fixture(scope="module")
def event_worker(prefect_server: ServerHandle, settings: Settings) -> Any:
    """A worker whose crashed-runs scan runs only at its start: whatever it does to a crash
    after that, it does because it was told by the Crashed event."""
    w = start_worker(settings, limit=2, env={"BGTASKS_WORKER_CRASH_SCAN_S": "3600"})
    yield w
    w.stop()


async def _final(manager: Any, client: Any, run_id: str) -> tuple[Any, list[str]]:
    """The run once it is Completed (a Crashed state is not the end here: the worker acts on it)."""
    async def completed() -> list[str] | None:
        states = await _states(client, run_id)
        return states if states[-1] == "Completed" else None

    states = await wait_for(completed, 180, f"run {run_id} to complete")
    return await manager.wait_for_run(run_id, timeout_s=60), states


async def test_a_live_worker_retries_a_crashed_run_when_told_by_the_event(
    event_worker: Any, manager: Any, client: Any, tmp_path: Path
) -> None:
    """The run's process is killed, its worker lives: Crashed at once, then put back by the
    same worker (its periodic scan is an hour away) and completed by the policy's second try."""
    rec = tmp_path / "rec"
    task = await manager.create({
        "name": "crash-child-alone", "handler": "demo", "schedule": ONCE,
        "retryPolicy": {"maxRetries": 1, "initialBackoffMs": 200, "maxBackoffMs": 200, "jitter": 0},
        "data": {"sleepSeconds": 600, "sleepRuns": 1, "recordTo": str(rec)},
    })
    run_id = await manager.run_now(task.id)
    [first] = await wait_for(lambda: _attempts_started(rec, 1), 120, "the handler to start")
    os.kill(first["pid"], signal.SIGKILL)
    result, states = await _final(manager, client, run_id)
    assert result.success, result
    assert states.count("Crashed") == 1 and states.index("Crashed") < states.index("AwaitingRetry"), states
    assert [r["run"] for r in records(rec)] == [run_id, run_id]  # the same run, twice: the crash and the re-run
    log = event_worker.part.log_path.read_text()
    assert "Crashed: attempt 2 of 2 by the task's retry policy" in log


async def test_a_crash_before_the_handler_started_uses_no_try(
    event_worker: Any, manager: Any, client: Any, tmp_path: Path
) -> None:
    """No retries in the policy: a crash that used the only try would end the run Crashed."""
    from prefect.states import Crashed, Pending

    rec = tmp_path / "rec"
    task = await manager.create({"name": "crash-at-start", "handler": "demo", "schedule": ONCE,
                                 "retryPolicy": {"maxRetries": 0}, "data": {"recordTo": str(rec)}})
    run_id = await manager.run_now(task.id, delay_s=3600)  # no worker takes it on its own
    # What a process that died at start-up leaves: Pending, then Crashed, no task run.
    await client.set_flow_run_state(UUID(run_id), Pending(), force=True)
    await client.set_flow_run_state(UUID(run_id), Crashed(message="process died at start-up"), force=True)
    result, states = await _final(manager, client, run_id)
    assert result.success and result.attempts == 1, result
    assert "Crashed" in states and len(records(rec)) == 1
    assert "crashed before its handler started: restarted" in event_worker.part.log_path.read_text()


async def test_a_crash_after_the_handler_completed_is_marked_completed(
    event_worker: Any, manager: Any, client: Any, tmp_path: Path
) -> None:
    from prefect.states import Crashed, Running

    rec = tmp_path / "rec"
    task = await manager.create({"name": "crash-after-work", "handler": "demo", "schedule": ONCE,
                                 "retryPolicy": POLICY, "data": {"recordTo": str(rec)}})
    run_id = await manager.run_now(task.id)
    await manager.wait_for_run(run_id, timeout_s=120)
    # What a process that died after its handler returned leaves: the handler's task run
    # Completed, the flow run Running, then Crashed.
    await client.set_flow_run_state(UUID(run_id), Running(), force=True)
    await client.set_flow_run_state(UUID(run_id), Crashed(message="died after the work"), force=True)

    async def completed_again() -> list[str] | None:
        states = await _states(client, run_id)
        return states if states[-1] == "Completed" and "Crashed" in states else None

    states = await wait_for(completed_again, 120, "the run to be marked Completed")
    assert states.count("Running") == 2  # the first run, and the forced one: never a re-run
    assert len(records(rec)) == 1
    assert "Crashed after its handler completed: marked Completed" in event_worker.part.log_path.read_text()
