"""Fan-out of accepted events to the event plugins that asked for them.

Monitoring points also feed the point metrics on the way. Nothing here waits on a plugin:
``publish`` only offers batches to the plugins' own queues (:mod:`luna_sidecar.engine.queues`),
and appends the request body to the durable queue of each at-least-once plugin
(:mod:`luna_sidecar.delivery`); the intake awaits ``Delivery.committed`` before its 202.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import msgspec

from luna_plugins.monitoring import MonitoringPoint
from luna_sidecar.delivery import DurableWorker
from luna_sidecar.engine.queues import EventWorker, batch_weight
from luna_sidecar.observability import PointMetrics


@dataclass(frozen=True)
class Delivery:
    """What happened to one published batch: plugins it was queued for, and dropped for;
    ``refused`` says why nobody got it (a durable queue is full and refuses, or cannot be
    written); ``committed`` are the durable queues' appends, done once on disk."""

    queued: int
    dropped: int
    refused: str | None = None
    committed: tuple[asyncio.Future[None], ...] = ()


class EventBus:
    """Routes each event name to the workers of the running plugins subscribed to it."""

    def __init__(self, point_metrics: PointMetrics) -> None:
        self.point_metrics = point_metrics
        self._subscribers: dict[str, tuple[EventWorker, ...]] = {}
        self._durable: dict[str, tuple[DurableWorker, ...]] = {}

    def subscribe(self, worker: EventWorker | DurableWorker) -> None:
        """Start delivering ``worker.event_name`` batches to ``worker``."""
        if isinstance(worker, DurableWorker):
            durable = self._durable.get(worker.event_name, ())
            if worker not in durable:
                self._durable[worker.event_name] = (*durable, worker)
            return
        current = self._subscribers.get(worker.event_name, ())
        if worker not in current:
            self._subscribers[worker.event_name] = (*current, worker)

    def unsubscribe(self, worker: EventWorker | DurableWorker) -> None:
        """Stop delivering to ``worker``; batches already queued stay queued."""
        if isinstance(worker, DurableWorker):
            durable = self._durable.get(worker.event_name, ())
            self._durable[worker.event_name] = tuple(w for w in durable if w is not worker)
            return
        current = self._subscribers.get(worker.event_name, ())
        self._subscribers[worker.event_name] = tuple(w for w in current if w is not worker)

    @staticmethod
    def _store(durable: tuple[DurableWorker, ...], body: bytes, payload: tuple[Any, ...]) -> Delivery:
        """Append ``body`` (decoded: ``payload``) to every durable queue, or to none when one refuses it."""
        for worker in durable:
            reason = worker.refuses(len(body))
            if reason is not None:
                return Delivery(0, 0, refused=reason)
        committed, dropped = [], 0
        for worker in durable:
            try:
                appended = worker.append(body, payload)
            except OSError as exc:
                return Delivery(
                    0, 0, refused=f"the durable queue of plugin {worker.plugin} cannot be written: {exc}"
                )
            if appended is None:
                dropped += 1
            else:
                committed.append(appended)
        return Delivery(len(committed), dropped, committed=tuple(committed))

    def publish(
        self, event_name: str, payload: tuple[Any, ...], *, body_bytes: int = 0, body: bytes | None = None
    ) -> Delivery:
        """Offer ``payload`` (the callback's positional arguments, without the logger) to
        every subscriber of ``event_name``; ``body_bytes`` is the size of the request that
        brought it (it counts in the batch's weight, see :func:`~luna_sidecar.engine.queues.batch_weight`).
        ``body`` (the request body) is what durable queues store; without it nothing goes to them."""
        stored = None
        durable = self._durable.get(event_name) if self._durable else None
        if durable and body is not None:
            stored = self._store(durable, body, payload)
            if stored.refused is not None:
                return stored
        queued = dropped = 0
        first, *rest = payload
        weight = batch_weight(len(first) if isinstance(first, list) else 1, body_bytes)
        for worker in self._subscribers.get(event_name, ()):
            # like points: every plugin gets its own list, so one cannot change another's
            own = (list(first), *rest) if isinstance(first, list) else payload
            if worker.offer(own, weight):
                queued += 1
            else:
                dropped += 1
        if stored is not None:
            return Delivery(queued + stored.queued, dropped + stored.dropped, committed=stored.committed)
        return Delivery(queued, dropped)

    def publish_points(
        self, points: list[MonitoringPoint], *, body_bytes: int = 0, body: bytes | None = None
    ) -> Delivery:
        """Record ``points`` in the metrics, then offer them to ``monitoring_event`` plugins;
        each plugin gets its own list, so one plugin changing it cannot affect another. Durable
        queues store ``body`` (the request body; encoded from the points when None)."""
        stored = None
        durable = self._durable.get("monitoring_event") if self._durable else None
        if durable:
            stored = self._store(durable, body if body is not None else _encode_points(points), (points,))
            if stored.refused is not None:
                return stored
        self.point_metrics.observe(points)
        queued = dropped = 0
        weight = batch_weight(len(points), body_bytes)
        for worker in self._subscribers.get("monitoring_event", ()):
            if worker.offer((list(points),), weight):
                queued += 1
            else:
                dropped += 1
        if stored is not None:
            return Delivery(queued + stored.queued, dropped + stored.dropped, committed=stored.committed)
        return Delivery(queued, dropped)


def _encode_points(points: list[MonitoringPoint]) -> bytes:
    """An intake body holding ``points`` (for the runtime's own points, which have none)."""
    return msgspec.json.encode({"points": points})


class PointBuffer:
    """Collects the runtime's own points (one per plugin-route request) and publishes them in
    batches, at the latest ``delay`` seconds after the first one or at ``max_points``."""

    def __init__(self, bus: EventBus, *, delay: float = 0.05, max_points: int = 500) -> None:
        self._bus = bus
        self._delay = delay
        self._max_points = max_points
        self._points: list[MonitoringPoint] = []
        self._timer: asyncio.TimerHandle | None = None

    def add(self, point: MonitoringPoint) -> None:
        """Buffer one point; never blocks."""
        self._points.append(point)
        if len(self._points) >= self._max_points:
            self.flush()
        elif self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(self._delay, self.flush)

    def flush(self) -> None:
        """Publish what is buffered now."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._points:
            points, self._points = self._points, []
            self._bus.publish_points(points)
