"""The delivery policy of one event plugin, as one typed structure.

The sidecar builds its default policy from its settings (``--delivery``, ``--retry-*``,
``--breaker-*``, ``--queue-max-bytes``, ``--queue-when-full``); a LunaPlugin's ``spec.delivery``
carries this very structure (camelCase keys, bounds in ``Meta`` for the CRD's schema) through the
active list to the sidecar, where it replaces the default for that plugin as a whole. The two
never disagree. :func:`read_policy` decodes one strictly.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta, Struct, field

__all__ = [
    "AT_LEAST_ONCE",
    "AT_MOST_ONCE",
    "DELIVERY_MODES",
    "WHEN_FULL",
    "BreakerPolicy",
    "DeliveryPolicy",
    "PolicyError",
    "RetryPolicy",
    "read_policy",
]

AT_MOST_ONCE = "at-most-once"
AT_LEAST_ONCE = "at-least-once"
DELIVERY_MODES = (AT_MOST_ONCE, AT_LEAST_ONCE)
#: what a full durable queue does with a new batch
WHEN_FULL = ("dropOldest", "dropNewest", "refuse")

Mode = Literal["at-most-once", "at-least-once"]
WhenFull = Literal["dropOldest", "dropNewest", "refuse"]
_SECONDS = Meta(gt=0, le=86_400)


class PolicyError(ValueError):
    """A policy does not have the expected shape; the message names the field."""


class RetryPolicy(Struct, frozen=True, rename="camel", omit_defaults=True):
    """How a failed batch is tried again: exponential backoff from ``initialBackoff`` doubling up
    to ``maxBackoff``, each wait drawn between half and all of it (jitter), until
    ``maxElapsed`` seconds after its first attempt (0: forever); then it is dead-lettered."""

    initial_backoff: Annotated[float, _SECONDS, Meta(description="Seconds before the first retry.")] = 0.5
    max_backoff: Annotated[float, _SECONDS, Meta(description="Most seconds between two attempts.")] = 30.0
    max_elapsed: Annotated[
        float,
        Meta(
            ge=0,
            le=31_536_000,
            description="Seconds a batch is retried before it is dead-lettered; 0: forever.",
        ),
    ] = 3600.0
    max_retry_after: Annotated[
        float, _SECONDS, Meta(description="Most seconds a plugin's Retry-After may ask to wait.")
    ] = 600.0


class BreakerPolicy(Struct, frozen=True, rename="camel", omit_defaults=True):
    """The circuit breaker: open after ``failures`` consecutive failed attempts; after
    ``openSeconds`` one probe attempt (half-open) closes it on success or opens it again."""

    failures: Annotated[int, Meta(ge=1, le=1_000_000, description="Consecutive failures that open it.")] = 5
    open_seconds: Annotated[
        float, _SECONDS, Meta(description="Seconds it stays open before a probe attempt.")
    ] = 30.0


class DeliveryPolicy(Struct, frozen=True, rename="camel", omit_defaults=True):
    """How batches reach one event plugin (docs/delivery.md)."""

    mode: Annotated[
        Mode,
        Meta(
            description="at-most-once (in memory, a failed batch is gone) or at-least-once (durable queue)."
        ),
    ] = "at-most-once"
    retry: Annotated[
        RetryPolicy, Meta(description="How a failed batch is tried again before it is dead-lettered.")
    ] = field(default_factory=RetryPolicy)
    breaker: Annotated[
        BreakerPolicy, Meta(description="The circuit breaker that spaces attempts while the plugin fails.")
    ] = field(default_factory=BreakerPolicy)
    max_queue_bytes: Annotated[
        int, Meta(ge=1024 * 1024, le=1 << 40, description="Bytes the durable queue holds at most.")
    ] = 256 * 1024 * 1024
    max_dead_letter_bytes: Annotated[
        int,
        Meta(
            ge=1024 * 1024,
            le=1 << 40,
            description="Bytes the dead letters of one plugin class hold at most; the oldest are removed "
            "(counted as dropped, dead_letters_full) to make room for a new one.",
        ),
    ] = 64 * 1024 * 1024
    when_full: Annotated[
        WhenFull,
        Meta(
            description="A batch that does not fit a full durable queue: dropOldest, dropNewest, or refuse "
            "(the intake answers 503 and the service keeps it)."
        ),
    ] = "refuse"

    @property
    def durable(self) -> bool:
        """True for at-least-once: batches go to the disk queue before the intake answers 202."""
        return self.mode == AT_LEAST_ONCE


def read_policy(value: Any) -> DeliveryPolicy:
    """``value`` (decoded JSON, camelCase keys) as a policy; raises :class:`PolicyError`."""
    try:
        return msgspec.convert(value, DeliveryPolicy)
    except msgspec.ValidationError as exc:
        raise PolicyError(f"delivery policy: {exc}") from None
