"""Fan-out of accepted events to the plugins' queues."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from luna_plugins.application import LunaApplication
from luna_plugins.base.plugins_meta.base_plugins import BaseEventPlugin
from luna_plugins.handler_event.base_plugin import BaseEventSendingPlugin, Event
from luna_plugins.monitoring import MonitoringPoint
from luna_sidecar.engine.bus import Delivery, EventBus, PointBuffer
from luna_sidecar.engine.queues import EventWorker
from luna_sidecar.intake.point_decoding import PointDecoder
from luna_sidecar.observability.mapping import PointMetrics
from luna_sidecar.observability.metrics import RuntimeMetrics
from tests.support.runtime import metric_value, wait_until


class Monitor(BaseEventPlugin):
    eventName = "monitoring_event"

    def __init__(self, app: LunaApplication) -> None:
        super().__init__(app)
        self.received: list[list[MonitoringPoint]] = []

    async def handleEvent(self, points: list[MonitoringPoint], logger: Any) -> None:
        self.received.append(list(points))
        points.clear()  # a rude plugin: must not affect anybody else


class Sender(BaseEventSendingPlugin):
    def __init__(self, app: LunaApplication) -> None:
        super().__init__(app)
        self.received: list[tuple[Any, ...]] = []

    async def sendEvents(self, events: list[Event], *rest: Any) -> None:
        self.received.append((list(events), *rest[:-1]))
        events.clear()  # a rude plugin: must not affect anybody else


@pytest.fixture
def point_metrics(runtime_metrics: RuntimeMetrics, registry: CollectorRegistry) -> PointMetrics:
    metrics = PointMetrics(
        overflow_counter=runtime_metrics.label_overflow,
        error_counter=runtime_metrics.point_errors,
        max_label_sets=50,
    )
    registry.register(metrics)
    return metrics


@pytest.fixture
def bus(point_metrics: PointMetrics) -> EventBus:
    return EventBus(point_metrics)


@pytest.fixture
async def worker_for(runtime_metrics: RuntimeMetrics) -> Any:
    made: list[EventWorker] = []

    def make(instance: BaseEventPlugin, *, capacity: int = 10, start: bool = True) -> EventWorker:
        worker = EventWorker(
            f"mod{len(made)}",
            instance,
            capacity=capacity,
            timeout=1.0,
            metrics=runtime_metrics,
            logger=logging.getLogger("luna.tests.unit.bus"),
        )
        if start:
            worker.start()
        made.append(worker)
        return worker

    yield make
    for worker in made:
        await worker.stop()


def _points(count: int) -> list[MonitoringPoint]:
    return [MonitoringPoint("custom", float(index), {"i": index}) for index in range(count)]


async def test_publish_points_feeds_metrics_and_every_monitor(
    app: LunaApplication, bus: EventBus, worker_for: Callable[..., EventWorker], registry: CollectorRegistry
) -> None:
    first, second = Monitor(app), Monitor(app)
    worker_a, worker_b = worker_for(first), worker_for(second)
    bus.subscribe(worker_a)
    bus.subscribe(worker_a)  # once only
    bus.subscribe(worker_b)
    points = _points(3)
    assert bus.publish_points(points) == Delivery(queued=2, dropped=0)
    await wait_until(lambda: worker_a.handled == 1 and worker_b.handled == 1, what="both monitors")
    assert first.received == [points]
    assert second.received == [points], "one plugin clearing its list must not affect the other"
    assert len(points) == 3
    assert metric_value(registry, "luna_monitoring_points_total", {"series": "custom"}) == 3


class Meddler(BaseEventPlugin):
    """Tries to change the points it receives; records what each attempt raised."""

    eventName = "monitoring_event"

    def __init__(self, app: LunaApplication) -> None:
        super().__init__(app)
        self.refused: list[str] = []

    async def handleEvent(self, points: list[MonitoringPoint], logger: Any) -> None:
        for point in points:
            for attempt in (
                lambda point=point: point.tags.__setitem__("i", -1),
                lambda point=point: point.fields.update(added=True),
                lambda point=point: setattr(point, "series", "hijacked"),
            ):
                try:
                    attempt()
                except (TypeError, AttributeError) as exc:
                    self.refused.append(type(exc).__name__)


async def test_plugins_share_points_that_none_can_change(
    app: LunaApplication, bus: EventBus, worker_for: Callable[..., EventWorker]
) -> None:
    """Every plugin gets the same point objects (built once per batch), read-only."""
    meddler, monitor = Meddler(app), Monitor(app)
    worker_a, worker_b = worker_for(meddler), worker_for(monitor)
    bus.subscribe(worker_a)
    bus.subscribe(worker_b)
    decoded = PointDecoder(max_items=10).decode(
        b'{"points": [{"series": "custom", "eventTime": 1, "tags": {"i": 1}, "fields": {"f": 2}}]}'
    )
    bus.publish_points(decoded)
    await wait_until(lambda: worker_a.handled == 1 and worker_b.handled == 1, what="both monitors")
    assert meddler.refused == ["TypeError", "TypeError", "AttributeError"]
    [[seen]] = monitor.received
    assert seen is decoded[0], "shared, not copied"
    assert (seen.series, seen.tags, seen.fields) == ("custom", {"i": 1}, {"f": 2})


async def test_publish_points_without_subscribers_still_records_metrics(
    bus: EventBus, registry: CollectorRegistry
) -> None:
    assert bus.publish_points(_points(2)) == Delivery(0, 0)
    assert metric_value(registry, "luna_monitoring_points_total", {"series": "custom"}) == 2


async def test_publish_goes_only_to_the_named_event(
    app: LunaApplication, bus: EventBus, worker_for: Callable[..., EventWorker]
) -> None:
    monitor, sender = Monitor(app), Sender(app)
    monitor_worker, sender_worker = worker_for(monitor), worker_for(sender)
    bus.subscribe(monitor_worker)
    bus.subscribe(sender_worker)
    events = [Event({"id": 1})]
    payload = (events, "h", "a", "r", "t0", "t1")
    assert bus.publish("sending_event", payload) == Delivery(1, 0)
    await wait_until(lambda: sender_worker.handled == 1, what="the sender")
    assert sender.received == [([Event({"id": 1})], "h", "a", "r", "t0", "t1")]
    assert monitor_worker.handled == 0
    assert bus.publish("unknown_event", payload) == Delivery(0, 0)


async def test_full_queue_is_reported_as_dropped(
    app: LunaApplication, bus: EventBus, worker_for: Callable[..., EventWorker]
) -> None:
    roomy, tight = worker_for(Monitor(app), start=False), worker_for(Monitor(app), capacity=1, start=False)
    bus.subscribe(roomy)
    bus.subscribe(tight)
    assert bus.publish_points(_points(1)) == Delivery(2, 0)
    assert bus.publish_points(_points(1)) == Delivery(1, 1)
    assert (roomy.depth, tight.depth, tight.dropped) == (2, 1, 1)


async def test_unsubscribe_stops_delivery(
    app: LunaApplication, bus: EventBus, worker_for: Callable[..., EventWorker]
) -> None:
    worker = worker_for(Monitor(app), start=False)
    bus.subscribe(worker)
    bus.unsubscribe(worker)
    bus.unsubscribe(worker)  # harmless twice
    assert bus.publish_points(_points(1)) == Delivery(0, 0)
    assert worker.depth == 0


async def test_sending_plugins_get_their_own_events_list(
    app: LunaApplication, bus: EventBus, worker_for: Callable[..., EventWorker]
) -> None:
    first, second = Sender(app), Sender(app)
    worker_a, worker_b = worker_for(first), worker_for(second)
    bus.subscribe(worker_a)
    bus.subscribe(worker_b)
    bus.publish("sending_event", ([Event({"id": 1}), Event({"id": 2})], "h", "a", "r", "t0", "t1"))
    await wait_until(lambda: worker_a.handled == 1 and worker_b.handled == 1, what="both senders")
    assert len(first.received[0][0]) == 2
    assert len(second.received[0][0]) == 2


async def test_point_buffer_flushes_after_the_delay(bus: EventBus, registry: CollectorRegistry) -> None:
    buffer = PointBuffer(bus, delay=0.01, max_points=100)
    buffer.add(MonitoringPoint("buffered", 1.0))
    buffer.add(MonitoringPoint("buffered", 2.0))
    assert metric_value(registry, "luna_monitoring_points_total", {"series": "buffered"}) == 0
    await wait_until(
        lambda: metric_value(registry, "luna_monitoring_points_total", {"series": "buffered"}) == 2,
        what="the timed flush",
    )


async def test_point_buffer_flushes_at_max_points(bus: EventBus, registry: CollectorRegistry) -> None:
    buffer = PointBuffer(bus, delay=60.0, max_points=3)
    for index in range(4):
        buffer.add(MonitoringPoint("batch", float(index)))
    assert metric_value(registry, "luna_monitoring_points_total", {"series": "batch"}) == 3
    buffer.flush()
    assert metric_value(registry, "luna_monitoring_points_total", {"series": "batch"}) == 4
    buffer.flush()  # nothing left: no change
    assert metric_value(registry, "luna_monitoring_points_total", {"series": "batch"}) == 4
