"""What an event plugin may learn about the delivery it is handling, and how it asks for a retry.

With the at-least-once delivery policy (``--delivery at-least-once``, docs/delivery.md) a batch
whose callback raises or times out is delivered again, the same batch, in order. A callback
reads which delivery it is in with :func:`delivery_context`, without any change to its
signature (the original ``sendEvents(self, events, ..., *args, **kwargs)`` keeps working)::

    from luna_plugins.delivery import RetryLater, delivery_context

    async def sendEvents(self, events, handlerId, accountId, requestId, createEventTime,
                         endEventTime, logger, *args, **kwargs):
        delivery = delivery_context()  # None under at-most-once
        headers = {"Idempotency-Key": delivery.id} if delivery else {}
        async with self.session.post(url, json=..., headers=headers) as resp:
            if resp.status == 429:
                raise RetryLater(float(resp.headers.get("Retry-After", "5")))

What a plugin may rely on: ``id`` is the same for every attempt of one batch, also for attempts
after the sidecar restarted and for a dead letter replayed; ``attempt`` starts at 1 and grows by
one for each attempt made by this sidecar process (after a restart it starts again at 1).
"""

from __future__ import annotations

import contextvars
import math
from typing import NamedTuple

__all__ = ["DeliveryInfo", "RetryLater", "delivery_context"]


class DeliveryInfo(NamedTuple):
    """The delivery a callback is handling."""

    id: str
    """Stable identity of the batch: the same on every attempt (use it as an idempotency key)."""
    attempt: int
    """1 for the first attempt, 2 for the first retry..."""


class RetryLater(Exception):  # noqa: N818 - named after what the plugin asks for, as in HTTP
    """Raise it from a callback to have the batch retried no sooner than ``retry_after`` seconds
    (a third party's ``Retry-After``). Any exception with a numeric ``retry_after`` attribute is
    honoured the same way; other exceptions are retried with the policy's backoff.

    Under at-most-once delivery it is a failure like any other (the batch is not retried).
    """

    def __init__(self, retry_after: float, message: str = "") -> None:
        if not isinstance(retry_after, int | float) or not math.isfinite(retry_after) or retry_after < 0:
            raise ValueError(f"retry_after must be a finite number of seconds >= 0, got {retry_after!r}")
        super().__init__(message or f"retry after {retry_after:g} s")
        self.retry_after = float(retry_after)


_CURRENT: contextvars.ContextVar[DeliveryInfo | None] = contextvars.ContextVar(
    "luna_plugins_delivery", default=None
)


def delivery_context() -> DeliveryInfo | None:
    """The delivery the running callback handles; None outside a callback or under at-most-once
    delivery. Tasks the callback starts inherit it (as any context variable)."""
    return _CURRENT.get()


def _enter(info: DeliveryInfo | None) -> contextvars.Token[DeliveryInfo | None]:
    """Set the current delivery (the runtime's; plugins only read it)."""
    return _CURRENT.set(info)


def _leave(token: contextvars.Token[DeliveryInfo | None]) -> None:
    _CURRENT.reset(token)
