"""An in-memory sender: records every message and answers DELIVERED (development and tests).

A complete, honest implementation of the ``Sender`` protocol, not a mock: it
refuses oversized payloads exactly like the network senders (CONFIG, before
"sending"), keeps every attempt in order, and can be scripted per device
token — a queue of outcomes consumed one per attempt, or a token that is dead
for good — so the dispatcher's handling of every outcome can be exercised
without a network.
"""

from __future__ import annotations

import itertools
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from mobile_push.classify import Verdict, to_result
from mobile_push.payload import PayloadTooLarge, check_message
from mobile_push.types import OutcomeKind, PushMessage, SendResult, Transport

__all__ = ["RecordingSender", "Scripted"]


@dataclass(frozen=True)
class Scripted:
    """One scripted answer: the outcome, and optionally its reason, error and Retry-After."""

    kind: OutcomeKind
    reason: str | None = None
    error: str | None = None
    retry_after_s: float | None = None


class RecordingSender:
    """Records messages; answers DELIVERED unless scripted.

    Attributes:
        transport: the transport this sender stands in for.
        sent: every message of every ``send`` call, in order (retries included).
        calls: the messages of each ``send`` call (one list per call).
        closed: ``aclose()`` was called.
    """

    def __init__(self, transport: Transport | str) -> None:
        self.transport = Transport(transport)
        self.sent: list[PushMessage] = []
        self.calls: list[list[PushMessage]] = []
        self.closed = False
        self._scripts: dict[str, deque[Scripted]] = {}
        self._invalid: set[str] = set()
        self._ids = itertools.count(1)

    def __repr__(self) -> str:
        return f"RecordingSender(transport={self.transport.value!r}, sent={len(self.sent)})"

    def script(self, token: str, outcomes: Iterable[OutcomeKind | Scripted]) -> None:
        """Queue answers for ``token``, one per attempt, before the default DELIVERED."""
        items = [o if isinstance(o, Scripted) else Scripted(OutcomeKind(o)) for o in outcomes]
        self._scripts.setdefault(token, deque()).extend(items)

    def invalidate(self, token: str) -> None:
        """From now on ``token`` answers INVALID_TOKEN."""
        self._invalid.add(token)

    def _answer(self, message: PushMessage) -> SendResult:
        token = message.target.token
        try:
            check_message(message)
        except PayloadTooLarge as exc:
            return to_result(message, Verdict(OutcomeKind.CONFIG, "PayloadTooLarge", str(exc)))
        queue = self._scripts.get(token)
        if queue:
            s = queue.popleft()
            if s.kind is OutcomeKind.DELIVERED:
                return to_result(message, Verdict(OutcomeKind.DELIVERED), message_id=f"memory-{next(self._ids)}")
            return to_result(message, Verdict(s.kind, s.reason or f"scripted-{s.kind.value}",
                                              s.error or f"scripted {s.kind.value} outcome",
                                              s.retry_after_s if s.kind is OutcomeKind.TRANSIENT else None))
        if token in self._invalid:
            return to_result(message, Verdict(OutcomeKind.INVALID_TOKEN, "Unregistered",
                                              "the token was invalidated (memory sender)"))
        return to_result(message, Verdict(OutcomeKind.DELIVERED), message_id=f"memory-{next(self._ids)}")

    async def send(self, messages: Sequence[PushMessage]) -> list[SendResult]:
        """Record ``messages`` and answer each (one attempt per message)."""
        if self.closed:
            raise RuntimeError("RecordingSender.send after aclose()")
        batch = list(messages)
        for m in batch:
            if m.target.transport is not self.transport:
                raise ValueError(f"message for device {m.target.device_id!r} is for "
                                 f"{m.target.transport.value}, this sender is {self.transport.value}")
        self.calls.append(batch)
        self.sent.extend(batch)
        return [self._answer(m) for m in batch]

    async def aclose(self) -> None:
        self.closed = True
