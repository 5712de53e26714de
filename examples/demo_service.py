"""A tiny stand-in for the LUNA *handlers* service, for the demo (`examples/demo.py`).

It serves a few handler routes and, like the real service, reports every request it serves to the
plugins sidecar beside it, with the service-side client of luna-plugins (``luna_plugins.client``):
``monitoring_middleware`` records a ``requests`` point (and an ``errors`` point for 4xx/5xx) per
request under ``/6/``, and a ``SidecarSender`` posts them to the sidecar's intake
(``POST /events/monitoring_event``) in batches. Each event-processing request also generates
events, sent as ``POST /events/sending_event`` (the ``http_forwarder`` example plugin forwards
them to ``/third-party/events`` here, the stand-in for a third party). Requests never wait for
the sidecar: while it is away the sender buffers (bounded), retries, and counts what it drops.

Routes:
  GET  /6/handlers                 list handlers
  POST /6/handlers                 create one: {"description": "..."}
  GET  /6/handlers/{id}            one handler (404 when unknown)
  POST /6/handlers/{id}/events     "process an image": {"image": "..."} -> generated events
  POST /third-party/events         receives what http_forwarder forwards (not monitored)
  GET  /third-party/events         how many forwarded batches arrived, and the last one
  GET  /stats                      requests served and the sender's counters (not monitored)

Run: python examples/demo_service.py --port 5090 --sidecar http://127.0.0.1:8081
(``--sidecar`` defaults to $LUNA_SIDECAR_ADMIN_URL, then the sidecar's default listener).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import random
import time
import uuid
from collections import Counter
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from luna_plugins.client import (
    SenderSettings,
    SidecarSender,
    admin_url,
    monitoring_middleware,
    request_id_of,
)

log = logging.getLogger("demo-service")

SERVICE = "handlers"
ERROR_CODES = {400: 12003, 404: 22002, 405: 12002, 500: 1}  # LUNA-style error codes per status

STATS = web.AppKey("stats", Counter)
HANDLERS = web.AppKey("handlers", dict)
FORWARDED = web.AppKey("forwarded", list)
SENDER = web.AppKey("sender", SidecarSender)


def monitored(request: web.Request) -> bool:
    """Only the service's API is monitored (not /stats, probes or the third-party stand-in)."""
    return request.path.startswith("/6/")


@web.middleware
async def count_requests(request: web.Request, handler: Any) -> web.StreamResponse:
    """Counts the monitored requests by status, for ``/stats``."""
    if not monitored(request):
        return await handler(request)
    status = 500
    try:
        response: web.StreamResponse = await handler(request)
        status = response.status
        return response
    except web.HTTPException as exc:
        status = exc.status
        raise
    finally:
        request.app[STATS]["requests"] += 1
        request.app[STATS][f"status_{status}"] += 1


def error(status: int, desc: str) -> web.Response:
    return web.json_response({"error_code": ERROR_CODES.get(status, 1), "desc": desc}, status=status)


async def list_handlers(request: web.Request) -> web.Response:
    handlers = request.app[HANDLERS]
    return web.json_response({"handlers": list(handlers.values()), "handler_count": len(handlers)})


async def create_handler(request: web.Request) -> web.Response:
    try:
        body = await request.json()
    except ValueError:
        return error(400, "Bad/incomplete input data: the body is not JSON")
    if not isinstance(body, dict):
        return error(400, "Bad/incomplete input data: the body must be an object")
    handler_id = str(uuid.uuid4())
    request.app[HANDLERS][handler_id] = {
        "handler_id": handler_id,
        "description": str(body.get("description", "")),
        "account_id": DEMO_ACCOUNT,
    }
    return web.json_response({"handler_id": handler_id}, status=201)


async def get_handler(request: web.Request) -> web.Response:
    handler = request.app[HANDLERS].get(request.match_info["id"])
    if handler is None:
        return error(404, "Object not found: handler")
    return web.json_response(handler)


async def process_events(request: web.Request) -> web.Response:
    """Pretends to detect faces in the posted image; the generated events go to the sidecar."""
    created = time.time()
    handler = request.app[HANDLERS].get(request.match_info["id"])
    if handler is None:
        return error(404, "Object not found: handler")
    try:
        body = await request.json()
    except ValueError:
        return error(400, "Bad/incomplete input data: the body is not JSON")
    if not isinstance(body, dict) or not isinstance(body.get("image"), str):
        return error(400, "Bad/incomplete input data: send {'image': '<anything>'}")
    await asyncio.sleep(random.uniform(0.005, 0.08))  # "extraction"
    events = [
        {
            "event_id": str(uuid.uuid4()),
            "handler_id": handler["handler_id"],
            "source": body["image"],
            "face": {"score": round(random.uniform(0.5, 1.0), 3), "age": random.randint(18, 80)},
        }
        for _ in range(random.randint(1, 2))
    ]
    request.app[SENDER].add_events(
        events,
        handler_id=handler["handler_id"],
        account_id=handler["account_id"],
        request_id=request_id_of(request),
        create_event_time=iso(created),
        end_event_time=iso(time.time()),
    )
    return web.json_response({"events": events}, status=201)


async def third_party_receive(request: web.Request) -> web.Response:
    forwarded = request.app[FORWARDED]
    forwarded.append(await request.json())
    del forwarded[:-1]  # keep only the last one
    request.app[STATS]["third_party_batches"] += 1
    return web.json_response({"received": True})


async def third_party_show(request: web.Request) -> web.Response:
    forwarded = request.app[FORWARDED]
    return web.json_response(
        {"batches": request.app[STATS]["third_party_batches"], "last": forwarded[-1] if forwarded else None}
    )


async def stats(request: web.Request) -> web.Response:
    return web.json_response(dict(request.app[STATS]) | request.app[SENDER].stats().as_dict())


def iso(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).isoformat()


DEMO_ACCOUNT = "8b8b5937-2e9c-4e8b-a7a7-5caf86621b5a"
SEEDED_HANDLERS = ("0b3b6b1c-1f5b-4a8e-9d43-2d6a7e1e9c01", "5f1e8f0a-7d5c-4a40-8c2e-9a4b3c2d1e02")


def make_app(sidecar_admin: str | None = None, flush_interval: float = 0.2) -> web.Application:
    """The service; ``sidecar_admin`` is the sidecar's admin URL (default: the sender's), and
    ``flush_interval`` the longest a point waits for its batch."""
    sender = SidecarSender(sidecar_admin, settings=SenderSettings(batch_delay=flush_interval))
    app = web.Application(
        middlewares=[monitoring_middleware(sender, service=SERVICE, monitored=monitored), count_requests]
    )
    app[STATS] = Counter()
    app[HANDLERS] = {
        handler_id: {"handler_id": handler_id, "description": f"demo handler {n}", "account_id": DEMO_ACCOUNT}
        for n, handler_id in enumerate(SEEDED_HANDLERS, 1)
    }
    app[FORWARDED] = []
    app[SENDER] = sender
    app.cleanup_ctx.append(sender.cleanup_ctx)
    app.router.add_get("/6/handlers", list_handlers)
    app.router.add_post("/6/handlers", create_handler)
    app.router.add_get("/6/handlers/{id}", get_handler)
    app.router.add_post("/6/handlers/{id}/events", process_events)
    app.router.add_post("/third-party/events", third_party_receive)
    app.router.add_get("/third-party/events", third_party_show)
    app.router.add_get("/stats", stats)
    return app


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=5090)
    parser.add_argument(
        "--sidecar",
        default=None,
        help="the sidecar's admin listener (event intake); default $LUNA_SIDECAR_ADMIN_URL, "
        "then http://127.0.0.1:8081",
    )
    parser.add_argument(
        "--flush-interval", type=float, default=0.2, help="seconds a point may wait for its batch"
    )
    options = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    log.info(
        "handlers stand-in on http://%s:%d, sidecar intake %s",
        options.host,
        options.port,
        admin_url(options.sidecar),
    )
    web.run_app(
        make_app(options.sidecar, options.flush_interval),
        host=options.host,
        port=options.port,
        print=None,
        access_log=None,
    )


if __name__ == "__main__":
    main()
