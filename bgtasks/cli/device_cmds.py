"""``bgtasks device add|ls|rm|test|simulate|set|phones``: the phones bgtasks wakes with silent pushes."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated, Any, Literal, TypeVar

import cyclopts
from cyclopts import Parameter
from rich.table import Table

from bgtasks.cli import _common as cli
from bgtasks.cli._common import Output
from bgtasks.cli._store import with_store

device_app = cyclopts.App(name="device", help="Register, list, remove and test-push devices (mobile_push).")
T = TypeVar("T")


def _registry(op: Callable[[Any], Awaitable[T]]) -> T:
    from mobile_push.registry import DeviceRegistry

    return with_store(lambda store: op(DeviceRegistry(store)))


def _invalid(exc: Exception) -> None:
    from bgtasks.models import field_errors

    for e in field_errors(exc):
        cli.err_console.print(f"[red]Invalid {e['field'] or 'input'}: {e['message']}[/red]")
    raise SystemExit(1)


@device_app.command
def add(
    platform: Literal["android", "ios"],
    token: str,
    *,
    id: Annotated[str | None, Parameter(help="Your id for the device (default: generated).")] = None,
    transport: Annotated[Literal["fcm", "apns"] | None, Parameter(
        help="fcm or apns (default: fcm for android, apns for ios).")] = None,
    topic: Annotated[str | None, Parameter(help="APNs: the app's bundle id. FCM: the app id.")] = None,
    label: Annotated[list[str] | None, Parameter(name=["--label", "-l"], help="Repeatable.")] = None,
    environment: Annotated[Literal["production", "sandbox"] | None, Parameter(
        help="APNs: the app build's environment (sandbox for development builds; default: "
             "BGTASKS_PUSH_APNS_ENVIRONMENT).")] = None,
    output: Output = "table",
) -> None:
    """Register a device; its push token is checked for shape."""
    from pydantic import ValidationError

    from mobile_push.registry import DeviceConflict, DeviceIn

    try:
        new = DeviceIn(id=id, platform=platform, transport=transport, token=token, topic=topic, labels=label or [],
                       environment=environment)
    except ValidationError as exc:
        _invalid(exc)
    try:
        device = _registry(lambda r: r.add(new))
    except DeviceConflict as exc:
        cli.fail(f"Invalid {exc}")
    if output == "json":
        cli.print_json(device.public())
    else:
        cli.console.print(f"Device {cli.shown(device.id)} registered ({device.platform.value}, {device.transport.value}).")


@device_app.command(name="ls")
def list_devices(
    *,
    platform: Literal["android", "ios"] | None = None,
    label: str | None = None,
    state: Literal["active", "invalid"] | None = None,
    output: Output = "table",
) -> None:
    """List devices (tokens shortened)."""
    from mobile_push.types import Platform

    found = _registry(lambda r: r.list(platform=Platform(platform) if platform else None, label=label, state=state))
    if output == "json":
        cli.print_json([d.public() for d in found])
        return
    table = Table("ID", "PLATFORM", "TRANSPORT", "TOKEN", "LABELS", "STATE", "LAST SEEN")
    for d in found:
        pub = d.public()
        state_text = "[green]active[/]" if d.state == "active" else f"[red]invalid[/] ({cli.shown(d.invalid_reason)})"
        table.add_row(cli.shown(d.id), d.platform.value, d.transport.value, cli.shown(pub["token"]),
                      cli.shown(", ".join(d.labels) or "-"),
                      state_text, cli.when(d.last_seen_at))
    cli.console.print(table)


@device_app.command(name="rm")
def remove(device_id: str) -> None:
    """Remove a device from the registry."""
    from mobile_push.registry import DeviceNotFound

    try:
        _registry(lambda r: r.remove(device_id))
    except DeviceNotFound as exc:
        cli.fail(str(exc))
    cli.console.print(f"Device {cli.shown(device_id)} removed.")


@device_app.command
def test(device_id: str, *, output: Output = "table") -> None:
    """Send one silent test push to a device now and show the push service's answer."""
    from mobile_push.registry import DeviceNotFound

    try:
        result = with_store(lambda store: _test_push(store, device_id))
    except DeviceNotFound as exc:
        cli.fail(str(exc))
    if output == "json":
        cli.print_json(result)
        return
    colour = "green" if result["outcome"] == "delivered" else "red"
    cli.console.print(f"[{colour}]{result['outcome']}[/] after {result['attempts']} attempt(s)"
                      + (f": {cli.shown(result['error'])}" if result.get("error") else "")
                      + (f" (message {cli.shown(result['messageId'])})" if result.get("messageId") else ""))
    if result["outcome"] != "delivered":
        raise SystemExit(1)


async def _test_push(store: Any, device_id: str) -> dict[str, Any]:
    import uuid

    from mobile_push.delivery import send_with_retries
    from mobile_push.dispatch import PushConfigError, invalid_reason, report_base_url
    from mobile_push.feedback import notify_invalid
    from mobile_push.payload import build_payload, check_size
    from mobile_push.registry import DeviceRegistry
    from mobile_push.reports import RunLedger
    from mobile_push.senders import missing_credentials_error
    from mobile_push.service import senders_for, worker_socket
    from mobile_push.types import OutcomeKind, PushMessage

    s = cli.settings()
    registry, ledger = DeviceRegistry(store), RunLedger(store)
    device = await registry.get(device_id)
    run_id = f"test-{uuid.uuid4().hex[:12]}"
    try:
        senders = await senders_for(s.push, worker_socket(s.home))  # the worker's, when it runs
    except ValueError as exc:  # a credentials file unreadable, wrong, or open to others
        return {"deviceId": device.id, "outcome": "config", "attempts": 0, "error": str(exc)}
    try:
        sender = senders.get(device.transport)
        if sender is None:
            return {"deviceId": device.id, "outcome": "config", "attempts": 0,
                    "error": missing_credentials_error(device.transport, s.push)}
        try:
            base = report_base_url(s)
        except PushConfigError as exc:
            return {"deviceId": device.id, "outcome": "config", "attempts": 0, "error": str(exc)}
        payload = build_payload(task_id="", run_id=run_id, task_name="bgtasks device test", handler="test",
                                constraints={}, data=None, report_token=await ledger.issue_token(run_id, device.id, None),
                                report_base_url=base, device_id=device.id)
        check_size(payload, device.transport, platform=device.platform)
        [(result, attempts)] = await send_with_retries(
            sender, [PushMessage(target=device.target(), payload=payload, ttl_s=300)],
            max_attempts=s.push.max_attempts, initial_backoff_s=s.push.initial_backoff_s,
            max_backoff_s=s.push.max_backoff_s, max_retry_after_s=s.push.max_retry_after_s)
    finally:
        for each in senders.values():
            await each.aclose()
    await ledger.record_delivery(run_id=run_id, task_id=None, device_id=device.id, transport=device.transport.value,
                                 outcome=result.kind.value, attempts=attempts, message_id=result.message_id,
                                 error=result.error, reason=result.reason)
    if result.kind == OutcomeKind.INVALID_TOKEN:
        reason = invalid_reason(result)
        await registry.mark_invalid(device.id, reason)
        await notify_invalid(s.push, device, result, reason, run_id=run_id)
    out: dict[str, Any] = {"deviceId": device.id, "runId": run_id, "outcome": result.kind.value, "attempts": attempts}
    if result.message_id:
        out["messageId"] = result.message_id
    if result.error:
        out["error"] = result.error
    return out


# ---- simulated phones (the push emulator's: `bgtasks up --push emulator`) ---------------------


def _control(method: str, path: str, body: Any = None) -> Any:
    from mobile_push.emulator.control import ControlClient
    from mobile_push.emulator.phones import FleetError

    try:
        return ControlClient(cli.settings().home / "emulator").request(method, path, body)
    except FleetError as exc:
        cli.fail(f"Invalid {exc.field}: {exc.message}" if exc.status == 422 else exc.message)


def _print_phone(p: dict[str, Any], log_lines: int) -> None:
    state = p["state"]
    flags = [f"network {state['network']}", f"battery {state['battery']}%",
             "charging" if state["charging"] else "unplugged", "idle" if state["idle"] else "in use"]
    flags += [f for f, on in (("storage low", state["storageLow"]), ("app killed", state["appKilled"]),
                              ("uninstalled", p["uninstalled"])) if on]
    cli.console.print(f"[bold]{cli.shown(p['id'])}[/] ({p['platform']}): {', '.join(flags)}")
    for w in p["work"]:
        why = f" for {cli.shown(w['waitingFor'])}" if w["waitingFor"] else ""
        cli.console.print(f"  run {w['runId'][:8]} {cli.shown(w['taskName'])}: {w['status']}{why}"
                          + (f", stopped {w['stops']}x" if w["stops"] else ""))
    for line in p["log"][-log_lines:]:
        cli.console.print(f"  [dim]{cli.shown(line)}[/]")


@device_app.command
def simulate(
    *,
    platform: Literal["android", "ios"],
    count: Annotated[int, Parameter(help="How many phones.")] = 1,
    label: Annotated[list[str] | None, Parameter(name=["--label", "-l"], help="Repeatable.")] = None,
    environment: Annotated[Literal["production", "sandbox"] | None, Parameter(
        help="iOS: the APNs environment the simulated app registers with.")] = None,
    output: Output = "table",
) -> None:
    """Add simulated phones to the push emulator; each registers with bgtasks as an app backend
    would, then wakes, works and reports as its platform does."""
    made = _control("POST", "/phones", {"platform": platform, "count": count, "labels": label or [],
                                        "environment": environment})
    if output == "json":
        cli.print_json(made)
        return
    cli.console.print(f"{len(made)} simulated {platform} phone(s): " + ", ".join(cli.shown(p["id"]) for p in made))


@device_app.command(name="set")
def set_state(
    device_id: str,
    *,
    charging: Annotated[bool | None, Parameter(help="Plugged in (--no-charging: unplugged).")] = None,
    battery: Annotated[int | None, Parameter(help="Battery level, percent.")] = None,
    network: Literal["wifi", "cellular", "none"] | None = None,
    idle: Annotated[bool | None, Parameter(help="Android: dozing; iOS: locked and unused.")] = None,
    storage_low: bool | None = None,
    app_killed: Annotated[bool | None, Parameter(help="Force-stopped (Android) / force-quit (iOS).")] = None,
    rotate_token: Annotated[bool, Parameter(help="The platform issues a new push token; the app sends it to bgtasks.",
                                            negative="")] = False,
    uninstall: Annotated[bool, Parameter(help="Uninstall the app: its push token dies.", negative="")] = False,
    output: Output = "table",
) -> None:
    """Change a simulated phone: what it does next follows (work starts, stops, pushes wait)."""
    change = {k: v for k, v in (("charging", charging), ("battery", battery), ("network", network), ("idle", idle),
                                ("storageLow", storage_low), ("appKilled", app_killed)) if v is not None}
    phone = None
    if change or not (rotate_token or uninstall):
        phone = _control("PATCH", f"/phones/{device_id}", change)
    if rotate_token:
        phone = _control("POST", f"/phones/{device_id}/rotate-token")
    if uninstall:
        phone = _control("POST", f"/phones/{device_id}/uninstall")
    if output == "json":
        cli.print_json(phone)
    else:
        _print_phone(phone, 5)


@device_app.command
def phones(device_id: str | None = None, *, log: Annotated[int, Parameter(help="Log lines per phone.")] = 5,
           output: Output = "table") -> None:
    """The simulated phones: their state, their work (waiting for what) and what they did last."""
    found = _control("GET", f"/phones/{device_id}" if device_id else "/phones")
    if output == "json":
        cli.print_json(found)
        return
    for p in found if isinstance(found, list) else [found]:
        _print_phone(p, log)
