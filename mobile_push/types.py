"""The vocabulary shared by the registry, the senders and the dispatcher (no I/O)."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Protocol, Sequence


class Platform(StrEnum):
    ANDROID = "android"
    IOS = "ios"


class Transport(StrEnum):
    FCM = "fcm"
    APNS = "apns"


class OutcomeKind(StrEnum):
    """What a send's answer means, for both transports (see :mod:`mobile_push.classify`)."""

    DELIVERED = "delivered"          # accepted by FCM / APNs
    INVALID_TOKEN = "invalid-token"  # the device's token is dead: mark it invalid, never retry
    TRANSIENT = "transient"          # 429, 500, 503, transport errors: retry with backoff
    CONFIG = "config"                # credentials, topic, sender mismatch: fail the run loudly


@dataclass(frozen=True)
class PushTarget:
    """Where one message goes."""

    device_id: str
    platform: Platform
    transport: Transport
    token: str                 # FCM registration token or FID; APNs hex device token
    topic: str | None = None   # APNs bundle id (apns-topic); FCM: the app id, informational
    environment: str | None = None  # APNs: production or sandbox (None: the sender's default)


@dataclass(frozen=True)
class PushMessage:
    """One silent push. ``payload`` is the flat string map of :mod:`mobile_push.payload`."""

    target: PushTarget
    payload: dict[str, str] = field(repr=False)  # carries the per-run report token
    collapse_key: str | None = None
    ttl_s: int = 3600
    high_priority: bool = False   # FCM android.priority high; APNs background pushes stay at 5
    push_id: str | None = None    # a UUID: apns-id, and the idempotency key's message part
    analytics_label: str | None = None  # FCM fcmOptions.analyticsLabel: delivery reports per task


@dataclass(frozen=True)
class SendResult:
    """The answer to one send attempt, classified."""

    message: PushMessage
    kind: OutcomeKind
    message_id: str | None = None   # FCM message name / apns-id
    status: int | None = None       # HTTP status (None for a transport error)
    reason: str | None = None       # FCM errorCode / APNs reason / exception type
    error: str | None = None        # a sentence for people (never contains credentials)
    retry_after_s: float | None = None
    extra: dict[str, str] = field(default_factory=dict)
    #: The service's own floor for the backoff, doubled per attempt (FCM: a minute for quota errors).
    min_backoff_s: float | None = None


class Sender(Protocol):
    """One technology. ``send`` makes ONE attempt per message and classifies each answer;
    retries are the dispatcher's (:func:`mobile_push.delivery.send_with_retries`)."""

    transport: Transport

    async def send(self, messages: Sequence[PushMessage]) -> list[SendResult]: ...

    async def aclose(self) -> None: ...
