"""Backoff arithmetic and retry conditions (pure)."""

from __future__ import annotations

import random

import pytest

from bgtasks.models import RetryCondition, RetryPolicy
from bgtasks.retry import PREFECT_MAX_DELAYS, backoff_ms, retry_delays_seconds, should_retry


def test_backoff_grows_by_the_multiplier_and_is_capped() -> None:
    p = RetryPolicy(max_retries=6, initial_backoff_ms=1000, backoff_multiplier=3, max_backoff_ms=20_000)
    assert [backoff_ms(p, i) for i in range(5)] == [1000, 3000, 9000, 20_000, 20_000]


@pytest.mark.parametrize("seed", range(20))
def test_jitter_only_shortens_and_never_exceeds_max(seed: int) -> None:
    p = RetryPolicy(max_retries=8, initial_backoff_ms=500, backoff_multiplier=2, max_backoff_ms=4000, jitter=0.3)
    delays = retry_delays_seconds(p, random.Random(seed))
    assert len(delays) == 8
    for i, d in enumerate(delays):
        hi = backoff_ms(p, i) / 1000
        assert hi * 0.7 - 1e-3 <= d <= hi <= 4.0


def test_no_jitter_is_exact_and_list_is_bounded_for_prefect() -> None:
    p = RetryPolicy(max_retries=100, initial_backoff_ms=100, max_backoff_ms=1000, jitter=0)
    delays = retry_delays_seconds(p)
    assert len(delays) == PREFECT_MAX_DELAYS  # Prefect repeats the last: the cap
    assert delays[:5] == [0.1, 0.2, 0.4, 0.8, 1.0] and delays[-1] == 1.0


class ProviderDown(ConnectionError):
    pass


def test_conditions_match_type_names_through_the_mro_and_message_patterns() -> None:
    by_type = RetryCondition(exceptions=["ConnectionError"])
    assert should_retry(by_type, ProviderDown("x"))
    assert should_retry(RetryCondition(exceptions=["OSError"]), ProviderDown("x"))
    assert not should_retry(by_type, ValueError("x"))
    by_msg = RetryCondition(message_pattern=r"HTTP 5\d\d")
    assert should_retry(by_msg, RuntimeError("upstream said HTTP 503"))
    assert not should_retry(by_msg, RuntimeError("HTTP 404"))
    assert should_retry(None, ValueError("anything"))
    assert not should_retry(by_type, None)
