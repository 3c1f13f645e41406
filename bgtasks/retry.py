"""Retry policy arithmetic, pure: backoff delays with cap and jitter, retry conditions.

Prefect's own ``exponential_backoff`` has no cap and its jitter can lengthen a
delay; the spec promises that no delay exceeds ``maxBackoffMs``. So the delays
are computed here, once per run, and handed to Prefect as a list (at most 50
entries: Prefect repeats the last one, which is the cap once the curve flattens).
Jitter only shortens a delay ("within jitter" = in ``[d * (1 - jitter), d]``).
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from bgtasks.models import RetryCondition, RetryPolicy, compile_pattern

#: Prefect refuses longer delay lists.
PREFECT_MAX_DELAYS = 50


def backoff_ms(policy: RetryPolicy, attempt: int) -> float:
    """Delay before retry number ``attempt`` (0 = the first retry), before jitter."""
    raw = policy.initial_backoff_ms * policy.backoff_multiplier**attempt
    return float(min(raw, policy.max_backoff_ms))


def retry_delays_seconds(policy: RetryPolicy, rng: random.Random | None = None) -> list[float]:
    """The delays (seconds) for Prefect's ``retry_delay_seconds``, jitter applied."""
    rng = rng or random.Random()
    n = min(policy.max_retries, PREFECT_MAX_DELAYS)
    delays = []
    for attempt in range(n):
        d = backoff_ms(policy, attempt)
        d *= 1.0 - policy.jitter * rng.random()
        delays.append(round(d / 1000.0, 3))
    return delays


def exception_names(exc: BaseException) -> set[str]:
    """Names a retry condition may use for ``exc``: each class in its MRO, short and qualified."""
    names: set[str] = set()
    for cls in type(exc).__mro__:
        names.add(cls.__name__)
        names.add(f"{cls.__module__}.{cls.__qualname__}")
    return names


def should_retry(condition: RetryCondition | None, exc: BaseException | None) -> bool:
    """Whether a failure with ``exc`` may be retried under ``condition``."""
    if condition is None:
        return True
    if exc is None:
        return False
    if set(condition.exceptions) & exception_names(exc):
        return True
    if condition.message_pattern is not None and compile_pattern(condition.message_pattern).search(str(exc)):
        return True
    return False


def within_policy(policy: RetryPolicy, observed_s: Sequence[float], slack_s: float = 0.0) -> list[str]:
    """Check observed gaps between attempts against the policy; return the violations.

    Used by tests and by ``bgtasks task show`` to explain a run's retries.
    ``slack_s`` absorbs the time the engine needs to start the next attempt.
    """
    problems = []
    for i, gap in enumerate(observed_s):
        hi = backoff_ms(policy, i) / 1000.0
        lo = hi * (1.0 - policy.jitter)
        if gap < lo - 0.05:
            problems.append(f"retry {i + 1}: waited {gap:.3f}s, less than {lo:.3f}s")
        if gap > hi + slack_s:
            problems.append(f"retry {i + 1}: waited {gap:.3f}s, more than {hi:.3f}s")
        if gap > policy.max_backoff_ms / 1000.0 + slack_s:
            problems.append(f"retry {i + 1}: waited {gap:.3f}s, beyond maxBackoffMs")
    return problems
