"""One attempt of a device-targeted run: push to the target devices, wait for their reports.

1. The target (ids, labels, platform) is resolved in the registry: active devices
   are pushed to; invalid ones (a push service rejected their token earlier) and
   unknown ids are listed and skipped.
2. Devices that already accepted this run's push (a delivery with the run's
   idempotency key) are not pushed to again: a retried run only waits for them.
3. Each remaining device gets a fresh per-run report token and a silent push
   whose payload is checked for size first (nothing is sent when it is too big).
   Pushes go out in chunks (``push.chunk_size``), each retried per the push
   settings for transient errors; every outcome is recorded as a delivery. A
   rejected token marks the device invalid. A configuration error of the
   credentials or the message fails the run without retry, with the fix in the
   message; one that belongs to a device (its token is from another Firebase
   project, its topic is not the app's) fails that device's delivery only, and
   the run goes on for the others.
4. A device whose push budget is spent (:mod:`mobile_push.budget`) is not pushed
   to: its delivery is ``held`` with the time the budget allows it, and the run
   pushes it then if that comes before the deadline.
5. A device whose token a service declares dead is marked invalid, and the
   feedback webhook is called (:mod:`mobile_push.feedback`).
6. The run waits until every reached device has sent its final report (succeeded or failed)
   or the deadline passes; progress reports (started, stopped) are shown and keep it waiting.

The outcome's ``summary()`` is the run's result data; ``problems()`` say why it
failed (a device reported failure, a report is missing, nothing was reachable).
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from bgtasks.models import TaskTarget
from bgtasks.settings import Settings
from mobile_push import budget
from mobile_push.feedback import notify_invalid
from mobile_push.registry import Device, DeviceRegistry
from mobile_push.reports import HELD, Delivery, Report, RunLedger
from mobile_push.types import OutcomeKind, Platform, PushMessage, Sender, SendResult, Transport

#: How often the run looks for new reports while it waits.
REPORT_POLL_S = 0.5

#: ``send_chunk(sender, messages, deadline)``: one chunk with retries, none waiting past ``deadline``.
ChunkSender = Callable[[Sender, Sequence[PushMessage], float], Awaitable[list[tuple[SendResult, int]]]]


class PushConfigError(RuntimeError):
    """Credentials, topic or sender are wrong, or the payload is too big: retrying cannot
    help (the run fails at once)."""

    retryable = False


@dataclass
class DeviceRunOutcome:
    devices: list[Device]
    deliveries: dict[str, Delivery]
    reports: dict[str, Report]
    skipped_invalid: list[Device] = field(default_factory=list)
    unknown_ids: list[str] = field(default_factory=list)

    @property
    def reached(self) -> list[str]:
        return [d.id for d in self.devices if self.deliveries.get(d.id, None) and
                self.deliveries[d.id].outcome == OutcomeKind.DELIVERED]

    @property
    def final(self) -> dict[str, Report]:
        """The final reports (succeeded, failed); the others are progress (started, stopped)."""
        return {i: r for i, r in self.reports.items() if r.final}

    @property
    def missing(self) -> list[str]:
        """Reached devices without a final report."""
        return [i for i in self.reached if i not in self.final]

    def summary(self) -> dict[str, Any]:
        rows = []
        for d in self.devices:
            row: dict[str, Any] = {"deviceId": d.id, "platform": d.platform.value, "transport": d.transport.value}
            if d.id in self.deliveries:
                row["delivery"] = self.deliveries[d.id].to_json_dict()
            if d.id in self.reports:
                row["report"] = self.reports[d.id].to_json_dict()
            rows.append(row)
        return {
            "devices": rows,
            "reported": sorted(self.final),
            "missing": self.missing,
            "skipped": [{"deviceId": d.id, "reason": d.invalid_reason or "invalid"} for d in self.skipped_invalid],
            "unknown": self.unknown_ids,
        }

    def retry_can_help(self) -> bool:
        """False when the only problems are pushes refused for a device's configuration
        (its token is from another project, its topic is not the app's): pushing again
        would be refused the same way."""
        if self.missing or not self.devices or any(not r.success for r in self.final.values()):
            return True
        ids = {d.id for d in self.devices}
        undelivered = [d for i, d in self.deliveries.items() if i in ids and d.outcome != OutcomeKind.DELIVERED]
        return not undelivered or any(d.outcome != OutcomeKind.CONFIG for d in undelivered)

    def problems(self) -> list[str]:
        out = []
        failed = {i: r for i, r in self.final.items() if not r.success}
        for device_id, report in sorted(failed.items()):
            why = report.error or "no error given"
            if report.stop_reason:
                why += f" (stopped by the system: {report.stop_reason})"
            out.append(f"device {device_id} reported failure: {why}")
        if self.missing:
            out.append(f"no final report from {len(self.missing)} device(s): {', '.join(self.missing)}")
            for device_id in self.missing:
                if (last := self.reports.get(device_id)) is not None and last.state == "stopped":
                    out.append(f"device {device_id} was stopped by the system ({last.stop_reason}) and had not "
                               "run again by the deadline")
        undelivered = [i for i, d in self.deliveries.items() if d.outcome != OutcomeKind.DELIVERED
                       and i in {x.id for x in self.devices}]
        for device_id in undelivered:
            out.append(f"push to {device_id} not delivered: {self.deliveries[device_id].error or self.deliveries[device_id].outcome}")
        if not self.devices:
            out.append("no active device matches the target"
                       + (f" (skipped invalid: {', '.join(d.id for d in self.skipped_invalid)})" if self.skipped_invalid else "")
                       + (f" (unknown ids: {', '.join(self.unknown_ids)})" if self.unknown_ids else ""))
        return out


def report_base_url(settings: Settings) -> str:
    """Where devices report (``BGTASKS_PUSH_PUBLIC_URL``); a CONFIG error when it is not set: a
    device sends its report token there, so bgtasks never guesses an address."""
    if not settings.push.public_url:
        raise PushConfigError("BGTASKS_PUSH_PUBLIC_URL is not set: set it to the https address where devices "
                              "reach the REST API (http only on a loopback address, for development)")
    return settings.push.public_url.rstrip("/")


async def run_attempt(
    *,
    settings: Settings,
    registry: DeviceRegistry,
    ledger: RunLedger,
    senders: dict[Transport, Sender],
    run_id: str,
    task_id: str | None,
    task_name: str,
    handler: str,
    target: TaskTarget,
    constraints: dict[str, Any],
    data: Any,
    deadline: float | None,
    send_chunk: ChunkSender,
) -> DeviceRunOutcome:
    """Push to the target's devices (those not yet reached by this run) and wait for reports.

    ``deadline`` is a ``time.monotonic()`` value (the task's timeout); None: the longest report
    wait of the target devices' platforms (:func:`report_wait_s`). ``send_chunk`` sends one
    chunk with retries (the flow wraps it in a Prefect task per chunk).
    """
    from mobile_push.payload import PayloadTooLarge, build_payload, check_size
    from mobile_push.senders import missing_credentials_error

    active, invalid, unknown = await registry.resolve(target.device_ids, target.labels, target.platform)
    if deadline is None:
        deadline = time.monotonic() + report_wait_s(settings.push, {d.platform for d in active})
    done = await ledger.deliveries(run_id)
    todo = [d for d in active if not (d.id in done and done[d.id].outcome == OutcomeKind.DELIVERED)]

    missing = sorted({d.transport for d in todo} - set(senders))
    if missing:
        raise PushConfigError("; ".join(missing_credentials_error(t, settings.push) for t in missing))

    base = report_base_url(settings)
    label = target.analytics_label or analytics_label_for(task_name)

    async def message_for(device: Device) -> PushMessage:
        token = await ledger.issue_token(run_id, device.id, task_id)
        payload = build_payload(
            task_id=task_id or "", run_id=run_id, task_name=task_name, handler=handler, constraints=constraints,
            data=data, report_token=token, report_base_url=base, device_id=device.id,
        )
        try:
            check_size(payload, device.transport, platform=device.platform)  # before any network call
        except PayloadTooLarge as exc:
            raise PushConfigError(f"{exc} (nothing was sent)") from None
        return PushMessage(target=device.target(), payload=payload, collapse_key=target.collapse_key,
                           ttl_s=max(60, int(deadline - time.monotonic())), high_priority=target.high_priority,
                           push_id=_push_id(run_id, device.id),
                           analytics_label=label if device.transport == Transport.FCM else None)

    config_errors: list[str] = []
    devices_by_id = {d.id: d for d in todo}

    async def push(ready: list[Device]) -> None:
        messages = [await message_for(d) for d in ready]
        size = settings.push.chunk_size
        for transport in sorted({m.target.transport for m in messages}):
            batch = [m for m in messages if m.target.transport == transport]
            for i in range(0, len(batch), size):
                for result, attempts in await send_chunk(senders[transport], batch[i:i + size], deadline):
                    device_id = result.message.target.device_id
                    await ledger.record_delivery(
                        run_id=run_id, task_id=task_id, device_id=device_id, transport=transport.value,
                        outcome=result.kind.value, attempts=attempts, message_id=result.message_id,
                        error=result.error, reason=result.reason)
                    if result.kind == OutcomeKind.INVALID_TOKEN:
                        reason = invalid_reason(result)
                        await registry.mark_invalid(device_id, reason)
                        await notify_invalid(settings.push, devices_by_id[device_id], result, reason,
                                             run_id=run_id, task_id=task_id)
                    elif (environment := result.extra.get("apnsEnvironment")) is not None:
                        await registry.set_environment(device_id, environment)  # its token is from there
                    elif result.kind == OutcomeKind.CONFIG and result.extra.get("scope") != "device":
                        config_errors.append(result.error or result.reason or "configuration error")

    # The push budget: a device pushed to as often as its budget allows in the trailing hour is
    # held (a delivery with the time it will go) and pushed then, while the run still waits.
    pending = todo
    while pending:
        now = datetime.now(UTC)
        per_hour = {d.id: budget.per_hour(d.platform, settings.push, target.pushes_per_hour) for d in pending}
        slots = await ledger.reserve(run_id, task_id, [(d.id, d.transport.value) for d in pending],
                                     lambda device_id, times: budget.next_slot(times, per_hour[device_id], now))
        await push([d for d in pending if d.id not in slots])
        held = [(d, slots[d.id], per_hour[d.id]) for d in pending if d.id in slots]
        if config_errors:
            raise PushConfigError("; ".join(dict.fromkeys(config_errors)))
        if not held:
            break
        first = min(slot for _, slot, _ in held)
        wait_s = (first - now).total_seconds()
        too_late = time.monotonic() + wait_s > deadline
        for device, slot, per_hour in held:
            after = time.monotonic() + (slot - now).total_seconds() > deadline
            await ledger.record_delivery(
                run_id=run_id, task_id=task_id, device_id=device.id, transport=device.transport.value,
                outcome=HELD, attempts=0, message_id=None, held_until=slot, reason="PushBudget",
                error=f"held by the push budget ({per_hour} an hour for this device) until "
                      f"{slot.isoformat().replace('+00:00', 'Z')}" + (", after the run's timeout" if after else ""))
        if too_late:
            break
        await asyncio.sleep(wait_s)
        pending = [device for device, _, _ in held]

    outcome = DeviceRunOutcome(active, await ledger.deliveries(run_id), {}, invalid, unknown)
    while True:
        outcome.reports = await ledger.reports(run_id)
        if not outcome.missing or time.monotonic() >= deadline:
            return outcome
        await asyncio.sleep(min(REPORT_POLL_S, max(0.0, deadline - time.monotonic())))


def report_wait_s(push: Any, platforms: set[Platform]) -> float:
    """How long a run without a timeout waits for reports: the longest of its platforms' waits
    (iOS runs longer work in a BGProcessingTask, started only while idle and charging)."""
    return max((push.report_wait_ios_s if p == Platform.IOS else push.report_wait_s for p in platforms),
               default=push.report_wait_s)


def analytics_label_for(task_name: str) -> str:
    """FCM's analyticsLabel for a task: its name, other characters than ``[A-Za-z0-9-_.~%]`` as ``-``."""
    return re.sub(r"[^A-Za-z0-9\-_.~%]", "-", task_name)[:50] or "bgtasks"


def invalid_reason(result: SendResult) -> str:
    """Why a device was marked invalid: the service's code, then the explanation."""
    return " - ".join(x for x in (result.reason, result.error) if x) or "token rejected"


def _push_id(run_id: str, device_id: str) -> str:
    """A stable UUID per (run, device): the apns-id, so duplicates are recognisable on the device."""
    import uuid

    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"bgtasks:{run_id}:{device_id}")).upper()
