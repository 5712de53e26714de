"""monitoring_middleware: one ``requests`` point per request (and ``errors`` for error answers)
with LUNA's route names, sent through a real SidecarSender to a stand-in intake."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from luna_plugins.client import SenderSettings, SidecarSender, monitoring_middleware, request_id_of


async def handler_events(request: web.Request) -> web.Response:
    return web.json_response(
        {"id": request.match_info["id"], "requestId": request_id_of(request)}, status=201
    )


async def missing(_: web.Request) -> web.Response:
    return web.json_response({"error_code": 22002, "desc": "Object not found"}, status=404)


async def refused(_: web.Request) -> web.Response:
    raise web.HTTPForbidden(text="no")


async def broken(_: web.Request) -> web.Response:
    raise RuntimeError("bug")


async def test_points_per_request_with_route_templates_status_and_request_ids(aiohttp_client: Any) -> None:
    received: list[dict[str, Any]] = []

    async def intake(request: web.Request) -> web.Response:
        received.extend((await request.json())["points"])
        return web.json_response({"accepted": 1}, status=202)

    sidecar = web.Application()
    sidecar.router.add_post("/events/monitoring_event", intake)
    intake_client = await aiohttp_client(sidecar)
    sender = SidecarSender(str(intake_client.make_url("")), settings=SenderSettings(batch_delay=0.01))
    app = web.Application(
        middlewares=[monitoring_middleware(sender, service="svc", monitored=lambda r: r.path != "/health")]
    )
    app.cleanup_ctx.append(sender.cleanup_ctx)
    app.router.add_post("/6/handlers/{id}/events", handler_events)
    app.router.add_get("/6/missing", missing)
    app.router.add_get("/6/refused", refused)
    app.router.add_get("/6/broken", broken)
    app.router.add_get("/health", missing)
    client = await aiohttp_client(app)

    reply = await client.post("/6/handlers/abc/events", headers={"Luna-Request-Id": "1700000000,given"})
    assert reply.status == 201 and reply.headers["Luna-Request-Id"] == "1700000000,given"
    assert (await reply.json())["requestId"] == "1700000000,given"
    assert (await client.get("/6/missing")).status == 404
    forbidden = await client.get("/6/refused")
    assert forbidden.status == 403 and forbidden.headers["Luna-Request-Id"]
    assert (await client.get("/6/broken")).status == 500
    assert (await client.get("/nowhere")).status == 404
    assert (await client.get("/health")).status == 404  # not monitored
    assert await sender.flush(timeout=10)

    requests = [(p["tags"]["route"], p["tags"]["status_code"]) for p in received if p["series"] == "requests"]
    assert requests == [
        ("POST:/6/handlers/{id}/events", 201),
        ("GET:/6/missing", 404),
        ("GET:/6/refused", 403),
        ("GET:/6/broken", 500),
        ("GET:unmatched", 404),
    ]
    errors = [(p["tags"]["route"], p["tags"]["error_code"]) for p in received if p["series"] == "errors"]
    assert errors == [
        ("GET:/6/missing", 22002),
        ("GET:/6/refused", 403),
        ("GET:/6/broken", 500),
        ("GET:unmatched", 404),
    ]
    first = received[0]
    assert first["tags"]["service"] == "svc" and first["fields"]["request_id"] == "1700000000,given"
    assert isinstance(first["fields"]["execution_time"], float) and first["fields"]["execution_time"] >= 0
    generated = [p["fields"]["request_id"] for p in received if p["tags"]["route"] == "GET:/6/missing"]
    assert len(set(generated)) == 1 and generated[0].split(",")[0].isdigit()  # LUNA's "<time>,<uuid>"


def test_generated_request_ids_are_lunas_form_and_unique() -> None:
    import uuid

    from luna_plugins.client import new_request_id

    ids = [new_request_id() for _ in range(1000)]
    assert len(set(ids)) == 1000
    seconds, value = ids[0].split(",")
    assert seconds.isdigit() and uuid.UUID(value).version == 4
