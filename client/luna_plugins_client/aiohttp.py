"""Recording every request an aiohttp service serves as LUNA monitoring points.

:func:`monitoring_middleware` records what :mod:`luna_plugins_client.recording` describes, with
the route's own template from aiohttp's router. Handlers read the request id with
:func:`request_id_of`; it is echoed in the answer's ``Luna-Request-Id`` header. The middleware
only observes: answers and exceptions pass through unchanged, and adding the points never waits.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from luna_plugins_client.recording import (
    REQUEST_ID_HEADER,
    error_code_in,
    luna_route,
    new_request_id,
    record_request,
)
from luna_plugins_client.sender import SidecarSender

#: where the middleware keeps the request id on the request (read it with request_id_of); a typed
#: key where aiohttp has them (3.13+), which it recommends over strings
REQUEST_ID_KEY: Any = (
    web.RequestKey("luna_request_id", str) if hasattr(web, "RequestKey") else "luna_request_id"
)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
Middleware = Callable[[web.Request, Handler], Awaitable[web.StreamResponse]]
ErrorCode = Callable[[int, web.StreamResponse | None], int | str]


def route_name(request: web.Request) -> str:
    """``METHOD:/template`` as LUNA names routes, e.g. ``POST:/6/handlers/{id}/events``."""
    resource = request.match_info.route.resource
    return luna_route(request.method, resource.canonical if resource is not None else None)


def request_id_of(request: web.Request) -> str:
    """The request id the middleware gave ``request`` (the caller's, or a new one)."""
    found = request.get(REQUEST_ID_KEY)
    return found if isinstance(found, str) else request.headers.get(REQUEST_ID_HEADER) or ""


def error_code_of(status: int, response: web.StreamResponse | None) -> int | str:
    """The ``error_code`` of a LUNA error answer (its JSON body's ``error_code``), else the
    HTTP status."""
    if isinstance(response, web.Response) and isinstance(response.body, bytes):
        return error_code_in(status, response.content_type, response.body)
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
            record_request(
                sender,
                service=service,
                route=route_name(request),
                status=status,
                request_id=request_id,
                arrived=arrived,
                elapsed=time.perf_counter() - clock,
                error_code=error_code(status, response) if status >= 400 else None,
            )

    return record_requests


__all__ = ["REQUEST_ID_KEY", "error_code_of", "monitoring_middleware", "request_id_of", "route_name"]
