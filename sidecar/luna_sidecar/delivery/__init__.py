"""At-least-once delivery to event plugins: a durable queue per plugin class on disk, retries
with backoff and a circuit breaker, dead letters (docs/delivery.md).

Small modules with one job each: :mod:`segments` (the on-disk log: framing, recovery,
quarantine, acks), :mod:`commit` (group commit: one fsync for many appends), :mod:`retry`
(backoff and breaker, pure), :mod:`dead_letters`, :mod:`worker` (the durable worker),
:mod:`service` (what the runtime and the admin listener use), :mod:`metrics`.
At-most-once delivery (the default) does not go through here at all.
"""

from luna_sidecar.delivery.service import DeliveryService, DeliverySettings
from luna_sidecar.delivery.worker import DurableWorker

__all__ = ["DeliveryService", "DeliverySettings", "DurableWorker"]
