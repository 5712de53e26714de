"""register_sender_metrics: a sender's counters on a Prometheus registry, read at each scrape."""

from __future__ import annotations

from typing import Any

import pytest
from aiohttp import web
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from luna_plugins_client import SenderSettings, SidecarSender
from luna_plugins_client.prometheus import register_sender_metrics


def samples(registry: CollectorRegistry) -> dict[str, float]:
    text = generate_latest(registry).decode()
    return {s.name: s.value for family in text_string_to_metric_families(text) for s in family.samples}


async def test_the_counters_follow_the_sender_at_each_scrape(aiohttp_client: Any) -> None:
    async def intake(request: web.Request) -> web.Response:
        await request.read()
        return web.json_response({"accepted": 1}, status=202)

    sidecar = web.Application()
    sidecar.router.add_post("/events/monitoring_event", intake)
    client = await aiohttp_client(sidecar)
    sender = SidecarSender(str(client.make_url("")), settings=SenderSettings(max_points=2, batch_points=2))
    registry = CollectorRegistry()
    register_sender_metrics(sender, registry=registry, labels={"service": "handlers"})
    for n in range(3):  # one more than the backlog holds: the oldest is dropped
        sender.add_point("requests", {"route": "GET:/a"}, {"n": n})
    before = samples(registry)
    assert before["luna_client_points_buffered"] == 2
    assert before["luna_client_points_dropped_total"] == 1
    assert before["luna_client_points_sent_total"] == 0
    async with sender:
        assert await sender.flush(timeout=10)
    after = samples(registry)
    assert after["luna_client_points_sent_total"] == 2 and after["luna_client_points_buffered"] == 0
    assert after["luna_client_events_sent_total"] == 0 and after["luna_client_retries_total"] == 0
    text = generate_latest(registry).decode()
    assert 'luna_client_points_sent_total{service="handlers"} 2.0' in text
    assert "# TYPE luna_client_points_dropped_total counter" in text


def test_a_second_registration_of_the_same_names_fails_cleanly() -> None:
    registry = CollectorRegistry()
    register_sender_metrics(SidecarSender("http://127.0.0.1:1"), registry=registry)
    with pytest.raises(ValueError, match="Duplicated timeseries"):
        register_sender_metrics(SidecarSender("http://127.0.0.1:1"), registry=registry)
    register_sender_metrics(SidecarSender("http://127.0.0.1:1"), registry=registry, prefix="other_client")
