"""The admin listener (loopback by default): event intake and the plugins' state.

``POST /events/{eventName}`` validates the body, offers it to the subscribed plugins' queues and
answers 202 with counts; it never waits for a plugin. ``GET /plugins`` shows every plugin.
Anything else is a 404 with a JSON error. It runs on aiohttp's low-level server, like the
plugin routes: two fixed endpoints need no router or middleware chain per request.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from aiohttp import web

from luna_plugins.base.plugins_meta.base_plugins import EVENT_NAMES
from luna_sidecar.bus import Delivery, EventBus
from luna_sidecar.loop_metrics import CounterChild
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
        # metric series by label values, found once
        self._requests: dict[tuple[str, str], CounterChild] = {}
        self._items: dict[str, CounterChild] = {}

    async def handle(self, request: web.BaseRequest, event_name: str) -> web.Response:
        """Answer one ``POST /events/{event_name}``."""
        try:
            self._check(event_name, request)
            response = self._accept(event_name, await self._read_body(request))
        except PayloadError as exc:
            response = json_response(exc.status, {"error": exc.message, "eventName": event_name})
        label = event_name if event_name in EVENT_NAMES else "unknown"
        key = (label, str(response.status))
        counter = self._requests.get(key)
        if counter is None:
            counter = self._requests[key] = self.metrics.intake_requests.labels(*key)
        counter.inc()
        return response

    def _check(self, event_name: str, request: web.BaseRequest) -> None:
        """Refuse what can be refused before reading the body."""
        if not self.accepting:
            raise PayloadError(503, "the sidecar is shutting down and accepts no more events")
        if event_name not in EVENT_NAMES:
            raise PayloadError(404, f"unknown event name {event_name!r}; known: {sorted(EVENT_NAMES)}")
        length = request.content_length
        if length is not None and length > self.max_body_bytes:
            raise PayloadError(
                413, f"body of {length} bytes exceeds the limit of {self.max_body_bytes} bytes"
            )

    def _accept(self, event_name: str, raw: bytes) -> web.Response:
        """Validate ``raw`` and offer it to the plugins (synchronous: the whole batch is handled
        in one go, without a loop turn)."""
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

    async def _read_body(self, request: web.BaseRequest) -> bytes:
        """The body, as it arrived when in one piece (no copy); 413 past ``max_body_bytes``."""
        content = request.content
        body = await content.readany()
        more = await content.readany() if body else b""
        if more:  # in pieces (chunked, or bigger than one read): join them
            pieces, size = [body, more], len(body) + len(more)
            while more and size <= self.max_body_bytes:
                more = await content.readany()
                pieces.append(more)
                size += len(more)
            body = b"".join(pieces)
        if len(body) > self.max_body_bytes:
            raise PayloadError(413, f"body exceeds the limit of {self.max_body_bytes} bytes")
        return body


#: the reply's headers, made once (aiohttp copies them into each response)
_JSON_HEADERS = {"Content-Type": "application/json; charset=utf-8"}


def _accepted(count: int, delivery: Delivery) -> web.Response:
    # the bytes json.dumps would give, without building a dict and encoding it per request
    body = b'{"accepted": %d, "queued": %d, "dropped": %d}' % (count, delivery.queued, delivery.dropped)
    return web.Response(status=202, body=body, headers=_JSON_HEADERS)


EVENTS_PREFIX = "/events/"


class AdminDispatcher:
    """The request handler of the admin listener: ``POST /events/{eventName}`` to the intake,
    ``GET /plugins`` to ``describe``, a JSON 404 for anything else."""

    def __init__(self, intake: EventIntake, describe: Callable[[], dict[str, Any]]) -> None:
        self.intake = intake
        self.describe = describe

    async def __call__(self, request: web.BaseRequest) -> web.StreamResponse:
        path, method = request.path, request.method
        if method == "POST" and path.startswith(EVENTS_PREFIX):
            event_name = path[len(EVENTS_PREFIX) :]
            if event_name and "/" not in event_name:
                return await self.intake.handle(request, event_name)
        elif path == "/plugins" and method in ("GET", "HEAD"):
            return json_response(200, self.describe())
        return json_response(404, {"error": f"no such endpoint: {method} {path}"})
