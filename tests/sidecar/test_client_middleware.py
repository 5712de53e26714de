"""The service client's middleware in each framework services run on (aiohttp, Sanic, Starlette
and FastAPI served by uvicorn), serving real requests on loopback and posting the points to a real sidecar
process, whose plugin writes down every point it gets."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import fastapi  # FastAPI reads its handlers' annotations (strings here) in the module's globals
import fastapi.responses
import pytest
from aiohttp import web

from luna_plugins_client import SenderSettings, SidecarSender
from tests.support.sidecar_harness import HOST, Sidecar, free_port, wait_for

#: one JSON line per point of the ``requests`` and ``errors`` series
RECORDER = """
import json
from luna_plugins.base.plugins_meta.base_plugins import BaseEventPlugin

class Recorder(BaseEventPlugin):
    eventName = "monitoring_event"

    async def handleEvent(self, points, logger):
        with open(self.settings["out"], "a") as out:
            for p in points:
                if p.series in ("requests", "errors"):
                    line = {"series": p.series, "tags": dict(p.tags), "fields": dict(p.fields)}
                    out.write(json.dumps(line) + "\\n")
"""

GIVEN_ID = "1700000000,given-by-the-caller"
#: (series, route, status_code, error_code) the plugin must see, whatever the framework
EXPECTED = sorted(
    [
        ("requests", "POST:/6/handlers/{id}/events", 201, None),
        ("requests", "GET:/6/missing", 404, None),
        ("errors", "GET:/6/missing", 404, 22002),
        ("requests", "GET:/6/broken", 500, None),
        ("errors", "GET:/6/broken", 500, 500),
        ("requests", "GET:unmatched", 404, None),
        ("errors", "GET:unmatched", 404, 404),
    ],
    key=repr,
)
MISSING = {"error_code": 22002, "desc": "Object not found"}

Server = Callable[[SidecarSender, int], contextlib.AbstractAsyncContextManager[None]]


@contextlib.asynccontextmanager
async def aiohttp_service(sender: SidecarSender, port: int) -> AsyncIterator[None]:
    from luna_plugins_client import monitoring_middleware, request_id_of

    async def events(request: web.Request) -> web.Response:
        return web.json_response({"requestId": request_id_of(request)}, status=201)

    async def missing(_: web.Request) -> web.Response:
        return web.json_response(MISSING, status=404)

    async def broken(_: web.Request) -> web.Response:
        raise RuntimeError("bug")

    app = web.Application(
        middlewares=[monitoring_middleware(sender, monitored=lambda r: r.path != "/health")]
    )
    app.cleanup_ctx.append(sender.cleanup_ctx)
    app.router.add_post("/6/handlers/{id}/events", events)
    app.router.add_get("/6/missing", missing)
    app.router.add_get("/6/broken", broken)
    app.router.add_get("/health", missing)
    runner = web.AppRunner(app, handle_signals=False)
    await runner.setup()
    try:
        await web.TCPSite(runner, HOST, port).start()
        yield
    finally:
        await runner.cleanup()


@contextlib.asynccontextmanager
async def sanic_service(sender: SidecarSender, port: int) -> AsyncIterator[None]:
    from sanic import Request, Sanic
    from sanic.response import HTTPResponse
    from sanic.response import json as json_response

    from luna_plugins_client.sanic import install_monitoring, request_id_of

    app: Sanic[Any, Any] = Sanic(f"svc{port}", configure_logging=False)

    async def events(request: Request, id: str) -> HTTPResponse:
        return json_response({"requestId": request_id_of(request)}, status=201)

    async def missing(_: Request) -> HTTPResponse:
        return json_response(MISSING, status=404)

    async def broken(_: Request) -> HTTPResponse:
        raise RuntimeError("bug")

    app.add_route(events, "/6/handlers/<id>/events", methods=["POST"])
    app.add_route(missing, "/6/missing")
    app.add_route(broken, "/6/broken")
    app.add_route(missing, "/health", name="health")
    install_monitoring(app, sender, monitored=lambda r: r.path != "/health")
    server = await app.create_server(host=HOST, port=port, return_asyncio_server=True)
    assert server is not None
    await server.startup()
    await server.before_start()
    await server.after_start()
    try:
        yield
    finally:
        await server.before_stop()
        await server.close()
        await server.after_stop()


@contextlib.asynccontextmanager
async def starlette_service(sender: SidecarSender, port: int) -> AsyncIterator[None]:
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    from luna_plugins_client.asgi import MonitoringMiddleware

    async def events(request: Request) -> JSONResponse:
        return JSONResponse({"requestId": request.state.luna_request_id}, status_code=201)

    async def missing(_: Request) -> JSONResponse:
        return JSONResponse(MISSING, status_code=404)

    async def broken(_: Request) -> JSONResponse:
        raise RuntimeError("bug")

    @contextlib.asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        async with sender:
            yield

    app = Starlette(
        routes=[
            Route("/6/handlers/{id}/events", events, methods=["POST"]),
            Route("/6/missing", missing),
            Route("/6/broken", broken),
            Route("/health", missing),
        ],
        lifespan=lifespan,
    )
    app.add_middleware(
        MonitoringMiddleware, sender=sender, monitored=lambda scope: scope["path"] != "/health"
    )
    async with uvicorn_serving(app, port):
        yield


@contextlib.asynccontextmanager
async def fastapi_service(sender: SidecarSender, port: int) -> AsyncIterator[None]:
    from luna_plugins_client.asgi import MonitoringMiddleware, request_id_of

    def request_id(request: fastapi.Request) -> str:  # a dependency, as FastAPI services pass such things
        return request_id_of(request.scope)

    @contextlib.asynccontextmanager
    async def lifespan(_: fastapi.FastAPI) -> AsyncIterator[None]:
        async with sender:
            yield

    app = fastapi.FastAPI(lifespan=lifespan)

    @app.post("/6/handlers/{id}/events", status_code=201)
    async def events(id: str, luna_request_id: str = fastapi.Depends(request_id)) -> dict[str, str]:
        return {"requestId": luna_request_id}

    @app.get("/6/missing")
    @app.get("/health")
    async def missing() -> fastapi.responses.JSONResponse:
        return fastapi.responses.JSONResponse(MISSING, status_code=404)

    @app.get("/6/broken")
    async def broken() -> None:
        raise RuntimeError("bug")

    app.add_middleware(
        MonitoringMiddleware, sender=sender, monitored=lambda scope: scope["path"] != "/health"
    )
    async with uvicorn_serving(app, port):
        yield


@contextlib.asynccontextmanager
async def uvicorn_serving(app: Any, port: int) -> AsyncIterator[None]:
    """``app`` served by uvicorn on ``port`` of loopback, its lifespan run, until the block ends."""
    import uvicorn

    server = uvicorn.Server(uvicorn.Config(app, host=HOST, port=port, log_level="critical", lifespan="on"))
    serving = asyncio.create_task(server.serve())
    try:
        while not server.started:
            if serving.done():
                serving.result()
                raise AssertionError("uvicorn stopped before it started")
            await asyncio.sleep(0.01)
        yield
    finally:
        server.should_exit = True
        await serving


def recorded(out: Path) -> list[dict[str, Any]]:
    if not out.exists():
        return []
    text = out.read_text()
    return [json.loads(line) for line in text[: text.rfind("\n") + 1].splitlines()]


@pytest.mark.parametrize(
    "service",
    [aiohttp_service, sanic_service, starlette_service, fastapi_service],
    ids=lambda s: s.__name__,
)
async def test_each_framework_records_its_requests_into_a_real_sidecar(
    service: Server, sidecar_factory: Callable[..., Sidecar], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.CRITICAL)  # the handler that raises is logged by each framework
    out = tmp_path / "points.jsonl"
    sidecar = sidecar_factory(
        plugins={"recorder": RECORDER}, active=["recorder"], settings={"recorder": {"out": str(out)}}
    )
    sender = SidecarSender(sidecar.admin, settings=SenderSettings(batch_delay=0.01))
    port = free_port()
    base = f"http://{HOST}:{port}"
    async with service(sender, port), aiohttp.ClientSession() as client:
        async with client.post(
            f"{base}/6/handlers/abc/events", headers={"Luna-Request-Id": GIVEN_ID}
        ) as reply:
            assert reply.status == 201 and reply.headers["Luna-Request-Id"] == GIVEN_ID
            assert (await reply.json())["requestId"] == GIVEN_ID
        async with client.get(f"{base}/6/missing") as reply:
            assert reply.status == 404
            generated = reply.headers["Luna-Request-Id"]
        for path, status in (("/6/broken", 500), ("/nowhere", 404), ("/health", 404)):
            async with client.get(base + path) as reply:
                assert reply.status == status, path
        assert await sender.flush(timeout=30)
    # the service has stopped: its sender was closed with it, having sent everything
    assert sender.stats().points_sent == len(EXPECTED) and sender.stats().points_dropped == 0
    points = await asyncio.to_thread(
        wait_for, lambda: len(recorded(out)) >= len(EXPECTED) and recorded(out), timeout=30, what="the plugin"
    )
    seen = sorted(
        [
            (p["series"], p["tags"]["route"], p["tags"]["status_code"], p["tags"].get("error_code"))
            for p in points
        ],
        key=repr,
    )
    assert seen == EXPECTED
    ids = {p["tags"]["route"]: p["fields"]["request_id"] for p in points}
    assert ids["POST:/6/handlers/{id}/events"] == GIVEN_ID and ids["GET:/6/missing"] == generated
    seconds, _, uuid = generated.partition(",")
    assert seconds.isdigit() and len(uuid) == 36
    assert all(p["tags"]["service"] == "handlers" for p in points)
    assert all(p["fields"]["execution_time"] >= 0 for p in points if p["series"] == "requests")
