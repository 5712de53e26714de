"""Recording every request a service serves as LUNA monitoring points.

:func:`monitoring_middleware` adds, per request, a ``requests`` point and, for an error answer
(status 400 or more), an ``errors`` point, as the original services do:

- tags: ``service``, ``route`` (``METHOD:/template`` with the route's own template, e.g.
  ``POST:/6/handlers/{id}/events``, never the concrete path; ``METHOD:unmatched`` when no route
  matched), ``status_code`` (int); ``errors`` points also ``error_code``;
- fields: ``request_id`` and, for ``requests``, ``execution_time`` (seconds, float);
- ``eventTime``: when the request arrived (UNIX seconds).

The request id is the caller's ``Luna-Request-Id`` header, else a new one in LUNA's
``<unix time>,<uuid>`` form; handlers read it with :func:`request_id_of` and it is echoed in
the answer's ``Luna-Request-Id`` header. The middleware only observes: answers and exceptions
pass through unchanged, and adding the points never waits.
"""

from __future__ import annotations

import itertools
import json
import os
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from luna_plugins.client.sender import SidecarSender

REQUEST_ID_HEADER = "Luna-Request-Id"
#: where the middleware keeps the request id on the request (read it with request_id_of); a typed
#: key where aiohttp has them (3.13+), which it recommends over strings
REQUEST_ID_KEY: Any = (
    web.RequestKey("luna_request_id", str) if hasattr(web, "RequestKey") else "luna_request_id"
)
#: error answers larger than this are not read for their ``error_code``
ERROR_BODY_LIMIT = 64 * 1024

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
Middleware = Callable[[web.Request, Handler], Awaitable[web.StreamResponse]]
ErrorCode = Callable[[int, web.StreamResponse | None], int | str]


def route_name(request: web.Request) -> str:
    """``METHOD:/template`` as LUNA names routes, e.g. ``POST:/6/handlers/{id}/events``."""
    resource = request.match_info.route.resource
    template = resource.canonical if resource is not None else None
    return f"{request.method}:{template}" if template else f"{request.method}:unmatched"


def new_request_id() -> str:
    """A request id in LUNA's form, ``<unix seconds>,<uuid>``: unique (a random 80-bit prefix per
    process and a counter) and about six times cheaper than ``uuid4()`` per request."""
    return f"{int(time.time())},{_ID_PREFIX}{next(_id_counter) & 0xFFFFFFFFFFFF:012x}"


def _id_prefix() -> str:
    """The first four groups of a version-4 UUID, random."""
    seed = os.urandom(10).hex()
    variant = "89ab"[int(seed[16], 16) & 3]
    return f"{seed[:8]}-{seed[8:12]}-4{seed[13:16]}-{variant}{seed[17:20]}-"


_ID_PREFIX = _id_prefix()
_id_counter = itertools.count()


def _reseed() -> None:
    """A forked worker (e.g. under gunicorn) gets its own prefix: ids stay unique across them."""
    global _ID_PREFIX, _id_counter
    _ID_PREFIX, _id_counter = _id_prefix(), itertools.count()


os.register_at_fork(after_in_child=_reseed)


def request_id_of(request: web.Request) -> str:
    """The request id the middleware gave ``request`` (the caller's, or a new one)."""
    found = request.get(REQUEST_ID_KEY)
    return found if isinstance(found, str) else request.headers.get(REQUEST_ID_HEADER) or ""


def error_code_of(status: int, response: web.StreamResponse | None) -> int | str:
    """The ``error_code`` of a LUNA error answer (its JSON body's ``error_code``), else the
    HTTP status."""
    if isinstance(response, web.Response) and response.content_type == "application/json":
        body = response.body
        if isinstance(body, bytes) and len(body) <= ERROR_BODY_LIMIT:
            try:
                code = json.loads(body).get("error_code")
            except (ValueError, AttributeError):
                code = None
            if isinstance(code, int | str) and not isinstance(code, bool):
                return code
    return status


def monitoring_middleware(
    sender: SidecarSender,
    *,
    service: str = "handlers",
    monitored: Callable[[web.Request], bool] | None = None,
    error_code: ErrorCode = error_code_of,
) -> Middleware:
    """An aiohttp middleware recording each request through ``sender`` (see the module doc).

    ``monitored`` picks the requests to record (default: all; e.g. leave out probes);
    ``error_code`` gives the ``error_code`` tag of an error answer.
    """

    @web.middleware
    async def record_requests(request: web.Request, handler: Handler) -> web.StreamResponse:
        if monitored is not None and not monitored(request):
            return await handler(request)
        arrived = time.time()
        clock = time.perf_counter()
        request_id = request.headers.get(REQUEST_ID_HEADER) or new_request_id()
        request[REQUEST_ID_KEY] = request_id
        response: web.StreamResponse | None = None
        status = 500
        try:
            response = await handler(request)
            status = response.status
            if not response.prepared:
                response.headers.setdefault(REQUEST_ID_HEADER, request_id)
            return response
        except web.HTTPException as exc:
            response, status = exc, exc.status
            exc.headers.setdefault(REQUEST_ID_HEADER, request_id)
            raise
        finally:
            elapsed = time.perf_counter() - clock
            route = route_name(request)
            sender.add_point(
                "requests",
                {"service": service, "route": route, "status_code": status},
                {"request_id": request_id, "execution_time": elapsed},
                event_time=arrived,
            )
            if status >= 400:
                sender.add_point(
                    "errors",
                    {
                        "service": service,
                        "route": route,
                        "status_code": status,
                        "error_code": error_code(status, response),
                    },
                    {"request_id": request_id},
                    event_time=arrived,
                )

    return record_requests


__all__ = [
    "REQUEST_ID_HEADER",
    "error_code_of",
    "monitoring_middleware",
    "new_request_id",
    "request_id_of",
    "route_name",
]
