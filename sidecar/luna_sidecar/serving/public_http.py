"""The plugin-route listener: every request is resolved against the live :class:`RouteTable`.

It runs on the sidecar's hardened HTTP server (:mod:`luna_sidecar.serving.http_server`): a handler that
answers synchronously is answered without a task. Each request served also becomes a
``requests`` monitoring point (service, route, status code, execution time), so metrics and
monitoring plugins see plugin traffic like any other service traffic.

Handlers return what ``pluginHTTPResponse`` builds (a ``PluginResponse``, an aiohttp
``web.Response`` whose header lines are made once: written as they are while the handler left it
unchanged); any other ``web.Response``, an ``HTTPException`` raised or returned, cookies
included, works alike; a streamed response (``web.StreamResponse`` that is not a
``web.Response``) is not supported and gets its client a 500.
"""

from __future__ import annotations

import asyncio
import inspect
import itertools
import json
import logging
import os
import time
from collections.abc import Awaitable
from typing import Any, TypeGuard, cast

from aiohttp import web
from prometheus_client import Counter

from luna_plugins.http import SERVER_HEADERS, PluginRequest, PluginResponse, response_payload
from luna_plugins.monitoring import MonitoringPoint, ReadOnlyDict
from luna_sidecar.engine import PointBuffer, RouteEntry, RouteTable, describe_exception
from luna_sidecar.isolation import CANCEL_GRACE, Leftovers
from luna_sidecar.observability import RuntimeMetrics
from luna_sidecar.serving.http_server import HttpRequest, HttpServer, ListenerLimits, response_bytes

log = logging.getLogger(__name__)

REQUEST_ID_HEADER = "Luna-Request-Id"
_REQUEST_ID = b"luna-request-id"
#: (route, status) tag sets of the runtime's own points kept for reuse
TAG_SETS_KEPT = 4096


def _error(status: int, message: str, request_id: str, headers: dict[str, str] | None = None) -> web.Response:
    body = json.dumps({"error": message, "requestId": request_id})
    return web.Response(status=status, text=body, content_type="application/json", headers=headers)


def _is_response(value: object) -> TypeGuard[web.StreamResponse]:
    """Whether ``value`` is a response (asked of every handler's result: the common case is
    answered without the abstract-base-class check that isinstance makes for aiohttp's
    responses, which are mutable mappings)."""
    cls = value.__class__
    return cls is PluginResponse or cls is web.Response or isinstance(value, web.StreamResponse)


def encode_response(response: web.StreamResponse, *, head: bool, close: bool) -> bytes | None:
    """The bytes of ``response`` (a ``web.Response``); None for a response that cannot be sent
    in one piece (streamed, or a body that is not bytes)."""
    if not isinstance(response, web.Response):
        return None
    payload = response_payload(response)
    if payload is None:
        return None
    headers: list[tuple[str, str]] = []
    content_type = False
    for name, value in response.headers.items():
        lowered = name.lower()
        if lowered == "content-type":
            content_type = True
        elif lowered in SERVER_HEADERS:
            continue
        headers.append((name, value))
    if payload and not content_type:
        headers.append(("Content-Type", "application/octet-stream"))
    cookies = response._cookies  # read without making an empty jar per response
    if cookies:
        for cookie in cookies.values():
            headers.append(("Set-Cookie", cookie.OutputString()))
    return response_bytes(
        response.status, payload, content_type=None, headers=headers, close=close, head=head
    )


class RouteDispatcher:
    """The request handler of the public listener.

    Route timeouts use one watchdog for all requests in flight (a timer per request would cost
    more than a typical handler); an overdue handler is cancelled and its client gets 504. A
    handler that ignores the cancellation is abandoned a moment later: its connection is closed
    (the client is not left waiting) and the task is reported in ``leftovers``.
    """

    def __init__(
        self,
        *,
        routes: RouteTable,
        points: PointBuffer,
        metrics: RuntimeMetrics,
        service: str,
        timeout: float,
        leftovers: Leftovers | None = None,
        max_body_bytes: int = 8 * 1024 * 1024,
    ) -> None:
        self.routes = routes
        self.max_body_bytes = max_body_bytes
        self.leftovers = leftovers if leftovers is not None else Leftovers()
        self.points = points
        self.metrics = metrics
        self.service = service
        self.timeout = timeout
        self.accepting = True
        #: request task -> (deadline, plugin, route label, request)
        self._deadlines: dict[asyncio.Task[object], tuple[float, str, str, HttpRequest]] = {}
        self._overdue: set[asyncio.Task[object]] = set()
        self._watchdog: asyncio.TimerHandle | None = None
        self._sweep_every = max(0.05, min(1.0, timeout / 10))
        self._id_prefix = os.urandom(4).hex() + "-"  # then a counter: unique per process and start
        self._ids = itertools.count()
        self._counters: dict[tuple[str, int], Any] = {}
        self._tags: dict[tuple[str, int], ReadOnlyDict] = {}

    def forget_plugin(self, plugin: str) -> None:
        """Drop the metric children cached for ``plugin`` (its series were removed)."""
        for key in [key for key in self._counters if key[0] == plugin]:
            del self._counters[key]

    def __call__(self, request: HttpRequest) -> bytes | Awaitable[bytes]:
        """Answer ``request``: the response's bytes, or an awaitable of them when the handler is
        asynchronous."""
        started = time.perf_counter()
        event_time = time.time()
        given = request.header(_REQUEST_ID)
        request_id = given.decode("latin-1") if given else self._id_prefix + hex(next(self._ids))[2:]
        method = request.method
        path = request.path
        entry, match_info, allowed = self.routes.resolve(method, path)
        if not self.accepting:
            response: web.StreamResponse = _error(503, "the sidecar is shutting down", request_id)
        elif entry is None:
            if allowed:
                verbs = ", ".join(sorted(allowed))
                response = _error(
                    405, f"{method} not allowed here; allowed: {verbs}", request_id, {"Allow": verbs}
                )
            else:
                response = _error(404, f"no plugin route for {path}", request_id)
        elif request.body_too_large:
            response = _error(
                413, f"request body too large: more than {self.max_body_bytes} bytes", request_id
            )
        else:
            # a synchronous handler is answered here, without another coroutine
            plugin_request = PluginRequest(request, request.body, match_info)
            outcome = self._call(entry, plugin_request, request_id)
            if not _is_response(outcome):  # what an asynchronous handler returned, to await
                return self._answer_later(
                    cast(Awaitable[object], outcome), entry, request, request_id, started, event_time
                )
            response = outcome
        return self._answer(response, entry, request, request_id, started, event_time)

    async def _answer_later(
        self,
        pending: Awaitable[object],
        entry: RouteEntry,
        request: HttpRequest,
        request_id: str,
        started: float,
        event_time: float,
    ) -> bytes:
        response = await self._finish(pending, entry, request, request_id)
        return self._answer(response, entry, request, request_id, started, event_time)

    def _answer(
        self,
        response: web.StreamResponse,
        entry: RouteEntry | None,
        request: HttpRequest,
        request_id: str,
        started: float,
        event_time: float,
    ) -> bytes:
        """The response's bytes; its ``requests`` point and counters recorded."""
        wire = response.wire() if response.__class__ is PluginResponse else None
        if wire is not None:  # as pluginHTTPResponse built it: its header lines are ready
            lines = wire.lines
            if not wire.has_request_id:
                lines += "Luna-Request-Id: " + request_id + "\r\n"
            data: bytes | None = response_bytes(
                wire.status,
                wire.body,
                content_type=None,
                lines=lines,
                close=request.close_after,
                head=request.method == "HEAD",
            )
        else:
            response.headers.setdefault(REQUEST_ID_HEADER, request_id)
            data = encode_response(response, head=request.method == "HEAD", close=request.close_after)
        if data is None and entry is not None:
            log.error(
                "plugin %s: %s returned a %s, which cannot be sent (return pluginHTTPResponse)",
                entry.plugin,
                entry.label,
                type(response).__name__,
            )
            response = _error(
                500, f"plugin {entry.plugin!r} returned a response that cannot be sent", request_id
            )
            data = encode_response(response, head=request.method == "HEAD", close=request.close_after)
        assert data is not None
        status = response.status
        route = entry.label if entry else f"{request.method}:unmatched"
        tags = self._tags.get((route, status))
        if tags is None:
            if len(self._tags) >= TAG_SETS_KEPT:
                self._tags.clear()
            # read-only, so every point of this route and status can share one
            tags = self._tags[(route, status)] = ReadOnlyDict(
                service=self.service, route=route, status_code=status
            )
        self.points.add(
            MonitoringPoint(
                "requests",
                event_time,
                tags,
                ReadOnlyDict(request_id=request_id, execution_time=time.perf_counter() - started),
            )
        )
        if entry is not None:
            plugin = entry.plugin
            counter = self._counters.get((plugin, status))
            if counter is None:
                counter = self._counters[(plugin, status)] = self.metrics.route_requests.labels(
                    plugin, str(status)
                )
            counter.inc()
            self.routes.tally.count(plugin, status)
        return data

    def _call(
        self, entry: RouteEntry, plugin_request: PluginRequest, request_id: str
    ) -> web.StreamResponse | Awaitable[object]:
        """Call the handler: its response (or the error response it earned), or what it returned
        to await when it is asynchronous."""
        try:
            result = entry.spec.endpoint(plugin_request)
        except BaseException as exc:
            return self._failure(exc, entry, request_id)
        if _is_response(result):
            return result
        if inspect.isawaitable(result):
            return result
        return self._no_response(result, entry, request_id)

    async def _finish(
        self, awaitable: Awaitable[object], entry: RouteEntry, request: HttpRequest, request_id: str
    ) -> web.StreamResponse:
        """Await an asynchronous handler under the route timeout."""
        try:
            result = await self._await_in_time(awaitable, entry.plugin, entry.label, request)
        except BaseException as exc:
            return self._failure(exc, entry, request_id)
        if _is_response(result):
            return result
        return self._no_response(result, entry, request_id)

    def _failure(self, exc: BaseException, entry: RouteEntry, request_id: str) -> web.StreamResponse:
        """The response for what a handler raised (cancellation and loop shutdown go on up)."""
        plugin, label = entry.plugin, entry.label
        if isinstance(exc, web.HTTPException):
            return exc
        if isinstance(exc, TimeoutError):
            log.warning("plugin %s: %s took longer than %g s", plugin, label, self.timeout)
            return _error(504, f"plugin {plugin!r} did not answer within {self.timeout:g} s", request_id)
        if isinstance(exc, asyncio.CancelledError | GeneratorExit):
            raise exc  # the client went away, or the server is stopping
        # anything else (SystemExit, KeyboardInterrupt included) is this request's failure only
        log.error("plugin %s: %s failed: %s", plugin, label, describe_exception(exc), exc_info=exc)
        return _error(500, f"plugin {plugin!r} failed to handle this request", request_id)

    @staticmethod
    def _no_response(result: object, entry: RouteEntry, request_id: str) -> web.StreamResponse:
        log.error(
            "plugin %s: %s returned %r instead of a response",
            entry.plugin,
            entry.label,
            type(result).__name__,
        )
        return _error(500, f"plugin {entry.plugin!r} returned no response", request_id)

    async def _await_in_time(
        self, awaitable: Awaitable[object], plugin: str, label: str, request: HttpRequest
    ) -> object:
        """Await a handler; raises TimeoutError when the watchdog finds it overdue."""
        task = asyncio.current_task()
        assert task is not None
        loop = asyncio.get_running_loop()
        self._deadlines[task] = (loop.time() + self.timeout, plugin, label, request)
        if self._watchdog is None:
            self._watchdog = loop.call_later(self._sweep_every, self._sweep)
        try:
            return await awaitable
        except asyncio.CancelledError:
            if task in self._overdue:
                task.uncancel()
                raise TimeoutError from None
            raise
        finally:
            self._deadlines.pop(task, None)
            self._overdue.discard(task)

    def _sweep(self) -> None:
        loop = asyncio.get_running_loop()
        now = loop.time()
        for task, (deadline, plugin, label, request) in list(self._deadlines.items()):
            if now >= deadline and task not in self._overdue:
                self._overdue.add(task)
                task.cancel()
            elif now >= deadline + CANCEL_GRACE and task in self._overdue:
                self._abandon(task, plugin, label, request)
        self._watchdog = loop.call_later(self._sweep_every, self._sweep) if self._deadlines else None

    def _abandon(self, task: asyncio.Task[object], plugin: str, label: str, request: HttpRequest) -> None:
        """The handler ignored its cancellation: let its client go and stop watching it."""
        del self._deadlines[task]
        log.warning("plugin %s: %s ignores cancellation; closing its connection", plugin, label)
        transport = request.transport
        if transport is not None:
            transport.close()
        self.leftovers.add_task(task, plugin=plugin, code_hash="", what=f"route {label.replace(':', ' ', 1)}")


class PublicServer(HttpServer):
    """The plugin-route listener: ``start(host, port)``, ``close()``."""

    def __init__(
        self,
        dispatcher: RouteDispatcher,
        *,
        limits: ListenerLimits | None = None,
        refused: Counter | None = None,
    ) -> None:
        self.dispatcher = dispatcher
        super().__init__(dispatcher, name="routes", limits=limits, refused=refused)
