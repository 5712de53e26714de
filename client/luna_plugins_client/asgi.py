"""Recording every request an ASGI service serves (Starlette, FastAPI, any ASGI 3 application)
as LUNA monitoring points.

:class:`MonitoringMiddleware` wraps the application and records what
:mod:`luna_plugins_client.recording` describes. The route template is the one the framework's
router put in the scope (``scope["route"].path``, as Starlette and FastAPI do); an application
mounted under a prefix gets the prefix as it was requested, then the inner template. A request no
route matched is ``METHOD:unmatched``. An exception that leaves the application before an answer
started is recorded as 500 and raised on unchanged. Handlers read the request id with
:func:`request_id_of` (Starlette: ``request.state.luna_request_id`` too); it is echoed in the
answer's ``Luna-Request-Id`` header. Needs nothing beyond this package::

    app = Starlette(routes=..., lifespan=...)          # the lifespan runs ``async with sender``
    app.add_middleware(MonitoringMiddleware, sender=sender, service="handlers")
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from luna_plugins_client.recording import (
    ERROR_BODY_LIMIT,
    REQUEST_ID_HEADER,
    error_code_in,
    luna_route,
    new_request_id,
    record_request,
)
from luna_plugins_client.sender import SidecarSender

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]
ErrorCode = Callable[[int, str | None, bytes | None], int | str]

#: the key of the request id in ``scope["state"]`` (Starlette's ``request.state``)
STATE_KEY = "luna_request_id"
_HEADER = REQUEST_ID_HEADER.lower().encode("latin-1")


def route_name(scope: Scope, *, root_path: str = "") -> str:
    """``METHOD:/template`` as LUNA names routes, from the route the router left in ``scope``;
    ``root_path`` is the scope's root path before the application ran (mounts add to it)."""
    route = scope.get("route")
    template = getattr(route, "path", None)
    if not isinstance(template, str) or not template:
        return luna_route(scope.get("method", "GET"), None)
    mounted = str(scope.get("root_path", ""))[len(root_path) :]
    return luna_route(scope.get("method", "GET"), mounted + template)


def request_id_of(scope: Scope) -> str:
    """The request id the middleware gave the request of ``scope`` (the caller's, or a new one)."""
    state = scope.get("state")
    found = state.get(STATE_KEY) if isinstance(state, MutableMapping) else None
    return found if isinstance(found, str) else _header(scope, _HEADER) or ""


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key.lower() == name:
            return bytes(value).decode("latin-1")
    return None


class MonitoringMiddleware:
    """An ASGI middleware recording each HTTP request through ``sender`` (see the module doc).

    ``monitored`` picks the requests to record by their scope (default: all; e.g. leave out
    probes); ``error_code`` gives the ``error_code`` tag of an error answer from its status,
    content type and body (read only when JSON and at most 64 KiB). Lifespan and WebSocket
    scopes pass through unrecorded; the sender's start and close belong to the app's lifespan.
    """

    def __init__(
        self,
        app: ASGIApp,
        sender: SidecarSender,
        *,
        service: str = "handlers",
        monitored: Callable[[Scope], bool] | None = None,
        error_code: ErrorCode = error_code_in,
    ) -> None:
        self.app = app
        self.sender = sender
        self.service = service
        self.monitored = monitored
        self.error_code = error_code

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or (self.monitored is not None and not self.monitored(scope)):
            await self.app(scope, receive, send)
            return
        arrived, clock = time.time(), time.perf_counter()
        root_path = str(scope.get("root_path", ""))
        request_id = _header(scope, _HEADER) or new_request_id()
        scope.setdefault("state", {})[STATE_KEY] = request_id
        answer = _Answer()

        async def send_with_id(message: Message) -> None:
            answer.observe(message, request_id)
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            status = answer.status or 500
            record_request(
                self.sender,
                service=self.service,
                route=route_name(scope, root_path=root_path),
                status=status,
                request_id=request_id,
                arrived=arrived,
                elapsed=time.perf_counter() - clock,
                error_code=self.error_code(status, answer.content_type, answer.body())
                if status >= 400
                else None,
            )


class _Answer:
    """What the application sent: its status, content type and (for a JSON error) its body."""

    def __init__(self) -> None:
        self.status = 0
        self.content_type: str | None = None
        self._chunks: list[bytes] = []
        self._size = 0

    def observe(self, message: Message, request_id: str) -> None:
        if message["type"] == "http.response.start":
            self.status = int(message["status"])
            headers = list(message.get("headers", ()))
            names = {bytes(key).lower() for key, _ in headers}
            for key, value in headers:
                if bytes(key).lower() == b"content-type":
                    self.content_type = bytes(value).decode("latin-1")
            if _HEADER not in names:
                message["headers"] = [*headers, (_HEADER, request_id.encode("latin-1"))]
        elif message["type"] == "http.response.body" and self._reading():
            chunk = bytes(message.get("body", b""))
            self._chunks.append(chunk[: ERROR_BODY_LIMIT + 1 - self._size])
            self._size += len(chunk)

    def _reading(self) -> bool:
        return (
            self.status >= 400
            and (self.content_type or "").startswith("application/json")
            and (self._size <= ERROR_BODY_LIMIT)
        )

    def body(self) -> bytes | None:
        """The error answer's body, or None when it was not read (not JSON) or is too large."""
        if self.status < 400 or not (self.content_type or "").startswith("application/json"):
            return None
        return b"".join(self._chunks) if self._size <= ERROR_BODY_LIMIT else None


__all__ = ["STATE_KEY", "MonitoringMiddleware", "request_id_of", "route_name"]
