"""A tiny stand-in for the LUNA *handlers* service, for the demo (`examples/demo.py`).

It serves a few handler routes and, like the real service, reports every request it serves to the
plugins sidecar beside it: after each request under ``/6/`` it queues a ``requests`` monitoring
point (and an ``errors`` point for 4xx/5xx), and a background task posts the queued points to the
sidecar's intake (``POST /events/monitoring_event``) every ``--flush-interval`` seconds. Each
event-processing request also generates events, posted to ``POST /events/sending_event`` (the
``http_forwarder`` example plugin forwards them to ``/third-party/events`` here, the stand-in for a
third party). Requests never wait for the sidecar; when it is unreachable the batch is dropped,
counted and logged.

Routes:
  GET  /6/handlers                 list handlers
  POST /6/handlers                 create one: {"description": "..."}
  GET  /6/handlers/{id}            one handler (404 when unknown)
  POST /6/handlers/{id}/events     "process an image": {"image": "..."} -> generated events
  POST /third-party/events         receives what http_forwarder forwards (not monitored)
  GET  /third-party/events         how many forwarded batches arrived, and the last one
  GET  /stats                      what this service sent to the sidecar (not monitored)

Run: python examples/demo_service.py --port 5090 --sidecar http://127.0.0.1:8081
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import random
import time
import uuid
from collections import Counter
from datetime import UTC, datetime
from typing import Any

from aiohttp import ClientError, ClientSession, ClientTimeout, web

log = logging.getLogger("demo-service")

SERVICE = "handlers"
MAX_BUFFERED_POINTS = 50_000
MAX_BUFFERED_EVENT_BATCHES = 1_000
ERROR_CODES = {400: 12003, 404: 22002, 405: 12002, 500: 1}  # LUNA-style error codes per status

STATS = web.AppKey("stats", Counter)
HANDLERS = web.AppKey("handlers", dict)
FORWARDED = web.AppKey("forwarded", list)
REQUEST_ID: Any = web.RequestKey("request_id", str) if hasattr(web, "RequestKey") else "request_id"


class SidecarSender:
    """Buffers points and event batches; a background task posts them to the sidecar's intake."""

    def __init__(self, admin_url: str, interval: float, stats: Counter[str]) -> None:
        self.admin_url = admin_url.rstrip("/")
        self.interval = interval
        self.stats = stats
        self.points: list[dict[str, Any]] = []
        self.event_batches: list[dict[str, Any]] = []
        self.session: ClientSession | None = None
        self.task: asyncio.Task[None] | None = None
        self.failing_since: float | None = None

    def add_point(self, point: dict[str, Any]) -> None:
        if len(self.points) >= MAX_BUFFERED_POINTS:
            self.stats["points_dropped"] += 1
            return
        self.points.append(point)

    def add_events(self, body: dict[str, Any]) -> None:
        if len(self.event_batches) >= MAX_BUFFERED_EVENT_BATCHES:
            self.stats["event_batches_dropped"] += 1
            return
        self.event_batches.append(body)

    async def start(self, _app: web.Application) -> None:
        self.session = ClientSession(timeout=ClientTimeout(total=5))
        self.task = asyncio.create_task(self.run())

    async def stop(self, _app: web.Application) -> None:
        if self.task:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.flush(), timeout=2)  # what is still queued, best effort
        if self.session:
            await self.session.close()

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                await self.flush()
            except Exception:  # never let the sender die
                log.exception("flushing to the sidecar failed")

    async def flush(self) -> None:
        points, self.points = self.points, []
        batches, self.event_batches = self.event_batches, []
        if points:
            if await self.post("monitoring_event", {"points": points}):
                self.stats["points_sent"] += len(points)
            else:
                self.stats["points_dropped"] += len(points)
        for body in batches:
            if await self.post("sending_event", body):
                self.stats["event_batches_sent"] += 1
            else:
                self.stats["event_batches_dropped"] += 1

    async def post(self, event_name: str, body: dict[str, Any]) -> bool:
        assert self.session is not None
        url = f"{self.admin_url}/events/{event_name}"
        try:
            async with self.session.post(url, json=body) as response:
                if response.status == 202:
                    if self.failing_since is not None:
                        log.info("the sidecar accepts %s again", event_name)
                        self.failing_since = None
                    return True
                problem = f"answered {response.status}: {(await response.text())[:300]}"
        except (ClientError, TimeoutError, OSError) as exc:
            problem = f"unreachable: {exc!r}"
        now = time.monotonic()
        if self.failing_since is None or now - self.failing_since > 30:  # log once per 30 s at most
            log.warning("sidecar intake %s %s (dropping the batch)", url, problem)
            self.failing_since = now
        return False


SENDER = web.AppKey("sender", SidecarSender)


def request_id(request: web.Request) -> str:
    """The caller's ``Luna-Request-Id``, or a new one in LUNA's ``<unix time>,<uuid>`` form."""
    return request.headers.get("Luna-Request-Id") or f"{int(time.time())},{uuid.uuid4()}"


def route_name(request: web.Request) -> str:
    """``METHOD:/template`` as LUNA names routes, e.g. ``POST:/6/handlers/{id}/events``."""
    resource = request.match_info.route.resource
    template = resource.canonical if resource is not None else "unmatched"
    return f"{request.method}:{template}"


@web.middleware
async def monitoring(request: web.Request, handler: Any) -> web.StreamResponse:
    """Times every ``/6/`` request and queues its ``requests`` point (and ``errors`` point)."""
    if not request.path.startswith("/6/"):
        return await handler(request)
    started, clock = time.time(), time.perf_counter()
    rid = request_id(request)
    request[REQUEST_ID] = rid
    status = 500
    try:
        response = await handler(request)
        status = response.status
    except web.HTTPException as exc:
        status = exc.status
        exc.headers["Luna-Request-Id"] = rid
        raise
    except Exception:
        log.exception("request %s failed", rid)
        response = web.json_response({"error_code": 1, "desc": "Internal server error"}, status=500)
    finally:
        elapsed = time.perf_counter() - clock
        route = route_name(request)
        sender = request.app[SENDER]
        sender.add_point(
            {
                "series": "requests",
                "eventTime": started,
                "tags": {"service": SERVICE, "route": route, "status_code": status},
                "fields": {"request_id": rid, "execution_time": elapsed},
            }
        )
        if status >= 400:
            sender.add_point(
                {
                    "series": "errors",
                    "eventTime": started,
                    "tags": {"service": SERVICE, "route": route, "error_code": ERROR_CODES.get(status, 1)},
                    "fields": {"request_id": rid},
                }
            )
        request.app[STATS]["requests"] += 1
        request.app[STATS][f"status_{status}"] += 1
    response.headers["Luna-Request-Id"] = rid
    return response


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
        {
            "events": events,
            "handlerId": handler["handler_id"],
            "accountId": handler["account_id"],
            "requestId": request[REQUEST_ID],
            "createEventTime": iso(created),
            "endEventTime": iso(time.time()),
        }
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
    return web.json_response(dict(request.app[STATS]))


def iso(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).isoformat()


DEMO_ACCOUNT = "8b8b5937-2e9c-4e8b-a7a7-5caf86621b5a"
SEEDED_HANDLERS = ("0b3b6b1c-1f5b-4a8e-9d43-2d6a7e1e9c01", "5f1e8f0a-7d5c-4a40-8c2e-9a4b3c2d1e02")


def make_app(sidecar_admin: str, flush_interval: float = 0.5) -> web.Application:
    app = web.Application(middlewares=[monitoring])
    app[STATS] = Counter()
    app[HANDLERS] = {
        handler_id: {"handler_id": handler_id, "description": f"demo handler {n}", "account_id": DEMO_ACCOUNT}
        for n, handler_id in enumerate(SEEDED_HANDLERS, 1)
    }
    app[FORWARDED] = []
    sender = SidecarSender(sidecar_admin, flush_interval, app[STATS])
    app[SENDER] = sender
    app.on_startup.append(sender.start)
    app.on_cleanup.append(sender.stop)
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
        "--sidecar", default="http://127.0.0.1:8081", help="the sidecar's admin listener (event intake)"
    )
    parser.add_argument(
        "--flush-interval", type=float, default=0.5, help="seconds between posts to the sidecar"
    )
    options = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    log.info(
        "handlers stand-in on http://%s:%d, sidecar intake %s", options.host, options.port, options.sidecar
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
