"""The admin listener (loopback by default): event intake and the plugins' state.

``POST /events/{eventName}`` validates the body, offers it to the subscribed plugins' queues and
answers 202 with counts; it never waits for a plugin. ``GET /plugins`` shows every plugin.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from aiohttp import web
from prometheus_client import Counter

from luna_plugins.base.plugins_meta.base_plugins import EVENT_NAMES
from luna_sidecar.bus import Delivery, EventBus
from luna_sidecar.metrics import RuntimeMetrics
from luna_sidecar.payloads import PayloadError, decode_sending
from luna_sidecar.point_decoding import PointDecoder


def json_response(status: int, payload: Any) -> web.Response:
    """A JSON reply."""
    return web.Response(status=status, text=json.dumps(payload), content_type="application/json")


class EventIntake:
    """Accepts events from the service container. ``accepting`` goes False on shutdown."""

    def __init__(
        self, *, bus: EventBus, metrics: RuntimeMetrics, max_body_bytes: int, max_items: int
    ) -> None:
        self.bus = bus
        self.metrics = metrics
        self.max_body_bytes = max_body_bytes
        self.max_items = max_items
        self.accepting = True
        self._points = PointDecoder(max_items=max_items)
        # metric children by label values: prometheus-client's labels() locks and hashes per call
        self._requests: dict[tuple[str, str], Counter] = {}
        self._items: dict[str, Counter] = {}

    async def handle(self, request: web.Request) -> web.Response:
        event_name = request.match_info["eventName"]
        try:
            response = await self._handle(event_name, request)
        except PayloadError as exc:
            response = json_response(exc.status, {"error": exc.message, "eventName": event_name})
        label = event_name if event_name in EVENT_NAMES else "unknown"
        key = (label, str(response.status))
        counter = self._requests.get(key)
        if counter is None:
            counter = self._requests[key] = self.metrics.intake_requests.labels(*key)
        counter.inc()
        return response

    async def _handle(self, event_name: str, request: web.Request) -> web.Response:
        if not self.accepting:
            raise PayloadError(503, "the sidecar is shutting down and accepts no more events")
        if event_name not in EVENT_NAMES:
            raise PayloadError(404, f"unknown event name {event_name!r}; known: {sorted(EVENT_NAMES)}")
        length = request.content_length
        if length is not None and length > self.max_body_bytes:
            raise PayloadError(
                413, f"body of {length} bytes exceeds the limit of {self.max_body_bytes} bytes"
            )
        try:
            raw = await request.read()
        except web.HTTPRequestEntityTooLarge:
            raise PayloadError(413, f"body exceeds the limit of {self.max_body_bytes} bytes") from None
        if event_name == "monitoring_event":
            points = self._points.decode(raw)
            delivery = self.bus.publish_points(points, body_bytes=len(raw))
            count = len(points)
        else:
            arguments = decode_sending(raw, max_items=self.max_items)
            delivery = self.bus.publish(event_name, arguments, body_bytes=len(raw))
            count = len(arguments[0])
        items = self._items.get(event_name)
        if items is None:
            items = self._items[event_name] = self.metrics.intake_items.labels(event_name)
        items.inc(count)
        return _accepted(count, delivery)


def _accepted(count: int, delivery: Delivery) -> web.Response:
    return json_response(202, {"accepted": count, "queued": delivery.queued, "dropped": delivery.dropped})


def build_admin_app(
    intake: EventIntake, describe: Callable[[], dict[str, Any]], *, max_body_bytes: int
) -> web.Application:
    """The admin application: intake and ``GET /plugins``."""

    async def plugins(_: web.Request) -> web.Response:
        return json_response(200, describe())

    async def not_found(request: web.Request) -> web.Response:
        return json_response(404, {"error": f"no such endpoint: {request.method} {request.path}"})

    # a little headroom so our own 413 with a JSON body answers before aiohttp's plain one
    app = web.Application(client_max_size=max_body_bytes + 1)
    app.router.add_post("/events/{eventName}", intake.handle)
    app.router.add_get("/plugins", plugins)
    app.router.add_route("*", "/{tail:.*}", not_found)
    return app
