"""Retries of transient push failures, the same for every sender.

A sender makes ONE attempt per message and classifies the answer
(:mod:`mobile_push.classify`); :func:`send_with_retries` decides what is tried
again and when:

* only ``TRANSIENT`` results are retried, up to ``max_attempts`` attempts;
  ``INVALID_TOKEN`` and ``CONFIG`` are final at once;
* the delay before attempt ``k + 1`` is capped exponential backoff,
  ``min(initial * 2**(k-1), max)``, computed by :func:`bgtasks.retry.backoff_ms`
  (the arithmetic of the task retry policy), shortened by jitter (never
  lengthened: no delay exceeds ``max_backoff_s``);
* a ``Retry-After`` is honoured: the wait is at least that long (rounded up to
  a whole second so messages asking for about the same wait travel together);
  so is a service's own floor for the backoff (``SendResult.min_backoff_s``,
  doubled per attempt: FCM's quota errors, APNs' TooManyProviderTokenUpdates).
  A wait above ``max_retry_after_s``, or one that would end after the run's
  ``deadline``, ends that message's retries at once, TRANSIENT, with an error
  that says so: a run never blocks for hours, nor past its timeout;
* retries travel in *waves*: the messages that failed together and must wait
  the same time are resent together in one ``sender.send`` call (one batch, not
  one call per message), and every wave is its own task, so a message told to
  wait 60 s does not hold back the ones that may go again after 0.5 s. Jitter
  is drawn once per wave: its purpose (spreading many clients' retries) holds,
  and the batch stays a batch.

``sleep`` and ``rand`` are injectable: tests record the waits instead of
sleeping.
"""

from __future__ import annotations

import asyncio
import math
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import replace

from bgtasks.models import RetryPolicy
from bgtasks.retry import backoff_ms
from mobile_push.types import OutcomeKind, PushMessage, SendResult, Sender

__all__ = ["DEFAULT_JITTER", "send_with_retries", "retry_delay_s"]

#: Each backoff delay is shortened by up to this fraction, at random.
DEFAULT_JITTER = 0.2


def _policy(max_attempts: int, initial_backoff_s: float, max_backoff_s: float, jitter: float) -> RetryPolicy:
    initial_ms = round(initial_backoff_s * 1000)
    max_ms = round(max_backoff_s * 1000)
    return RetryPolicy(max_retries=max(0, max_attempts - 1), initial_backoff_ms=min(initial_ms, max_ms),
                       max_backoff_ms=max_ms, backoff_multiplier=2.0, jitter=jitter)


def retry_delay_s(policy: RetryPolicy, attempts_done: int, rand: Callable[[], float] = random.random) -> float:
    """Delay before the next attempt after ``attempts_done`` (>= 1) attempts, jitter applied (only shortens)."""
    delay = backoff_ms(policy, attempts_done - 1) / 1000.0
    return delay * (1.0 - policy.jitter * min(1.0, max(0.0, rand())))


async def send_with_retries(
    sender: Sender,
    messages: Sequence[PushMessage],
    *,
    max_attempts: int,
    initial_backoff_s: float,
    max_backoff_s: float,
    max_retry_after_s: float,
    sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
    rand: Callable[[], float] = random.random,
    jitter: float = DEFAULT_JITTER,
    deadline: float | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> list[tuple[SendResult, int]]:
    """Send ``messages`` through ``sender``, retrying transient failures (see the module docstring).

    Args:
        sender: one transport's sender (one attempt per message per ``send``).
        messages: the messages, all for ``sender.transport``.
        max_attempts: attempts per message, the first included (>= 1).
        initial_backoff_s, max_backoff_s: the backoff curve and its cap.
        max_retry_after_s: the longest ``Retry-After`` worth waiting for.
        sleep, rand: injectable for tests.
        jitter: fraction by which a backoff delay may be shortened.
        deadline: a ``clock()`` time no retry may wait past (the run's timeout).

    Returns:
        ``(final result, attempts)`` per message, in the order given.

    Raises:
        ValueError: bad arguments.
        Exception: whatever ``sender.send`` raises (programming errors only: senders
            classify every per-message failure).
    """
    if max_attempts < 1:
        raise ValueError(f"max_attempts: must be >= 1, got {max_attempts}")
    if initial_backoff_s < 0 or max_backoff_s < 0 or max_retry_after_s < 0:
        raise ValueError("initial_backoff_s, max_backoff_s, max_retry_after_s: must be >= 0")
    if not 0.0 <= jitter <= 1.0:
        raise ValueError(f"jitter: must be within [0, 1], got {jitter}")
    if not messages:
        return []
    policy = _policy(max_attempts, initial_backoff_s, max_backoff_s, jitter)
    final: list[SendResult | None] = [None] * len(messages)
    attempts = [0] * len(messages)

    async def wave(tg: asyncio.TaskGroup, indices: list[int], delay_s: float) -> None:
        if delay_s > 0:
            await sleep(delay_s)
        results = await sender.send([messages[i] for i in indices])
        if len(results) != len(indices):
            raise RuntimeError(f"{type(sender).__name__}.send returned {len(results)} results for "
                               f"{len(indices)} messages")
        backoff_s: float | None = None
        later: dict[float, list[int]] = {}
        for i, result in zip(indices, results, strict=True):
            attempts[i] += 1
            final[i] = result
            if result.kind is not OutcomeKind.TRANSIENT or attempts[i] >= max_attempts:
                continue
            wait = result.retry_after_s
            if result.min_backoff_s is not None:  # the service's floor, doubled per attempt
                wait = max(wait or 0.0, result.min_backoff_s * 2 ** (attempts[i] - 1))
            if wait is not None and wait > max_retry_after_s:
                final[i] = replace(result, error=(
                    f"{result.error or 'transient failure'}; the service asked to retry after {wait:g} s, more "
                    f"than BGTASKS_PUSH_MAX_RETRY_AFTER_S ({max_retry_after_s:g} s): not waiting, the message "
                    f"stays undelivered"))
                continue
            if backoff_s is None:
                backoff_s = retry_delay_s(policy, attempts[i], rand)  # one draw per wave
            delay = backoff_s if wait is None or wait <= backoff_s else float(math.ceil(wait))
            if deadline is not None and clock() + delay > deadline:
                final[i] = replace(result, error=(
                    f"{result.error or 'transient failure'}; the next try ({delay:g} s from now) would come after "
                    "the run's timeout: the message stays undelivered"))
                continue
            later.setdefault(delay, []).append(i)
        for delay, group in later.items():
            tg.create_task(wave(tg, group, delay))

    try:
        async with asyncio.TaskGroup() as tg:
            tg.create_task(wave(tg, list(range(len(messages))), 0.0))
    except BaseExceptionGroup as group:
        leaf: BaseException = group
        while isinstance(leaf, BaseExceptionGroup):
            leaf = leaf.exceptions[0]
        raise leaf from None
    out: list[tuple[SendResult, int]] = []
    for result, n in zip(final, attempts, strict=True):
        assert result is not None
        out.append((result, n))
    return out
