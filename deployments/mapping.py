"""A task <-> its deployment and flow runs (pure: no client, no I/O).

The definition lives on the deployment: its name, the handler's flow, the work
queue (= priority), tags, schedules, and the parameters ``data`` and ``task``
(:mod:`bgtasks.stored` writes and reads them). The description is generated for people reading the
Prefect UI. Status, last and next run and the result come from flow runs.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

from pydantic import ValidationError

from bgtasks import stored
from bgtasks.models import (
    BackgroundTask,
    CreateTaskOptions,
    TaskPriority,
    TaskResult,
    TaskRun,
    TaskSchedule,
    TaskStatus,
    TaskType,
)

logger = logging.getLogger(__name__)


#: Prefect state type -> the spec's status.
_STATUS = {
    "SCHEDULED": TaskStatus.PENDING,
    "PENDING": TaskStatus.PENDING,
    "PAUSED": TaskStatus.PENDING,
    "RUNNING": TaskStatus.RUNNING,
    "CANCELLING": TaskStatus.RUNNING,
    "COMPLETED": TaskStatus.COMPLETED,
    "FAILED": TaskStatus.FAILED,
    "CRASHED": TaskStatus.FAILED,
    "CANCELLED": TaskStatus.CANCELLED,
}
FINISHED = ("COMPLETED", "FAILED", "CRASHED", "CANCELLED")
STARTED = ("PENDING", "RUNNING", "CANCELLING", *FINISHED)
ACTIVE = ("SCHEDULED", "PENDING", "RUNNING", "PAUSED")


def status_of(state_type: str) -> TaskStatus:
    return _STATUS[state_type]


def describe_trigger(opts: CreateTaskOptions) -> str:
    t = opts.trigger
    if t is None:
        return "a trigger"
    text = f"on bgtasks.{t.on}"
    if t.path:
        text += f" in {t.path}{' (recursive)' if t.recursive else ''}"
        if t.pattern:
            text += f" matching {t.pattern}"
        text += f", debounce {format_ms(t.debounce_ms) if t.debounce_ms else 'none'}"
    if t.network_type != "any":
        text += f", {t.network_type} networks only"
    return text


def _first_due(run: Any, opts: CreateTaskOptions | None) -> datetime | None:
    """When the next run is due. A run Prefect's scheduler made before a periodic task's
    startTime (the anchor is only a phase for Prefect) is dropped by the worker, so the
    schedule's next run is then the startTime; run-now and run-later runs are as they are."""
    due = run.expected_start_time
    start = opts.schedule.start_time if opts is not None and opts.schedule.type == TaskType.PERIODIC else None
    if due is None or start is None or not getattr(run, "auto_scheduled", False):
        return due
    return max(due, start)


def describe_schedule(s: TaskSchedule) -> str:
    if s.type == TaskType.TRIGGERED:
        return "triggered"
    if s.type == TaskType.ONE_TIME:
        return f"once at {s.start_time.isoformat()}" if s.start_time else "once, now"
    if s.cron is not None:
        text = f"cron '{s.cron}' ({s.timezone or 'UTC'})"
    else:
        assert s.interval is not None
        text = f"every {format_ms(s.interval)}"
    if s.start_time:
        text += f" from {s.start_time.isoformat()}"
    if s.end_time:
        text += f" until {s.end_time.isoformat()}"
    return text + f", missed runs: {s.catch_up or 'skip'}"


def format_ms(ms: int) -> str:
    for unit, size in (("d", 86_400_000), ("h", 3_600_000), ("m", 60_000), ("s", 1000)):
        if ms >= size and ms % size == 0:
            return f"{ms // size}{unit}"
    return f"{ms}ms"


def description_for(opts: CreateTaskOptions, handler: str, panel_url: str | None = None) -> str:
    """What the Prefect UI shows: the user's description, then the definition, then a link
    to the task's page in the bgtasks panel (``panel_url``)."""
    lines = [opts.description, ""] if opts.description else []
    lines.append(f"**bgtasks** {opts.schedule.type.value} task, priority {opts.priority.value}, handler `{handler}`")
    if opts.schedule.type == TaskType.TRIGGERED:
        lines.append(f"- trigger: {describe_trigger(opts)}")
    else:
        lines.append(f"- schedule: {describe_schedule(opts.schedule)}")
    cons = [k if v is True else f"{k}={v}" for k, v in opts.constraints.to_json_dict().items() if v is not False]
    lines.append(f"- constraints: {', '.join(cons) if cons else 'none'}")
    p = opts.retry_policy
    if p is None or p.max_retries == 0:
        lines.append("- retries: none")
    else:
        cond = ""
        if p.retry_on is not None:
            cond = f", only on {', '.join(p.retry_on.exceptions + ([f'/{p.retry_on.message_pattern}/'] if p.retry_on.message_pattern else []))}"
        lines.append(
            f"- retries: {p.max_retries}, backoff {format_ms(p.initial_backoff_ms)} x{p.backoff_multiplier:g} "
            f"up to {format_ms(p.max_backoff_ms)}, jitter {p.jitter:g}{cond}"
        )
    lines.append(f"- timeout: {format_ms(opts.timeout_ms) if opts.timeout_ms else 'none'}")
    if opts.target is not None:
        t = opts.target
        who = [f"devices {', '.join(t.device_ids[:5])}{'…' if len(t.device_ids) > 5 else ''}" if t.device_ids else "",
               f"labels {', '.join(t.labels)}" if t.labels else "", f"platform {t.platform}" if t.platform else ""]
        lines.append(f"- wakes: {'; '.join(w for w in who if w)} (silent push, waits for device reports)")
    if panel_url:
        from urllib.parse import quote

        lines += ["", f"[Open in the bgtasks panel]({panel_url}#task-name={quote(opts.name, safe='')})"]
    return "\n".join(lines)


def result_of(run: Any, data: Any = None, attempts: int | None = None) -> TaskResult | None:
    """The spec's TaskResult for a finished flow run (None while it has not finished)."""
    state = run.state
    if state is None or state.type.value not in FINISHED:
        return None
    executed_at = started_at(run) or run.end_time or run.expected_start_time or run.created
    duration_s = run.total_run_time.total_seconds() if run.total_run_time else 0.0
    if not duration_s and started_at(run) and run.end_time:
        duration_s = (run.end_time - run.start_time).total_seconds()
    success = state.type.value == "COMPLETED"
    return TaskResult(
        success=success,
        data=data if success else None,
        error=None if success else (state.message or state.name),
        executed_at=executed_at,
        duration=int(round(duration_s * 1000)),
        run_id=str(run.id),
        state=state.name,
        attempts=attempts,
        constraints_met=False if stored.OVERRIDDEN_TAG in (run.tags or []) else None,
    )


def started_at(run: Any) -> Any:
    """When the run first entered Running; None if it never did. Prefect fills `start_time`
    with the end time when a run ends without having run (cancelled while Pending, say),
    so `run_count` (the Running entries) tells which it was."""
    return run.start_time if run.run_count else None


def run_view(run: Any, result: TaskResult | None, attempts: int | None) -> TaskRun:
    state = run.state
    return TaskRun(
        id=str(run.id),
        status=status_of(state.type.value),
        state=state.name,
        message=state.message or None,
        scheduled_for=run.expected_start_time,
        started_at=started_at(run),
        ended_at=run.end_time,
        attempts=attempts,
        result=result,
    )


def task_from(
    deployment: Any,
    last_run: Any | None,
    next_run: Any | None,
    result: TaskResult | None,
    waiting: list[Any] | None = None,
) -> BackgroundTask:
    """The spec's BackgroundTask for a deployment and its latest and next runs."""
    tags = list(deployment.tags or [])
    try:
        opts = stored.read(deployment.parameters)
    except ValidationError as exc:
        # One unreadable definition (edited by hand in Prefect, or stored by an older
        # release) must not break every list: show it from its tags, say which fields.
        logger.warning("task %s: stored definition invalid at %s; shown from its tags", deployment.id,
                       ", ".join(".".join(map(str, e["loc"])) for e in exc.errors()))
        opts = None
    if opts is not None:
        ttype, priority = opts.schedule.type, opts.priority
        description, handler = opts.description, opts.handler
    else:  # deployed by hand (prefect.yaml without a task parameter)
        ttype = TaskType(stored.tag_value(tags, "type") or ("periodic" if deployment.schedules else "one-time"))
        priority = TaskPriority(stored.tag_value(tags, "priority") or deployment.work_queue_name or "normal")
        description, handler = deployment.description, stored.tag_value(tags, "handler") or None
    if stored.CANCELLED_TAG in tags:
        status = TaskStatus.CANCELLED
    elif last_run is not None:
        status = status_of(last_run.state.type.value)
    else:
        status = TaskStatus.PENDING
    scheduled_for = opts.schedule.start_time if opts is not None else None
    fields = dict(
        id=str(deployment.id),
        name=deployment.name,
        description=description,
        type=ttype,
        status=status,
        priority=priority,
        created_at=deployment.created,
        scheduled_for=scheduled_for,
        last_run=last_run.start_time if last_run is not None else None,
        # A paused task starts nothing until resumed, even a run Prefect's scheduler adds
        # just after the pause (the worker drops it).
        next_run=_first_due(next_run, opts) if next_run is not None and not deployment.paused else None,
        result=result,
        handler=handler,
        paused=bool(deployment.paused),
        schedule=opts.schedule if opts else None,
        constraints=opts.constraints if opts else None,
        retry_policy=opts.retry_policy if opts else None,
        timeout_ms=opts.timeout_ms if opts else None,
        target=opts.target if opts else None,
        trigger=opts.trigger if opts else None,
        waiting=[{"run_id": str(r.id), "since": r.state.timestamp, "reason": r.state.message or "constraints"}
                 for r in waiting] if waiting else None,
        data=opts.data if opts else (deployment.parameters or {}).get(stored.DATA_PARAM),
    )
    # A stored definition is not new input: skip the clock checks on re-validation.
    return BackgroundTask.model_validate(fields, context={"stored": True})
