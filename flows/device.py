"""The flow of tasks that target devices: wake them with silent pushes, collect their reports.

Runs under the task's retry policy like any handler (one Prefect task per
attempt, capped backoff, ``retryOn``), except that configuration errors are not
retried. A retried attempt pushes only to devices that have not accepted the
run's push yet. Each chunk of pushes is its own Prefect task, so the UI shows
the fan-out. The run waits for reports up to the task's ``timeoutMs`` (default: the longest
report wait of its devices' platforms, ``BGTASKS_PUSH_REPORT_WAIT_S`` for Android
and ``BGTASKS_PUSH_REPORT_WAIT_IOS_S`` for iOS); it completes when every reached device reported
success, and its result lists every device's delivery and report.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE

from bgtasks import stored
from flows._handler import past_end, retry_options


class DevicesIncomplete(RuntimeError):
    """A device reported failure, a report is missing, or no device was reachable. Not
    retried when a retry cannot help (``retryable``: every problem is a device's
    configuration, such as its topic)."""

    def __init__(self, message: str, retryable: bool = True) -> None:
        super().__init__(message)
        self.retryable = retryable


@task(name="push-chunk", cache_policy=NO_CACHE, persist_result=False)
async def push_chunk(sender: Any, messages: Sequence[Any], deadline: float) -> list[Any]:
    """Send one chunk with retries for transient errors (``mobile_push.delivery``), none
    waiting past ``deadline`` (``time.monotonic()``: the run's timeout)."""
    from bgtasks.settings import load_settings
    from mobile_push.delivery import send_with_retries

    p = load_settings().push
    results = await send_with_retries(
        sender, list(messages), max_attempts=p.max_attempts, initial_backoff_s=p.initial_backoff_s,
        max_backoff_s=p.max_backoff_s, max_retry_after_s=p.max_retry_after_s, deadline=deadline,
    )
    get_run_logger().info("Pushed %d message(s): %s", len(messages),
                          ", ".join(f"{r.message.target.device_id}={r.kind.value}" for r, _ in results))
    return results


async def _attempt(spec_json: dict[str, Any], data: Any) -> dict[str, Any]:
    from prefect.runtime import deployment, flow_run

    from bgtasks.settings import load_settings
    from bgtasks.store import open_store
    from mobile_push.dispatch import PushConfigError, run_attempt
    from mobile_push.registry import DeviceRegistry
    from mobile_push.reports import RunLedger
    from mobile_push.service import senders_for

    spec = stored.decode(spec_json, data)
    assert spec is not None and spec.target is not None, "device-task runs only tasks with a target"
    settings = load_settings()
    # The task's timeout, else the platforms' report waits (the dispatch knows the devices).
    explicit_s = spec.timeout_ms / 1000.0 if spec.timeout_ms else None
    try:
        senders = await senders_for(settings.push)  # the worker's, when it serves them
    except ValueError as exc:  # a credentials file unreadable, wrong, or open to others
        raise PushConfigError(str(exc)) from None
    store = await open_store(settings.store_url)
    try:
        outcome = await run_attempt(
            settings=settings, registry=DeviceRegistry(store), ledger=RunLedger(store), senders=senders,
            run_id=str(flow_run.id), task_id=str(deployment.id) if deployment.id else None,
            task_name=spec.name, handler=spec.handler or "", target=spec.target,
            constraints=spec.constraints.to_json_dict(), data=spec.data,
            deadline=None if explicit_s is None else time.monotonic() + explicit_s, send_chunk=push_chunk,
        )
    finally:
        for sender in senders.values():
            await sender.aclose()
        await store.close()
    problems = outcome.problems()
    if problems:
        raise DevicesIncomplete("; ".join(problems), retryable=outcome.retry_can_help())
    return outcome.summary()


@flow(name="device-task", persist_result=True, result_serializer="json", log_prints=True)
async def device_task(data: Any = None, task: dict[str, Any] | None = None,
                      event: dict[str, Any] | None = None) -> Any:
    """Wake the task's target devices and wait for their reports."""
    spec = stored.decode(task, data)
    if (skipped := past_end(spec)) is not None:
        return skipped
    assert task is not None
    attempt = _attempt_task.with_options(**retry_options(spec))
    return await attempt(task, data)


_attempt_task = task(_attempt, name="wake-devices", cache_policy=NO_CACHE, persist_result=False)
