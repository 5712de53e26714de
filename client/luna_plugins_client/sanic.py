"""Recording every request a Sanic service serves as LUNA monitoring points (the original LUNA
handlers service is a Sanic application).

:func:`install_monitoring` registers a request and a response middleware on the app that record
what :mod:`luna_plugins_client.recording` describes, with Sanic's route template written as
LUNA names routes (``/6/handlers/<id:str>/events`` becomes ``POST:/6/handlers/{id}/events``).
Sanic runs response middleware for error answers too (raised exceptions, unmatched routes), so
those are recorded with their status. Handlers read the request id with :func:`request_id_of`;
it is echoed in the answer's ``Luna-Request-Id`` header. Needs Sanic (``luna-plugins-client[sanic]``).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from sanic import Request, Sanic
from sanic.response import BaseHTTPResponse

from luna_plugins_client.recording import (
    REQUEST_ID_HEADER,
    error_code_in,
    luna_route,
    new_request_id,
    record_request,
)
from luna_plugins_client.sender import SidecarSender

ErrorCode = Callable[[int, BaseHTTPResponse], int | str]


def route_name(request: Request) -> str:
    """``METHOD:/template`` as LUNA names routes, e.g. ``POST:/6/handlers/{id}/events``."""
    return luna_route(request.method, request.uri_template)


def request_id_of(request: Request) -> str:
    """The request id the middleware gave ``request`` (the caller's, or a new one)."""
    found = getattr(request.ctx, "luna_request_id", None)
    return found if isinstance(found, str) else request.headers.get(REQUEST_ID_HEADER) or ""


def error_code_of(status: int, response: BaseHTTPResponse) -> int | str:
    """The ``error_code`` of a LUNA error answer (its JSON body's ``error_code``), else the
    HTTP status."""
    return error_code_in(status, response.content_type, response.body)


def install_monitoring(
    app: Sanic[Any, Any],
    sender: SidecarSender,
    *,
    service: str = "handlers",
    monitored: Callable[[Request], bool] | None = None,
    error_code: ErrorCode = error_code_of,
    manage_sender: bool = True,
) -> None:
    """Record each request ``app`` serves through ``sender`` (see the module doc).

    ``monitored`` picks the requests to record (default: all; e.g. leave out probes);
    ``error_code`` gives the ``error_code`` tag of an error answer. With ``manage_sender`` (the
    default) the sender starts before the server does and is closed (flushing) after it stops.
    """

    async def note_arrival(request: Request) -> None:
        if monitored is not None and not monitored(request):
            return
        request.ctx.luna_request_id = request.headers.get(REQUEST_ID_HEADER) or new_request_id()
        request.ctx.luna_arrived = (time.time(), time.perf_counter())

    async def record_answer(request: Request, response: BaseHTTPResponse) -> None:
        arrival = getattr(request.ctx, "luna_arrived", None)
        if arrival is None:  # not monitored
            return
        request_id: str = request.ctx.luna_request_id
        if REQUEST_ID_HEADER not in response.headers:
            response.headers[REQUEST_ID_HEADER] = request_id
        status = response.status
        record_request(
            sender,
            service=service,
            route=route_name(request),
            status=status,
            request_id=request_id,
            arrived=arrival[0],
            elapsed=time.perf_counter() - arrival[1],
            error_code=error_code(status, response) if status >= 400 else None,
        )

    # the request middleware runs first and the response one last: the time includes the others'
    app.register_middleware(note_arrival, "request", priority=1_000_000)
    app.register_middleware(record_answer, "response", priority=-1_000_000)
    if manage_sender:

        async def start_sender(_app: Sanic[Any, Any]) -> None:
            await sender.start()

        async def close_sender(_app: Sanic[Any, Any]) -> None:
            await sender.close()

        app.before_server_start(start_sender)
        app.after_server_stop(close_sender)


__all__ = ["error_code_of", "install_monitoring", "request_id_of", "route_name"]
