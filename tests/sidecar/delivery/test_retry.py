"""Backoff with jitter and the circuit breaker, driven without waiting."""

from __future__ import annotations

import pytest

from luna_contract.delivery import BreakerPolicy, RetryPolicy
from luna_plugins.delivery import RetryLater
from luna_sidecar.delivery.retry import CLOSED, HALF_OPEN, OPEN, Breaker, backoff, retry_after


def test_backoff_doubles_up_to_the_cap_with_jitter_between_half_and_all() -> None:
    policy = RetryPolicy(initial_backoff=0.5, max_backoff=4.0)
    assert [backoff(policy, n, lambda: 1.0) for n in range(1, 7)] == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]
    assert [backoff(policy, n, lambda: 0.0) for n in range(1, 5)] == [0.25, 0.5, 1.0, 2.0]
    assert backoff(policy, 10_000, lambda: 1.0) == 4.0  # no overflow however long it fails


def test_retry_after_is_honoured_from_any_exception_carrying_it_and_capped() -> None:
    policy = RetryPolicy(max_retry_after=60.0)
    assert retry_after(RetryLater(2.5), policy) == 2.5
    assert retry_after(RetryLater(3600), policy) == 60.0
    odd = RuntimeError("429")
    odd.retry_after = 7  # type: ignore[attr-defined]
    assert retry_after(odd, policy) == 7.0
    assert retry_after(RuntimeError("no"), policy) is None
    bad = RuntimeError()
    bad.retry_after = "soon"  # type: ignore[attr-defined]
    assert retry_after(bad, policy) is None
    with pytest.raises(ValueError):
        RetryLater(-1)


def test_breaker_opens_after_consecutive_failures_then_probes_once() -> None:
    breaker = Breaker(BreakerPolicy(failures=3, open_seconds=10.0))
    breaker.failure(0.0)
    breaker.success()  # not consecutive
    for now in (1.0, 2.0):
        breaker.failure(now)
        assert breaker.state == CLOSED and breaker.wait(now) == 0
    breaker.failure(3.0)
    assert breaker.state == OPEN and breaker.wait(4.0) == pytest.approx(9.0)
    assert breaker.wait(13.0) == 0 and breaker.state == HALF_OPEN
    breaker.failure(13.5)  # the probe failed: open again, for the whole time
    assert breaker.state == OPEN and breaker.wait(14.0) == pytest.approx(9.5)
    assert breaker.wait(23.5) == 0 and breaker.state == HALF_OPEN
    breaker.success()
    assert breaker.state == CLOSED and breaker.consecutive == 0 and breaker.opened == 2
