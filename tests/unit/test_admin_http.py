"""The admin listener's routing and answers, on aiohttp's low-level server."""

from __future__ import annotations

import json
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from luna_sidecar.admin_http import AdminDispatcher, EventIntake
from luna_sidecar.bus import EventBus
from luna_sidecar.mapping import PointMetrics
from luna_sidecar.metrics import RuntimeMetrics

from .conftest import metric_value

BODY = {"points": [{"series": "requests", "eventTime": 1.5, "tags": {"route": "GET:/x"}}]}


@pytest.fixture
async def client(aiohttp_raw_server: Any, aiohttp_client: Any, runtime_metrics: RuntimeMetrics) -> Any:
    point_metrics = PointMetrics(
        overflow_counter=runtime_metrics.label_overflow,
        error_counter=runtime_metrics.point_errors,
        max_label_sets=10,
    )
    intake = EventIntake(
        bus=EventBus(point_metrics), metrics=runtime_metrics, max_body_bytes=1000, max_items=5
    )
    server = await aiohttp_raw_server(AdminDispatcher(intake, lambda: {"plugins": []}))
    return await aiohttp_client(server)


async def test_intake_answers_202_with_counts(client: Any, registry: CollectorRegistry) -> None:
    reply = await client.post("/events/monitoring_event", data=json.dumps(BODY))
    assert reply.status == 202
    assert reply.headers["Content-Type"] == "application/json; charset=utf-8"
    text = await reply.text()
    assert text == json.dumps({"accepted": 1, "queued": 0, "dropped": 0})
    labels = {"event_name": "monitoring_event", "status_code": "202"}
    assert metric_value(registry, "luna_intake_requests_total", labels) == 1


async def test_plugins_are_listed(client: Any) -> None:
    reply = await client.get("/plugins")
    assert reply.status == 200 and await reply.json() == {"plugins": []}
    head = await client.head("/plugins")
    assert head.status == 200 and await head.read() == b""


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/events/monitoring_event"),
        ("POST", "/events/"),
        ("POST", "/events/monitoring_event/more"),
        ("POST", "/plugins"),
        ("GET", "/plugins/"),
        ("GET", "/"),
        ("DELETE", "/anything"),
    ],
)
async def test_anything_else_is_a_json_404(client: Any, method: str, path: str) -> None:
    reply = await client.request(method, path)
    assert reply.status == 404
    assert await reply.json() == {"error": f"no such endpoint: {method} {path}"}


async def test_unknown_event_names_are_counted_as_unknown(client: Any, registry: CollectorRegistry) -> None:
    reply = await client.post("/events/nope", data=b"{}")
    assert reply.status == 404
    assert (await reply.json())["error"].startswith("unknown event name 'nope'")
    labels = {"event_name": "unknown", "status_code": "404"}
    assert metric_value(registry, "luna_intake_requests_total", labels) == 1


async def test_bodies_over_the_limit_get_the_intakes_413(client: Any) -> None:
    reply = await client.post("/events/monitoring_event", data=b" " * 2000)
    assert reply.status == 413
    assert "limit of 1000 bytes" in (await reply.json())["error"]
