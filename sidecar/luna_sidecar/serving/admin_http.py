"""What the admin listener (loopback by default) answers: event intake and the plugins' state.

``POST /events/{eventName}`` validates the body, offers it to the subscribed plugins' queues and
answers 202 with counts; it never waits for a plugin. ``GET /plugins`` shows every plugin.
Anything else is a 404 with a JSON error. Everything here is synchronous and knows nothing of
sockets: the HTTP server (:mod:`luna_sidecar.serving.admin_server`) hands over a complete request.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

from luna_contract.plugin_modules import EVENT_NAMES
from luna_sidecar.delivery import DeliveryService
from luna_sidecar.delivery.service import DeadLetterError
from luna_sidecar.engine import Delivery, EventBus
from luna_sidecar.intake import PayloadError, PointDecoder, decode_sending
from luna_sidecar.observability import CounterChild, RuntimeMetrics

EVENTS_PREFIX = "/events/"


@dataclass(frozen=True, slots=True)
class Reply:
    """A response: status and a JSON body (UTF-8)."""

    status: int
    body: bytes


def json_reply(status: int, payload: Any) -> Reply:
    """A JSON reply of ``payload``."""
    return Reply(status, json.dumps(payload).encode())


#: why the intake answers 503 before its first sync and after SIGTERM
STARTING = "the sidecar is starting and has not loaded its plugins yet; send it again shortly"
SHUTTING_DOWN = "the sidecar is shutting down and accepts no more events"


class EventIntake:
    """Accepts events from the service container.

    While ``refusing`` says why (the sidecar is starting and its plugins are not loaded yet, or
    it is shutting down), every event is answered 503 with that reason: the service keeps it and
    sends it again, instead of having it accepted for plugins that are not there.
    """

    def __init__(
        self, *, bus: EventBus, metrics: RuntimeMetrics, max_body_bytes: int, max_items: int
    ) -> None:
        self.bus = bus
        self.metrics = metrics
        self.max_body_bytes = max_body_bytes
        self.max_items = max_items
        self.refusing: str | None = None
        self._points = PointDecoder(max_items=max_items)
        # metric series by label values, found once
        self._requests: dict[tuple[str, str], CounterChild] = {}
        self._items: dict[str, CounterChild] = {}

    def handle(
        self, event_name: str, body: bytes | None, *, declared_length: int | None = None
    ) -> Reply | Awaitable[Reply]:
        """Answer one ``POST /events/{event_name}`` whose body is ``body``; None means it was
        not kept because it is over ``max_body_bytes`` (``declared_length`` is the length its
        headers announced, if any). The whole batch is handled in one go, without a loop turn;
        when plugins with at-least-once delivery take it, the 202 comes (as an awaitable) once
        it is on disk for each of them, or a 503 if it could not be written."""
        try:
            reply = self._accept(event_name, body, declared_length)
        except PayloadError as exc:
            reply = json_reply(exc.status, {"error": exc.message, "eventName": event_name})
        if not isinstance(reply, Reply):
            return self._when_stored(event_name, reply)
        self._count(event_name, reply)
        return reply

    async def _when_stored(self, event_name: str, pending: tuple[Reply, Delivery]) -> Reply:
        accepted, delivery = pending
        try:
            await asyncio.gather(*delivery.committed)
        except OSError as exc:
            reply = json_reply(
                503,
                {
                    "error": f"the batch could not be stored durably: {exc}; send it again",
                    "eventName": event_name,
                },
            )
        else:
            reply = accepted
        self._count(event_name, reply)
        return reply

    def _count(self, event_name: str, reply: Reply) -> None:
        label = event_name if event_name in EVENT_NAMES else "unknown"
        key = (label, str(reply.status))
        counter = self._requests.get(key)
        if counter is None:
            counter = self._requests[key] = self.metrics.intake_requests.labels(*key)
        counter.inc()

    def _accept(
        self, event_name: str, body: bytes | None, declared_length: int | None
    ) -> Reply | tuple[Reply, Delivery]:
        if self.refusing is not None:
            raise PayloadError(503, self.refusing)
        if event_name not in EVENT_NAMES:
            raise PayloadError(404, f"unknown event name {event_name!r}; known: {sorted(EVENT_NAMES)}")
        if declared_length is not None and declared_length > self.max_body_bytes:
            raise PayloadError(
                413, f"body of {declared_length} bytes exceeds the limit of {self.max_body_bytes} bytes"
            )
        if body is None or len(body) > self.max_body_bytes:
            raise PayloadError(413, f"body exceeds the limit of {self.max_body_bytes} bytes")
        if event_name == "monitoring_event":
            points = self._points.decode(body)
            delivery = self.bus.publish_points(points, body_bytes=len(body), body=body)
            count = len(points)
        else:
            arguments = decode_sending(body, max_items=self.max_items)
            delivery = self.bus.publish(event_name, arguments, body_bytes=len(body), body=body)
            count = len(arguments[0])
        if delivery.refused is not None:
            raise PayloadError(503, delivery.refused)
        items = self._items.get(event_name)
        if items is None:
            items = self._items[event_name] = self.metrics.intake_items.labels(event_name)
        items.inc(count)
        if delivery.committed:
            return _accepted(count, delivery), delivery
        return _accepted(count, delivery)


def _accepted(count: int, delivery: Delivery) -> Reply:
    # the bytes json.dumps would give, without building a dict and encoding it per request
    return Reply(
        202, b'{"accepted": %d, "queued": %d, "dropped": %d}' % (count, delivery.queued, delivery.dropped)
    )


PLUGINS_PREFIX = "/plugins/"
DEAD_LETTERS = "dead-letters"


class AdminEndpoints:
    """Routes a request of the admin listener: ``POST /events/{eventName}`` to the intake,
    ``GET`` (or ``HEAD``) ``/plugins`` to ``describe``, the dead letters of durable queues
    (``GET /plugins/{name}/dead-letters``, ``POST /plugins/{name}/dead-letters/replay`` or
    ``.../discard``, with an optional body ``{"names": [...]}``, all of them by default), a JSON
    404 for anything else."""

    def __init__(
        self,
        intake: EventIntake,
        describe: Callable[[], dict[str, Any]],
        delivery: DeliveryService | None = None,
    ) -> None:
        self.intake = intake
        self.describe = describe
        self.delivery = delivery

    @property
    def max_body_bytes(self) -> int:
        """Bodies past this size are not kept (the intake refuses them)."""
        return self.intake.max_body_bytes

    def respond(
        self, method: str, raw_path: str, body: bytes | None, *, declared_length: int | None = None
    ) -> Reply | Awaitable[Reply]:
        """The reply to ``method raw_path`` (the path as sent: percent-encoded, no query)."""
        path = unquote(raw_path) if "%" in raw_path else raw_path
        if method == "POST" and path.startswith(EVENTS_PREFIX):
            event_name = path[len(EVENTS_PREFIX) :]
            if event_name and "/" not in event_name:
                return self.intake.handle(event_name, body, declared_length=declared_length)
        elif path == "/plugins" and method in ("GET", "HEAD"):
            return json_reply(200, self.describe())
        elif path.startswith(PLUGINS_PREFIX) and self.delivery is not None:
            parts = path[len(PLUGINS_PREFIX) :].split("/")
            if len(parts) >= 2 and parts[1] == DEAD_LETTERS:
                return self._dead_letters(method, parts[0], parts[2:], body)
        return json_reply(404, {"error": f"no such endpoint: {method} {path}"})

    def _dead_letters(
        self, method: str, plugin: str, rest: list[str], body: bytes | None
    ) -> Reply | Awaitable[Reply]:
        delivery = self.delivery
        assert delivery is not None
        try:
            if not rest and method in ("GET", "HEAD"):
                return json_reply(200, delivery.dead_letters(plugin))
            if len(rest) == 1 and rest[0] in ("replay", "discard") and method == "POST":
                names = _names(body)
                if isinstance(names, Reply):
                    return names
                delivery.dead_letters(plugin)  # 404 for a plugin without a durable queue
                return self._act(rest[0], plugin, names)
        except DeadLetterError as exc:
            return json_reply(404, {"error": str(exc)})
        return json_reply(404, {"error": f"no such endpoint: {method} /plugins/{plugin}/{DEAD_LETTERS}"})

    async def _act(self, action: str, plugin: str, names: list[str] | None) -> Reply:
        delivery = self.delivery
        assert delivery is not None
        if action == "replay":
            return json_reply(200, {"plugin": plugin, "replayed": await delivery.replay(plugin, names)})
        return json_reply(200, {"plugin": plugin, "discarded": await delivery.discard(plugin, names)})


def _names(body: bytes | None) -> list[str] | Reply | None:
    """The dead letters a replay or discard names: ``{"names": [...]}``, or all (no body)."""
    if not body or not body.strip():
        return None
    try:
        value = json.loads(body)
    except ValueError:
        return json_reply(400, {"error": 'the body must be JSON: {"names": [...]} or nothing (all)'})
    names = value.get("names") if isinstance(value, dict) else None
    if not isinstance(names, list) or not all(isinstance(name, str) for name in names):
        return json_reply(400, {"error": 'the body must be {"names": [dead letter names...]}'})
    return names
