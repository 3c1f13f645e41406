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
        print(f"\nserver kill -9 mid-run: states {states}, handler ran {len(records(rec))} time(s)")
        assert states.count("Completed") == 1, states
        assert {t.id for t in await manager.list()} == before
    finally:
        w.stop()
