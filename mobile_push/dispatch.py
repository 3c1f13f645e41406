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
4. The run waits until every reached device has reported or the deadline passes.

The outcome's ``summary()`` is the run's result data; ``problems()`` say why it
failed (a device reported failure, a report is missing, nothing was reachable).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from bgtasks.models import TaskTarget
from bgtasks.settings import Settings
from mobile_push.registry import Device, DeviceRegistry
from mobile_push.reports import Delivery, Report, RunLedger
from mobile_push.types import OutcomeKind, PushMessage, Sender, SendResult, Transport

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
    def missing(self) -> list[str]:
        return [i for i in self.reached if i not in self.reports]

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
            "reported": sorted(self.reports),
            "missing": self.missing,
            "skipped": [{"deviceId": d.id, "reason": d.invalid_reason or "invalid"} for d in self.skipped_invalid],
            "unknown": self.unknown_ids,
        }

    def retry_can_help(self) -> bool:
        """False when the only problems are pushes refused for a device's configuration
        (its token is from another project, its topic is not the app's): pushing again
        would be refused the same way."""
        if self.missing or not self.devices or any(not r.success for r in self.reports.values()):
            return True
        ids = {d.id for d in self.devices}
        undelivered = [d for i, d in self.deliveries.items() if i in ids and d.outcome != OutcomeKind.DELIVERED]
        return not undelivered or any(d.outcome != OutcomeKind.CONFIG for d in undelivered)

    def problems(self) -> list[str]:
        out = []
        failed = {i: r for i, r in self.reports.items() if not r.success}
        for device_id, report in sorted(failed.items()):
            why = report.error or "no error given"
            if report.stop_reason:
                why += f" (stopped by the system: {report.stop_reason})"
            out.append(f"device {device_id} reported failure: {why}")
        if self.missing:
            out.append(f"no report from {len(self.missing)} device(s): {', '.join(self.missing)}")
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
    deadline: float,
    send_chunk: ChunkSender,
) -> DeviceRunOutcome:
    """Push to the target's devices (those not yet reached by this run) and wait for reports.

    ``deadline`` is a ``time.monotonic()`` value. ``send_chunk`` sends one chunk with
    retries (the flow wraps it in a Prefect task per chunk).
    """
    from mobile_push.payload import PayloadTooLarge, build_payload, check_size
    from mobile_push.senders import missing_credentials_error

    active, invalid, unknown = await registry.resolve(target.device_ids, target.labels, target.platform)
    done = await ledger.deliveries(run_id)
    todo = [d for d in active if not (d.id in done and done[d.id].outcome == OutcomeKind.DELIVERED)]

    missing = sorted({d.transport for d in todo} - set(senders))
    if missing:
        raise PushConfigError("; ".join(missing_credentials_error(t, settings.push) for t in missing))

    base = report_base_url(settings)
    messages: list[PushMessage] = []
    for device in todo:
        token = await ledger.issue_token(run_id, device.id, task_id)
        payload = build_payload(
            task_id=task_id or "", run_id=run_id, task_name=task_name, handler=handler, constraints=constraints,
            data=data, report_token=token, report_base_url=base, device_id=device.id,
        )
        try:
            check_size(payload, device.transport, platform=device.platform)  # before any network call
        except PayloadTooLarge as exc:
            raise PushConfigError(f"{exc} (nothing was sent)") from None
        messages.append(PushMessage(target=device.target(), payload=payload, collapse_key=target.collapse_key,
                                    ttl_s=max(60, int(deadline - time.monotonic())),
                                    high_priority=target.high_priority, push_id=_push_id(run_id, device.id)))

    config_errors: list[str] = []
    size = settings.push.chunk_size
    for transport in sorted({m.target.transport for m in messages}):
        batch = [m for m in messages if m.target.transport == transport]
        for i in range(0, len(batch), size):
            for result, attempts in await send_chunk(senders[transport], batch[i:i + size], deadline):
                device_id = result.message.target.device_id
                await ledger.record_delivery(
                    run_id=run_id, task_id=task_id, device_id=device_id, transport=transport.value,
                    outcome=result.kind.value, attempts=attempts, message_id=result.message_id, error=result.error)
                if result.kind == OutcomeKind.INVALID_TOKEN:
                    await registry.mark_invalid(device_id, invalid_reason(result))
                elif (environment := result.extra.get("apnsEnvironment")) is not None:
                    await registry.set_environment(device_id, environment)  # its token is from there
                elif result.kind == OutcomeKind.CONFIG and result.extra.get("scope") != "device":
                    config_errors.append(result.error or result.reason or "configuration error")
    if config_errors:
        raise PushConfigError("; ".join(dict.fromkeys(config_errors)))

    outcome = DeviceRunOutcome(active, await ledger.deliveries(run_id), {}, invalid, unknown)
    while True:
        outcome.reports = await ledger.reports(run_id)
        if not outcome.missing or time.monotonic() >= deadline:
            return outcome
        await asyncio.sleep(min(REPORT_POLL_S, max(0.0, deadline - time.monotonic())))


def invalid_reason(result: SendResult) -> str:
    """Why a device was marked invalid: the service's code, then the explanation."""
    return " - ".join(x for x in (result.reason, result.error) if x) or "token rejected"


def _push_id(run_id: str, device_id: str) -> str:
    """A stable UUID per (run, device): the apns-id, so duplicates are recognisable on the device."""
    import uuid

    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"bgtasks:{run_id}:{device_id}")).upper()
