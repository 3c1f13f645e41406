"""Turn a plain function into a bgtasks handler flow.

The flow takes two parameters, both stored on the task's deployment:

- ``data``: the task's data, handed to the function;
- ``task``: the task's definition (CreateTaskOptions JSON without ``data``), from
  which the retry policy, timeout and end time are read at run time.

The function runs as a Prefect *task* inside the flow because Prefect flows take
only a fixed retry delay, no condition and no jitter. The
delays are computed by :mod:`bgtasks.retry` (capped, jitter only shortens).

Timeouts stop the work for real: Prefect's per-attempt timeout interrupts the
handler in the main thread (SIGALRM); a handler that does not yield to signals
(stuck in C code, signals blocked) is stopped by a backstop that records the
run as ``TimedOut`` and ends the process, ``HARD_TIMEOUT_GRACE_S`` later.
"""

from __future__ import annotations

import functools
import inspect
import os
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.states import Completed

from bgtasks import stored
from bgtasks.crash import attempts_of, remaining_retries
from bgtasks.models import CreateTaskOptions, RetryPolicy
from bgtasks.retry import retry_delays_seconds, should_retry

#: How long after its timeout an attempt that ignores signals is killed.
HARD_TIMEOUT_GRACE_S = 5.0
#: Exit status of a run process ended by the timeout backstop.
HARD_TIMEOUT_EXIT = 124


def _failure_of(state: Any) -> Any:
    """The exception a failed state carries, from sync or async code.

    ``State.result`` returns a coroutine when called inside an event loop (async
    tasks), so the exception is read from the state's data (the exception itself,
    or the result record holding it) first.
    """
    data = getattr(state, "data", None)
    if isinstance(data, BaseException):
        return data
    if isinstance(getattr(data, "result", None), BaseException):
        return data.result
    result = state.result(raise_on_failure=False)
    if inspect.isawaitable(result):
        result.close()  # type: ignore[attr-defined]
        return None
    return result


def _retry_condition(policy: RetryPolicy) -> Callable[..., bool]:
    def condition(task_obj: Any, task_run: Any, state: Any) -> bool:
        exc = _failure_of(state)
        if getattr(exc, "retryable", True) is False:
            get_run_logger().info("Not retrying: %s cannot succeed by trying again", type(exc).__name__)
            return False
        ok = should_retry(policy.retry_on, exc if isinstance(exc, BaseException) else None)
        if not ok:
            get_run_logger().info("Not retrying: %r does not match retryOn", exc)
        return ok

    return condition


def past_end(spec: CreateTaskOptions | None) -> Any:
    """A Completed state when the schedule's endTime has passed (the run does nothing), else None."""
    end = spec.schedule.end_time if spec is not None else None
    if end is not None and datetime.now(UTC) > end:
        return Completed(message=f"Skipped: past the schedule's endTime {end.isoformat()}")
    return None


def retry_options(spec: CreateTaskOptions | None, used: int = 0) -> dict[str, Any]:
    """Prefect task options for the task's retry policy (empty: no retries).

    ``used``: tries of the handler in earlier runs of this flow run (it crashed and
    was retried, :mod:`bgtasks.crash`); they count against the policy and the
    backoff goes on from where they left it.
    An exception whose ``retryable`` attribute is False is never retried.
    """
    policy = spec.retry_policy if spec is not None else None
    if policy is None or not policy.max_retries:
        return {}
    retries = remaining_retries(policy, used)
    if not retries:
        return {"retries": 0}
    delays = retry_delays_seconds(policy)
    return {
        "retries": retries,
        "retry_delay_seconds": delays[used:] or delays[-1:],
        "retry_condition_fn": _retry_condition(policy),
    }


def earlier_attempts() -> int:
    """Tries of the handler in earlier runs of the current flow run (0 on its first run)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
    from prefect.runtime import flow_run

    if (flow_run.run_count or 1) <= 1:
        return 0
    with get_client(sync_client=True) as client:
        task_runs = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run.id])))
        states = client.read_flow_run_states(flow_run.id)
    return attempts_of(task_runs, states).used


def _hard_timeout(seconds: float, flow_run_id: str | None) -> threading.Timer:
    """Start the backstop for one attempt: record TimedOut, then end this process.

    The flow run id is captured by the caller: Prefect's run context does not
    reach other threads.
    """

    def fire() -> None:
        from prefect.client.orchestration import get_client
        from prefect.states import Failed

        message = (
            f"Handler ignored its {seconds - HARD_TIMEOUT_GRACE_S:g}s timeout "
            f"for {HARD_TIMEOUT_GRACE_S:g}s more; its process was stopped"
        )
        try:
            if flow_run_id is not None:
                with get_client(sync_client=True) as client:
                    client.set_flow_run_state(flow_run_id, Failed(name="TimedOut", message=message), force=True)
        finally:
            os._exit(HARD_TIMEOUT_EXIT)

    timer = threading.Timer(seconds, fire)
    timer.daemon = True
    timer.start()
    return timer


def _attempt_task(fn: Callable[[Any], Any], name: str, timeout_s: float | None) -> Any:
    """The Prefect task that runs one attempt of ``fn``, with the backstop when timed."""
    body = fn
    if timeout_s is not None:

        @functools.wraps(fn)
        def body(d: Any) -> Any:
            from prefect.runtime import flow_run

            timer = _hard_timeout(timeout_s + HARD_TIMEOUT_GRACE_S, flow_run.id)
            try:
                return fn(d)
            finally:
                timer.cancel()

    return task(
        body,
        name=name,
        persist_result=False,
        cache_policy=NO_CACHE,
        log_prints=True,
        timeout_seconds=timeout_s,
    )


def _with_event(fn: Callable[..., Any], event: dict[str, Any] | None) -> Callable[[Any], Any]:
    """``fn(data, event=event)`` as a one-argument function named like ``fn`` (Prefect binds
    a task's arguments from its signature, so this is not ``functools.wraps``)."""

    def body(data: Any) -> Any:
        return fn(data, event=event)

    for attr in ("__name__", "__qualname__", "__doc__", "__module__"):
        setattr(body, attr, getattr(fn, attr))
    return body


def background_handler(name: str) -> Callable[[Callable[..., Any]], Any]:
    """Decorator: ``fn(data) -> JSON`` becomes the handler flow called ``name``.

    A handler of a triggered task may take ``fn(data, event)``: ``event`` is the
    triggering event (``name``, ``id``, ``occurred``, ``payload``; for files the
    payload's ``paths``), or None for a scheduled or manual run.

    The flow's return value (the function's) is persisted as JSON: it is the
    ``data`` of the run's TaskResult.
    """

    def decorate(fn: Callable[..., Any]) -> Any:
        wants_event = "event" in inspect.signature(fn).parameters

        # Not functools.wraps: Prefect reads the flow's parameters from its signature.
        def handler_flow(data: Any = None, task: dict[str, Any] | None = None,
                         event: dict[str, Any] | None = None) -> Any:
            spec = stored.decode(task, data)
            if (skipped := past_end(spec)) is not None:
                return skipped
            options = retry_options(spec, earlier_attempts() if spec is not None and spec.retry_policy else 0)
            timeout_s = spec.timeout_ms / 1000.0 if spec is not None and spec.timeout_ms is not None else None
            body = _with_event(fn, event) if wants_event else fn
            attempt = _attempt_task(body, name, timeout_s)
            if options:
                attempt = attempt.with_options(**options)
            return attempt(data)

        handler_flow.__name__ = fn.__name__
        handler_flow.__qualname__ = fn.__qualname__
        handler_flow.__doc__ = fn.__doc__
        handler_flow.__module__ = fn.__module__
        return flow(
            handler_flow,
            name=name,
            persist_result=True,
            result_serializer="json",
            log_prints=True,
        )

    return decorate
