"""When to try a failed batch again: exponential backoff with jitter, and a circuit breaker.

Both are pure: the caller passes the time (monotonic seconds) and, for the jitter, a random
source, so tests drive them without waiting.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable

from luna_contract.delivery import BreakerPolicy, RetryPolicy

CLOSED, OPEN, HALF_OPEN = "closed", "open", "half-open"
BREAKER_STATES = (CLOSED, OPEN, HALF_OPEN)


def backoff(policy: RetryPolicy, failures: int, rand: Callable[[], float] = random.random) -> float:
    """Seconds to wait after the ``failures``-th consecutive failure of one batch (1, 2, ...):
    ``initialBackoff * 2**(failures-1)`` capped at ``maxBackoff``, then drawn uniformly between
    half of it and all of it, so plugins failing together do not retry together."""
    exponent = min(max(failures, 1) - 1, 64)
    ceiling = min(policy.max_backoff, policy.initial_backoff * math.pow(2.0, exponent))
    return ceiling * (0.5 + 0.5 * rand())


def retry_after(exc: BaseException, policy: RetryPolicy) -> float | None:
    """The wait an exception asks for with a numeric ``retry_after`` attribute (the SDK's
    ``RetryLater`` has one), capped at ``maxRetryAfter``; None when it asks for none."""
    value = getattr(exc, "retry_after", None)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return min(max(float(value), 0.0), policy.max_retry_after)


class Breaker:
    """A circuit breaker over consecutive failed attempts.

    closed: attempts go through; ``failures`` consecutive failures open it. open: no attempt
    until ``openSeconds`` have passed, then it is half-open. half-open: one probe attempt; its
    success closes the breaker, its failure opens it again for ``openSeconds``.
    """

    def __init__(self, policy: BreakerPolicy) -> None:
        self.policy = policy
        self.state = CLOSED
        self.consecutive = 0
        self.opened_at = 0.0
        self.opened = 0
        """times it opened"""

    def wait(self, now: float) -> float:
        """Seconds until an attempt may be made (0: now). An open breaker whose time has come
        turns half-open here."""
        if self.state == OPEN:
            left = self.opened_at + self.policy.open_seconds - now
            if left > 0:
                return left
            self.state = HALF_OPEN
        return 0.0

    def success(self) -> None:
        """An attempt succeeded."""
        self.state, self.consecutive = CLOSED, 0

    def failure(self, now: float) -> None:
        """An attempt failed."""
        self.consecutive += 1
        if self.state == HALF_OPEN or (self.state == CLOSED and self.consecutive >= self.policy.failures):
            self.state, self.opened_at = OPEN, now
            self.opened += 1
