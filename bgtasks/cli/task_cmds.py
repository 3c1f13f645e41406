"""``bgtasks task create|ls|show|history|run|pause|resume|cancel|rm``."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Awaitable, Callable
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

import cyclopts
from cyclopts import Parameter
from rich.table import Table

from bgtasks.cli import _common as cli
from bgtasks.cli._common import Output, shown
from bgtasks.durations import parse_duration_ms
from bgtasks.models import BackgroundTask, TaskPriority, TaskRun, TaskStatus, TaskType

task_app = cyclopts.App(name="task", help="Create, list, inspect and control background tasks.")

T = TypeVar("T")


def _run(op: Callable[[Any], Awaitable[T]]) -> T:
    """Run ``op(manager)`` with a Prefect client for this invocation."""
    s = cli.settings()

    async def go() -> T:
        from prefect.client.orchestration import get_client

        from bgtasks.manager import TaskManager

        async with get_client() as client:
            return await op(TaskManager(client, s.worker.pool, settings=s))

    return asyncio.run(go())


_STATUS_STYLE = {
    "pending": "cyan", "running": "yellow", "completed": "green", "failed": "red", "cancelled": "dim",
}


def _status(t: BackgroundTask) -> str:
    text = f"[{_STATUS_STYLE[t.status.value]}]{t.status.value}[/]"
    return text + (" [dim](paused)[/]" if t.paused else "")


def _result_text(t: BackgroundTask | TaskRun) -> str:
    r = t.result
    if r is None:
        return "-"
    if r.success:
        return f"[green]ok[/] {r.duration} ms"
    return f"[red]{shown((r.error or 'failed')[:60])}[/]"


def _aware(text: str, field: str) -> datetime:
    try:
        t = datetime.fromisoformat(text)
    except ValueError:
        cli.fail(f"{field}: {text!r} is not an ISO-8601 time (e.g. 2026-12-01T09:30 or 2026-12-01T09:30Z)")
        raise
    return t if t.tzinfo else t.astimezone()  # a naive time is local time


def _ms(text: str | None, field: str) -> int | None:
    if text is None:
        return None
    try:
        return parse_duration_ms(text)
    except ValueError as exc:
        cli.fail(f"{field}: {exc}")
        raise


@task_app.command
def create(
    name: str,
    *,
    description: str | None = None,
    handler: Annotated[str | None, Parameter(help="Handler (flow) to run; default: matched from the name.")] = None,
    at: Annotated[str | None, Parameter(help="One-time: when (ISO-8601; naive = local time). Default: now.")] = None,
    every: Annotated[str | None, Parameter(help="Periodic: interval, e.g. 30s, 5m, 1h.")] = None,
    cron: Annotated[str | None, Parameter(help="Periodic: cron expression.")] = None,
    timezone: Annotated[str | None, Parameter(help="Time zone of --cron (IANA name).")] = None,
    start: Annotated[str | None, Parameter(help="Periodic: first run / anchor (ISO-8601).")] = None,
    end: Annotated[str | None, Parameter(help="Periodic: no run after this time (ISO-8601).")] = None,
    catch_up: Annotated[Literal["skip", "run-once", "run-all"] | None, Parameter(
        help="Periodic: runs missed while bgtasks was down: skip them (default), run the latest once, or run all.")] = None,
    priority: TaskPriority = TaskPriority.NORMAL,
    requires_network: bool = False,
    requires_wifi: bool = False,
    requires_charging: bool = False,
    requires_battery_not_low: bool = False,
    requires_device_idle: bool = False,
    requires_storage_not_low: bool = False,
    retries: Annotated[int | None, Parameter(help="Retries after a failed attempt.")] = None,
    backoff: Annotated[str | None, Parameter(help="First retry delay (default 1s).")] = None,
    backoff_multiplier: Annotated[float | None, Parameter(help="Delay growth per retry (default 2).")] = None,
    max_backoff: Annotated[str | None, Parameter(help="Longest retry delay (default 60s).")] = None,
    jitter: Annotated[float | None, Parameter(help="Shorten each delay by up to this fraction (default 0.1).")] = None,
    retry_on: Annotated[list[str] | None, Parameter(help="Retry only these exception types (repeatable).")] = None,
    retry_on_message: Annotated[str | None, Parameter(help="Retry only failures whose message matches.")] = None,
    timeout: Annotated[str | None, Parameter(help="Per-attempt time limit, e.g. 30s.")] = None,
    data: Annotated[str | None, Parameter(help="Task data as JSON.")] = None,
    on: Annotated[str | None, Parameter(help="Triggered: the event, e.g. file.arrived, network.connected, "
                                              "power.plugged (docs/triggers.md).")] = None,
    path: Annotated[str | None, Parameter(help="Triggered by file.*: the directory to watch.")] = None,
    pattern: Annotated[str | None, Parameter(help="Triggered by file.*: glob of file names, e.g. '*.csv'.")] = None,
    recursive: Annotated[bool, Parameter(help="Triggered by file.*: watch subdirectories too.")] = False,
    debounce: Annotated[str | None, Parameter(help="Triggered by file.*: run once per burst after this "
                                                    "much quiet (default 1s).")] = None,
    network_type: Annotated[str | None, Parameter(help="Triggered by network.*: unmetered, metered, wifi, "
                                                        "ethernet or cellular.")] = None,
    device: Annotated[list[str] | None, Parameter(help="Wake these registered devices (repeatable) instead of "
                                                       "running here.")] = None,
    device_label: Annotated[list[str] | None, Parameter(help="Wake the devices with these labels.")] = None,
    pushes_per_hour: Annotated[int | None, Parameter(help="With --device/--device-label: each device's push "
                                                          "budget for this task (default per platform; 0: none).")] = None,
    from_json: Annotated[Path | None, Parameter(name="--json", help="A CreateTaskOptions JSON file ('-' = stdin); other options are ignored.")] = None,
    output: Output = "table",
) -> None:
    """Create a task. Without --every/--cron/--on it runs once (at --at, or now)."""
    if from_json is not None:
        raw = sys.stdin.read() if str(from_json) == "-" else from_json.read_text()
        try:
            body = json.loads(raw)
        except json.JSONDecodeError as exc:
            cli.fail(f"--json: not valid JSON ({exc})")
        if isinstance(body, dict) and "name" not in body:
            body["name"] = name
    else:
        if every and cron:
            cli.fail("--every and --cron: give one of them")
        periodic = bool(every or cron)
        if on and periodic:
            cli.fail("--on: a triggered task has no --every/--cron")
        ttype = TaskType.TRIGGERED if on else (TaskType.PERIODIC if periodic else TaskType.ONE_TIME)
        schedule: dict[str, Any] = {"type": ttype.value}
        if at:
            if periodic:
                cli.fail("--at: only for one-time tasks; use --start for periodic ones")
            schedule["startTime"] = _aware(at, "--at").isoformat()
        if start:
            schedule["startTime"] = _aware(start, "--start").isoformat()
        if end:
            schedule["endTime"] = _aware(end, "--end").isoformat()
        if every:
            schedule["interval"] = _ms(every, "--every")
        if cron:
            schedule["cron"] = cron
        if timezone:
            schedule["timezone"] = timezone
        if catch_up:
            schedule["catchUp"] = catch_up
        body = {"name": name, "schedule": schedule, "priority": priority.value}
        if on:
            trigger: dict[str, Any] = {"on": on}
            for key, value in (("path", path and str(Path(path).expanduser().absolute())), ("pattern", pattern),
                               ("networkType", network_type)):
                if value:
                    trigger[key] = value
            if recursive:
                trigger["recursive"] = True
            if debounce is not None:
                trigger["debounceMs"] = _ms(debounce, "--debounce")
            body["trigger"] = trigger
        elif path or pattern or network_type or recursive or debounce:
            cli.fail("--path/--pattern/--network-type: only with --on (a triggered task)")
        if device or device_label:
            body["target"] = {k: v for k, v in (("deviceIds", device), ("labels", device_label)) if v}
            if pushes_per_hour is not None:
                body["target"]["pushesPerHour"] = pushes_per_hour
        elif pushes_per_hour is not None:
            cli.fail("--pushes-per-hour: only with --device or --device-label")
        if description:
            body["description"] = description
        if handler:
            body["handler"] = handler
        cons = {
            "requiresNetwork": requires_network, "requiresWifi": requires_wifi,
            "requiresCharging": requires_charging, "requiresBatteryNotLow": requires_battery_not_low,
            "requiresDeviceIdle": requires_device_idle, "requiresStorageNotLow": requires_storage_not_low,
        }
        if any(cons.values()):
            body["constraints"] = {k: v for k, v in cons.items() if v}
        retry_opts = (backoff, backoff_multiplier, max_backoff, jitter, retry_on, retry_on_message)
        if retries is not None or any(v is not None for v in retry_opts):
            policy: dict[str, Any] = {"maxRetries": retries if retries is not None else 0}
            if backoff is not None:
                policy["initialBackoffMs"] = _ms(backoff, "--backoff")
            if backoff_multiplier is not None:
                policy["backoffMultiplier"] = backoff_multiplier
            if max_backoff is not None:
                policy["maxBackoffMs"] = _ms(max_backoff, "--max-backoff")
            if jitter is not None:
                policy["jitter"] = jitter
            if retry_on or retry_on_message:
                policy["retryOn"] = {"exceptions": retry_on or []}
                if retry_on_message:
                    policy["retryOn"]["messagePattern"] = retry_on_message
            body["retryPolicy"] = policy
        if timeout:
            body["timeoutMs"] = _ms(timeout, "--timeout")
        if data is not None:
            try:
                body["data"] = json.loads(data)
            except json.JSONDecodeError as exc:
                cli.fail(f"--data: not valid JSON ({exc})")

    task = _run(lambda m: m.create(body))
    if output == "json":
        cli.print_json(task.to_json_dict())
        return
    for warning in task.warnings or []:
        cli.err_console.print(f"[yellow]Warning:[/] {shown(warning)}")
    cli.console.print(f"Created task [bold]{shown(task.name)}[/] ({task.id}), {task.type.value}, next run {cli.when(task.next_run)}.")
    cli.console.print(f"[dim]Watch it: bgtasks task show {task.id}[/]")


@task_app.command(name="ls")
def list_tasks(
    *,
    status: TaskStatus | None = None,
    type: TaskType | None = None,
    priority: TaskPriority | None = None,
    sort: Annotated[Literal["priority", "next-run", "created", "name"], Parameter(help="Sort order.")] = "priority",
    output: Output = "table",
) -> None:
    """List tasks, filtered by status, type and priority."""
    tasks = _run(lambda m: m.list(status=status, type=type, priority=priority, sort=sort))
    if output == "json":
        cli.print_json([t.to_json_dict() for t in tasks])
        return
    table = Table(title="Background tasks")
    table.add_column("ID", no_wrap=True)
    for col in ("Name", "Type", "Status", "Priority", "Next run", "Last run", "Last result"):
        table.add_column(col, overflow="fold")
    for t in tasks:
        table.add_row(t.id, shown(t.name), t.type.value, _status(t), t.priority.value, cli.when(t.next_run), cli.when(t.last_run), _result_text(t))
    cli.console.print(table)


def _resolve(ref: str) -> Callable[[Any], Awaitable[str]]:
    async def find(m: Any) -> str:
        return await m.resolve(ref)

    return find


@task_app.command
def show(ref: str, *, output: Output = "table") -> None:
    """Show a task (by id or name): definition, status, result and run history."""
    async def op(m: Any) -> tuple[BackgroundTask, list[TaskRun]]:
        tid = await m.resolve(ref)
        return await m.get(tid), await m.history(tid, limit=20)

    task, runs = _run(op)
    if output == "json":
        body = task.to_json_dict()
        body["history"] = [r.to_json_dict() for r in runs]
        cli.print_json(body)
        return
    info = Table.grid(padding=(0, 2))
    info.add_column(style="bold")
    info.add_column()
    info.add_row("id", task.id)
    info.add_row("name", shown(task.name))
    if task.description:
        info.add_row("description", shown(task.description))
    info.add_row("type / priority", f"{task.type.value} / {task.priority.value}")
    info.add_row("status", _status(task))
    info.add_row("handler", shown(task.handler or "-"))
    if task.schedule:
        from deployments.mapping import describe_schedule

        info.add_row("schedule", shown(describe_schedule(task.schedule)))
    if task.trigger:
        info.add_row("trigger", shown(json.dumps(task.trigger.to_json_dict())))
    if task.target:
        info.add_row("wakes devices", shown(json.dumps(task.target.to_json_dict())))
    for w in task.waiting or []:
        info.add_row("[yellow]waiting[/]", f"run {w.run_id} since {cli.when(w.since)}: {shown(w.reason)}")
    if task.retry_policy:
        info.add_row("retry policy", json.dumps(task.retry_policy.to_json_dict()))
    if task.constraints and task.constraints.to_json_dict():
        info.add_row("constraints", json.dumps(task.constraints.to_json_dict()))
    if task.timeout_ms:
        info.add_row("timeout", f"{task.timeout_ms} ms")
    info.add_row("created", cli.when(task.created_at))
    info.add_row("next run", cli.when(task.next_run))
    info.add_row("last run", cli.when(task.last_run))
    if task.result:
        r = task.result
        info.add_row("last result", f"{'success' if r.success else 'failure'} ({shown(r.state)}), {r.duration} ms, attempts {r.attempts or 1}")
        if r.error:
            info.add_row("error", f"[red]{shown(r.error)}[/]")
        if r.data is not None:
            info.add_row("data", shown(json.dumps(r.data)))
    cli.console.print(info)
    if runs:
        table = Table(title="History")
        for col in ("Run", "State", "Scheduled", "Started", "Attempts", "Result"):
            table.add_column(col, overflow="fold")
        for r in runs:
            table.add_row(r.id, shown(r.state), cli.when(r.scheduled_for), cli.when(r.started_at), str(r.attempts or "-"), _result_text(r))
        cli.console.print(table)


@task_app.command
def history(ref: str, *, limit: Annotated[int, Parameter(
        help="How many runs, 1 to 200 (the Prefect API's page).",
        validator=cyclopts.validators.Number(gte=1, lte=200))] = 50, output: Output = "table") -> None:
    """A task's runs, newest first, each with its result."""
    async def op(m: Any) -> list[TaskRun]:
        return await m.history(await m.resolve(ref), limit=limit)

    runs = _run(op)
    if output == "json":
        cli.print_json([r.to_json_dict() for r in runs])
        return
    table = Table(title="History")
    for col in ("Run", "State", "Scheduled", "Started", "Ended", "Attempts", "Result"):
        table.add_column(col, overflow="fold")
    for r in runs:
        table.add_row(r.id, shown(r.state), cli.when(r.scheduled_for), cli.when(r.started_at), cli.when(r.ended_at), str(r.attempts or "-"), _result_text(r))
    cli.console.print(table)


def _control(ref: str, action: str, output: str) -> None:
    async def op(m: Any) -> BackgroundTask:
        return await getattr(m, action)(await m.resolve(ref))

    task = _run(op)
    if output == "json":
        cli.print_json(task.to_json_dict())
        return
    past = {"pause": "Paused", "resume": "Resumed", "cancel": "Cancelled"}[action]
    cli.console.print(f"{past} task [bold]{shown(task.name)}[/] ({task.id}).")
    if action == "pause":
        cli.console.print(f"[dim]Resume it: bgtasks task resume {task.id}[/]")


@task_app.command
def pause(ref: str, *, output: Output = "table") -> None:
    """Pause a task: no run starts (scheduled, triggered or run-now) until resumed."""
    _control(ref, "pause", output)


@task_app.command
def resume(ref: str, *, output: Output = "table") -> None:
    """Resume a paused task: its schedule picks up from now."""
    _control(ref, "resume", output)


@task_app.command
def cancel(ref: str, *, output: Output = "table") -> None:
    """Cancel a task: pending runs are cancelled, a running one is stopped, nothing runs again."""
    _control(ref, "cancel", output)


@task_app.command
def run(ref: str, *, wait: Annotated[bool, Parameter(help="Wait for the run to finish and show its result.")] = False,
        output: Output = "table") -> int:
    """Run a task now, in its priority queue."""
    async def op(m: Any) -> tuple[str, Any]:
        tid = await m.resolve(ref)
        run_id = await m.run_now(tid)
        result = await m.wait_for_run(run_id) if wait else None
        return run_id, result

    run_id, result = _run(op)
    if output == "json":
        cli.print_json({"runId": run_id, "result": result.to_json_dict() if result else None})
    else:
        cli.console.print(f"Started run {run_id}.")
        if result is not None:
            detail = json.dumps(result.data) if result.success else result.error
            cli.console.print(f"Result: {'success' if result.success else 'failure'} ({shown(result.state)}) {shown(detail)}")
    return 0 if result is None or result.success else 1


@task_app.command(name="rm")
def remove(ref: str, *, yes: Annotated[bool, Parameter(name=["--yes", "-y"], help="Do not ask.")] = False) -> None:
    """Delete a task: running runs are cancelled, pending ones removed."""
    if not yes and sys.stdin.isatty():
        answer = cli.console.input(f"Delete task {shown(repr(ref))}? \\[y/N] ")
        if answer.strip().lower() not in ("y", "yes"):
            cli.fail("Not deleted.")

    async def op(m: Any) -> str:
        tid = await m.resolve(ref)
        await m.delete(tid)
        return tid

    tid = _run(op)
    cli.console.print(f"Deleted task {tid}.")
