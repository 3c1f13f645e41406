"""Dead-token feedback: tell the app's backend when a push service declares a device's token dead.

When FCM or APNs refuses a device's token for good (``UNREGISTERED``, 410
``Unregistered``, ``BadDeviceToken`` on both environments...), bgtasks marks the
device invalid and, when ``BGTASKS_PUSH_FEEDBACK_URL`` is set, POSTs::

    {"event": "device.invalid", "deviceId": ..., "platform": ..., "transport": ...,
     "reason": "Unregistered", "error": "...", "invalidAt": "...Z",
     "unregisteredAt": "...Z" (APNs' 410 timestamp, when given), "runId": ..., "taskId": ...}

signed like Stripe's webhooks: ``X-Bgtasks-Signature: t=<unix seconds>,v1=<hex>``
where ``v1`` is HMAC-SHA256 over ``"<t>.<body>"`` with ``BGTASKS_PUSH_FEEDBACK_SECRET``
(the receiver checks it and refuses an old ``t``: no replay). The call is made
once with a 5 s timeout; a failure is logged (without the secret or the token)
and never fails the run: the device's state in the registry is the record.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import time
from datetime import UTC, datetime
from typing import Any

from bgtasks.settings import PushSettings
from mobile_push.registry import Device
from mobile_push.types import SendResult

log = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-Bgtasks-Signature"
TIMEOUT_S = 5.0


def sign(secret: str, body: bytes, t: int) -> str:
    """The signature header's value for ``body`` sent at unix time ``t``."""
    mac = hmac.new(secret.encode(), f"{t}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={t},v1={mac}"


def verify(secret: str, body: bytes, header: str, now: float, tolerance_s: float = 300.0) -> bool:
    """What a receiver does (and the tests): the MAC matches and ``t`` is recent."""
    parts = dict(p.split("=", 1) for p in header.split(",") if "=" in p)
    try:
        t = int(parts["t"])
    except (KeyError, ValueError):
        return False
    expected = sign(secret, body, t).split("v1=", 1)[1]
    return abs(now - t) <= tolerance_s and hmac.compare_digest(expected, parts.get("v1", ""))


def _iso(v: datetime) -> str:
    return v.astimezone(UTC).isoformat().replace("+00:00", "Z")


def event_for(device: Device, result: SendResult, reason: str, *, run_id: str | None,
              task_id: str | None, now: datetime) -> dict[str, Any]:
    """The webhook's JSON body (no token: it is a credential of sorts, and dead anyway)."""
    body: dict[str, Any] = {"event": "device.invalid", "deviceId": device.id, "platform": device.platform.value,
                            "transport": device.transport.value, "reason": result.reason or "invalid",
                            "error": reason, "invalidAt": _iso(now), "runId": run_id, "taskId": task_id}
    ms = result.extra.get("unregisteredAtMs")
    if ms and ms.isdigit():
        body["unregisteredAt"] = _iso(datetime.fromtimestamp(int(ms) / 1000, UTC))
    return body


async def notify_invalid(settings: PushSettings, device: Device, result: SendResult, reason: str, *,
                         run_id: str | None = None, task_id: str | None = None) -> bool:
    """POST the event when a feedback URL is set; True when the receiver answered 2xx."""
    if not settings.feedback_url or settings.feedback_secret is None:
        return False
    import httpx

    body = json.dumps(event_for(device, result, reason, run_id=run_id, task_id=task_id,
                                now=datetime.now(UTC)), separators=(",", ":")).encode()
    headers = {"Content-Type": "application/json",
               SIGNATURE_HEADER: sign(settings.feedback_secret.get_secret_value(), body, int(time.time()))}
    try:
        async with httpx.AsyncClient(timeout=TIMEOUT_S) as client:
            response = await client.post(settings.feedback_url, content=body, headers=headers)
    except Exception as exc:  # noqa: BLE001 - never fails the run (an unusable URL included)
        log.warning("push feedback for device %s not delivered: %s", device.id, type(exc).__name__)
        return False
    if not response.is_success:
        log.warning("push feedback for device %s: the receiver answered %d", device.id, response.status_code)
        return False
    return True
