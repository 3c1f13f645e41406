"""The silent push's payload: one flat map of strings, and what each transport puts on the wire.

Pure: no I/O, no clock unless none is given (``sent_at``).

The payload is a *flat* ``dict[str, str]`` because FCM data values must be
strings; the same map travels to APNs under the ``bgtasks`` key of the JSON
body, so the device code is the same for both transports. Structured values
(``constraints``, ``data``) are compact JSON strings inside the map. The keys
and their meaning are pinned by ``docs/push-payload.schema.json``:

=================  ==========================================================
``bgtasks``        schema version, ``"1"``
``taskId``         the task's id (empty for a test push)
``runId``          the run's id (unique work name on the device)
``taskName``       the task's name, for logs
``handler``        the device-side handler to run (may be empty)
``constraints``    compact JSON of the spec's ``TaskConstraints`` (camelCase)
``data``           compact JSON of the task's input data
``reportToken``    per-run secret the device echoes in its report
``reportUrl``      ``{api}/devices/{deviceId}/runs/{runId}/report``
``sentAt``         ISO-8601 UTC, milliseconds, ``Z``
=================  ==========================================================

Size limits (both 4096 bytes) are checked here, before any network call,
measuring exactly the bytes each transport sends:

* APNs: the HTTP/2 request body, ``apns_body_bytes(payload)``. Apple's limit
  is on that body.
* FCM: the v1 ``message`` object **minus its target** (token/fid/topic), as
  firebase-admin 7.7 encodes it (``MessageEncoder``) and httpx 0.28 serialises
  it (compact separators, ``ensure_ascii=False``): ``data`` plus the
  ``android`` block (Android) or the ``apns`` block (iOS through FCM). Google
  documents the 4096-byte limit loosely ("the payload"); counting the whole
  message but the target is the strict reading, and the one the local fake
  enforces. The integration tests pin that :func:`fcm_message` equals what
  firebase-admin encodes for the sender's ``messaging.Message``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote, urlsplit

from mobile_push.types import Platform, PushMessage, Transport

__all__ = [
    "SCHEMA_VERSION", "MAX_PAYLOAD_BYTES", "PAYLOAD_KEYS", "CONSTRAINT_KEYS", "PayloadTooLarge", "report_url",
    "build_payload", "fcm_message", "fcm_message_size", "apns_body", "apns_body_bytes", "check_size",
    "check_message", "format_sent_at",
]

#: The payload's ``bgtasks`` key: bump when a key changes meaning or disappears.
SCHEMA_VERSION = "1"
#: FCM's data-message limit and APNs' limit for every push type but VoIP.
MAX_PAYLOAD_BYTES = 4096
#: Every key of the payload map, in the order they are built.
PAYLOAD_KEYS = (
    "bgtasks", "taskId", "runId", "taskName", "handler", "constraints", "data", "reportToken", "reportUrl",
    "sentAt",
)
#: The spec's ``TaskConstraints`` in camelCase, each mapped by the device guides
#: (docs/android-workmanager.md, docs/ios-background.md).
CONSTRAINT_KEYS = (
    "requiresNetwork", "requiresWifi", "requiresCharging", "requiresBatteryNotLow", "requiresDeviceIdle",
    "requiresStorageNotLow",
)


class PayloadTooLarge(ValueError):
    """The bytes a transport would send exceed its limit; nothing was sent.

    Attributes:
        transport: the transport whose body was measured.
        size: the measured bytes.
        limit: the transport's limit.
        biggest_field: the payload key with the longest value (usually ``data``).
        biggest_size: that value's length in UTF-8 bytes.
    """

    def __init__(self, transport: Transport, size: int, limit: int, biggest_field: str, biggest_size: int) -> None:
        self.transport = Transport(transport)
        self.size = size
        self.limit = limit
        self.biggest_field = biggest_field
        self.biggest_size = biggest_size
        super().__init__(
            f"push payload too large for {self.transport.value.upper()}: {size} bytes, the limit is {limit}; "
            f"the biggest field is {biggest_field!r} ({biggest_size} bytes): shrink the task's "
            f"{'input data' if biggest_field == 'data' else biggest_field}, or send a reference "
            f"(an id or URL) the device fetches"
        )

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.transport, self.size, self.limit, self.biggest_field, self.biggest_size))


def _compact(value: Any, field: str) -> str:
    try:
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{field}: not JSON-serialisable ({exc})") from None


def _text(value: Any, field: str, *, empty_ok: bool = False) -> str:
    if not isinstance(value, str):
        raise ValueError(f"{field}: expected a string, got {type(value).__name__}")
    if not empty_ok and not value.strip():
        raise ValueError(f"{field}: must not be empty")
    return value


def format_sent_at(when: datetime) -> str:
    """``2025-01-02T03:04:05.678Z``: UTC, milliseconds, ``Z`` (what ``java.time.Instant`` and
    ``ISO8601DateFormatter`` with fractional seconds both parse)."""
    if when.tzinfo is None or when.utcoffset() is None:
        raise ValueError("sent_at: must be timezone-aware (UTC)")
    utc = when.astimezone(UTC)
    return utc.strftime("%Y-%m-%dT%H:%M:%S.") + f"{utc.microsecond // 1000:03d}Z"


def report_url(report_base_url: str, device_id: str, run_id: str) -> str:
    """``{report_base_url}/devices/{deviceId}/runs/{runId}/report``, each id percent-encoded.

    ``report_base_url`` is the REST API as devices reach it (``BGTASKS_PUSH_PUBLIC_URL``),
    ``http(s)://host[:port][/prefix]``.
    """
    base = _text(report_base_url, "report_base_url").strip()
    parts = urlsplit(base)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"report_base_url: {base!r} is not an absolute http(s) URL")
    if parts.query or parts.fragment:
        raise ValueError(f"report_base_url: {base!r} must not have a query or fragment")
    device = quote(_text(device_id, "device_id"), safe="")
    run = quote(_text(run_id, "run_id"), safe="")
    return f"{base.rstrip('/')}/devices/{device}/runs/{run}/report"


def _constraints_dict(constraints: Any) -> dict[str, bool]:
    if hasattr(constraints, "to_json_dict"):  # bgtasks.models.TaskConstraints
        constraints = constraints.to_json_dict()
    if constraints is None:
        return {}
    if not isinstance(constraints, Mapping):
        raise ValueError(f"constraints: expected a mapping of {', '.join(CONSTRAINT_KEYS)}")
    out: dict[str, bool] = {}
    for key, value in constraints.items():
        if key not in CONSTRAINT_KEYS:
            raise ValueError(f"constraints.{key}: unknown constraint (known: {', '.join(CONSTRAINT_KEYS)})")
        if value is None:
            continue  # unset: the device's default (no constraint)
        if not isinstance(value, bool):
            raise ValueError(f"constraints.{key}: expected true/false, got {type(value).__name__}")
        out[key] = value
    return out


def build_payload(
    *,
    task_id: str,
    run_id: str,
    task_name: str,
    handler: str | None,
    constraints: Mapping[str, bool | None] | Any,
    data: Any,
    report_token: str,
    report_base_url: str,
    device_id: str,
    sent_at: datetime | None = None,
) -> dict[str, str]:
    """The flat string map of one silent push (see the module docstring for each key).

    Args:
        task_id, run_id, task_name: the task and the run the device performs (``task_id``
            is empty for a push that belongs to no task, e.g. ``bgtasks device test``).
        handler: the device-side handler name; ``None`` or ``""`` when the app has one.
        constraints: the spec's ``TaskConstraints`` as its camelCase dict (or the model);
            ``None`` values are dropped.
        data: the task's input, any JSON value.
        report_token: the per-run secret the device sends back with its report.
        report_base_url: the REST API's URL as devices reach it; with ``device_id``
            it makes ``reportUrl`` (:func:`report_url`).
        sent_at: when the push is built (timezone-aware); default now.

    Raises:
        ValueError: a field is missing or of the wrong type (the message names it).
    """
    when = sent_at if sent_at is not None else datetime.now(UTC)
    return {
        "bgtasks": SCHEMA_VERSION,
        "taskId": _text(task_id, "task_id", empty_ok=True),
        "runId": _text(run_id, "run_id"),
        "taskName": _text(task_name, "task_name"),
        "handler": _text(handler or "", "handler", empty_ok=True),
        "constraints": _compact(_constraints_dict(constraints), "constraints"),
        "data": _compact(data, "data"),
        "reportToken": _text(report_token, "report_token"),
        "reportUrl": report_url(report_base_url, device_id, run_id),
        "sentAt": format_sent_at(when),
    }


def _check_flat(payload: Mapping[str, str]) -> None:
    for key, value in payload.items():
        if not isinstance(key, str) or not isinstance(value, str):
            raise ValueError(f"payload.{key}: FCM data values must be strings, got {type(value).__name__}")


# ----------------------------------------------------------------------------- FCM


def _ttl(ttl_s: float) -> str:
    """firebase-admin's ``encode_ttl``: ``"3600s"``, or nanoseconds when fractional."""
    if ttl_s < 0 or math.isnan(ttl_s):
        raise ValueError("ttl_s: must be >= 0")
    seconds = int(math.floor(ttl_s))
    nanos = int((ttl_s - seconds) * 1e9)
    return f"{seconds}.{str(nanos).zfill(9)}s" if nanos else f"{seconds}s"


def fcm_message(
    payload: Mapping[str, str],
    *,
    platform: Platform = Platform.ANDROID,
    ttl_s: float = 3600,
    collapse_key: str | None = None,
    high_priority: bool = False,
    expires_at_s: int | None = None,
) -> dict[str, Any]:
    """The FCM v1 ``message`` object minus its target, as firebase-admin encodes our message.

    Android: ``data`` + ``android`` (priority ``normal`` unless ``high_priority``:
    a high-priority push that shows no notification gets deprioritised by FCM;
    ``ttl``; ``collapse_key``). iOS through FCM: ``data`` + ``apns`` with the
    background headers (``apns-push-type: background``, ``apns-priority: 5``,
    ``apns-expiration`` = ``expires_at_s``, ``apns-collapse-id``) and
    ``{"aps": {"content-available": 1}}`` (no alert, sound or badge).
    """
    _check_flat(payload)
    msg: dict[str, Any] = {"data": dict(payload)}
    if Platform(platform) is Platform.ANDROID:
        android: dict[str, Any] = {}
        if collapse_key is not None:
            android["collapse_key"] = collapse_key
        android["priority"] = "high" if high_priority else "normal"
        android["ttl"] = _ttl(ttl_s)
        msg["android"] = android
    else:
        headers = {"apns-push-type": "background", "apns-priority": "5"}
        if expires_at_s is not None:
            headers["apns-expiration"] = str(int(expires_at_s))
        if collapse_key is not None:
            headers["apns-collapse-id"] = collapse_key
        msg["apns"] = {"headers": headers, "payload": {"aps": {"content-available": 1}}}
    return msg


def fcm_message_size(payload: Mapping[str, str], **options: Any) -> int:
    """UTF-8 bytes of :func:`fcm_message` serialised as httpx sends it. ``options`` as for ``fcm_message``;
    ``expires_at_s`` defaults to a 10-digit placeholder (every epoch second until 2286 has 10 digits)."""
    options.setdefault("expires_at_s", 9_999_999_999)
    return len(_compact(fcm_message(payload, **options), "payload").encode())


# ---------------------------------------------------------------------------- APNs


def apns_body(payload: Mapping[str, str]) -> dict[str, Any]:
    """``{"aps": {"content-available": 1}, "bgtasks": payload}``: a background push, no alert/sound/badge."""
    _check_flat(payload)
    return {"aps": {"content-available": 1}, "bgtasks": dict(payload)}


def apns_body_bytes(payload: Mapping[str, str]) -> bytes:
    """The APNs request body: compact UTF-8 JSON of :func:`apns_body`."""
    return _compact(apns_body(payload), "payload").encode()


# ---------------------------------------------------------------------------- size


def _biggest(payload: Mapping[str, str]) -> tuple[str, int]:
    if not payload:
        return "(none)", 0
    key = max(payload, key=lambda k: len(payload[k].encode()))
    return key, len(payload[key].encode())


def check_size(
    payload: Mapping[str, str],
    transport: Transport,
    *,
    platform: Platform = Platform.ANDROID,
    ttl_s: float = 3600,
    collapse_key: str | None = None,
    high_priority: bool = False,
    limit: int = MAX_PAYLOAD_BYTES,
) -> int:
    """Measure what ``transport`` would send (see the module docstring) and return the size.

    Raises:
        PayloadTooLarge: the size is above ``limit`` (4096).
        ValueError: a payload value is not a string.
    """
    if Transport(transport) is Transport.APNS:
        size = len(apns_body_bytes(payload))
    else:
        size = fcm_message_size(payload, platform=platform, ttl_s=ttl_s, collapse_key=collapse_key,
                                high_priority=high_priority)
    if size > limit:
        field, field_size = _biggest(payload)
        raise PayloadTooLarge(transport, size, limit, field, field_size)
    return size


def check_message(message: PushMessage) -> int:
    """:func:`check_size` for one ``PushMessage``, with the options its sender will use."""
    t = message.target
    return check_size(message.payload, t.transport, platform=t.platform, ttl_s=message.ttl_s,
                      collapse_key=message.collapse_key, high_priority=message.high_priority)
