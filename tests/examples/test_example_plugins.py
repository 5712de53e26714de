"""The example plugins (examples/plugins), tested as a plugin author would: with
luna_sidecar.testing, which runs each file in the real runtime inside the test's process."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from luna_sidecar.testing import PluginCallbackError, run_plugin

PLUGINS = Path(__file__).resolve().parents[2] / "examples" / "plugins"


def request_point(route: str, status: int, elapsed: float) -> dict[str, Any]:
    return {
        "series": "requests",
        "tags": {"service": "handlers", "route": route, "status_code": status},
        "fields": {"request_id": "r", "execution_time": elapsed},
    }


async def test_kettle_serves_its_routes_and_heats_in_the_background() -> None:
    async with run_plugin(PLUGINS / "kettle.py", settings={"tickSeconds": 0.01}) as kettle:
        assert kettle.describe()["routes"] == [
            "GET /kettle",
            "POST /kettle",
            "GET /kettle/version",
            "GET /kettle/cups/{n}",
        ]
        version = await kettle.request("GET", "/kettle/version")
        assert (version.status, version.text) == (200, "kettle 1.0")
        assert (await kettle.request("GET", "/kettle/cups/3", params={"sugar": "2"})).json() == {
            "cups": 3,
            "sugar": "2",
        }
        for _ in range(500):  # the background task heats one degree per tick
            if (await kettle.request("GET", "/kettle")).json()["temperature"] > 25:
                break
            await asyncio.sleep(0.01)
        assert (await kettle.request("GET", "/kettle")).json()["temperature"] > 25
        refill = await kettle.request("POST", "/kettle", json={"litres": 1.5})
        assert (refill.status, refill.json()) == (201, {"refilled": 1.5})
        assert (await kettle.request("POST", "/kettle", json={"litres": -1})).status == 400
        assert (await kettle.request("DELETE", "/kettle")).status == 405  # the dispatcher's answer


async def test_route_digest_tallies_request_points_per_route_and_status() -> None:
    async with run_plugin(PLUGINS / "route_digest.py", settings={"slowSeconds": 0.1}) as digest:
        delivery = await digest.send_points(
            [
                request_point("GET:/6/handlers", 200, 0.01),
                request_point("GET:/6/handlers", 200, 0.5),
                request_point("POST:/6/handlers/{id}/events", 404, 0.02),
                {"series": "errors", "tags": {"route": "POST:/6/handlers/{id}/events"}, "fields": {}},
            ]
        )
        assert delivery.handled == 1 and delivery.answer["accepted"] == 4
        reply = (await digest.request("GET", "/digest")).json()
        assert reply == {
            "requests": {"GET:/6/handlers 200": 2, "POST:/6/handlers/{id}/events 404": 1},
            "slow": {"GET:/6/handlers": 1},
        }


async def test_http_forwarder_posts_each_batch_to_its_target() -> None:
    forwarded: list[Any] = []

    async def third_party(request: web.Request) -> web.Response:
        forwarded.append(await request.json())
        return web.json_response({}, status=201)

    target = web.Application()
    target.router.add_post("/events", third_party)
    async with TestServer(target) as server:
        settings = {"targetUrl": str(server.make_url("/events"))}
        async with run_plugin(PLUGINS / "http_forwarder.py", settings=settings) as forwarder:
            await forwarder.send_events(
                [{"event_id": "e1"}, {"kind": "raw", "event_id": "e2"}],
                handler_id="h-1",
                account_id="a-1",
                request_id="r-1",
            )
    assert len(forwarded) == 1
    assert forwarded[0]["handlerId"] == "h-1" and forwarded[0]["requestId"] == "r-1"
    assert [event["event_id"] for event in forwarded[0]["events"]] == ["e1", "e2"]


async def test_http_forwarder_without_a_target_only_logs() -> None:
    async with run_plugin(PLUGINS / "http_forwarder.py", settings={}) as forwarder:
        await forwarder.send_events([{"event_id": "e1"}], handler_id="h-9")
        assert "1 event(s) of handler h-9 (no targetUrl set)" in forwarder.log_text()


async def test_a_failing_callback_fails_the_test_with_the_runtimes_message() -> None:
    async with run_plugin(
        PLUGINS / "http_forwarder.py", settings={"targetUrl": "http://127.0.0.1:9/x"}
    ) as fwd:
        with pytest.raises(PluginCallbackError, match=r"HttpForwarder: .*ClientConnectorError"):
            await fwd.send_events([{"event_id": "e1"}])
        assert "HttpForwarder.handleEvent failed" in fwd.log_text()
