"""The plugin-route listener: every request is resolved against the live :class:`RouteTable`.

It runs on aiohttp's low-level server (no frozen router). Each request served also becomes a
``requests`` monitoring point (service, route, status code, execution time), so metrics and
monitoring plugins see plugin traffic like any other service traffic.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
import time
import uuid

from aiohttp import web

from luna_plugins.http import PluginRequest
from luna_plugins.monitoring import MonitoringPoint
from luna_sidecar.bus import PointBuffer
from luna_sidecar.loader import describe_exception
from luna_sidecar.metrics import RuntimeMetrics
from luna_sidecar.routing import RouteTable

log = logging.getLogger(__name__)

REQUEST_ID_HEADER = "Luna-Request-Id"


def _error(status: int, message: str, request_id: str, headers: dict[str, str] | None = None) -> web.Response:
    body = json.dumps({"error": message, "requestId": request_id})
    return web.Response(status=status, text=body, content_type="application/json", headers=headers)


class RouteDispatcher:
    """The request handler of the public listener."""

    def __init__(
        self,
        *,
        routes: RouteTable,
        points: PointBuffer,
        metrics: RuntimeMetrics,
        service: str,
        timeout: float,
    ) -> None:
        self.routes = routes
        self.points = points
        self.metrics = metrics
        self.service = service
        self.timeout = timeout
        self.accepting = True

    async def __call__(self, request: web.BaseRequest) -> web.StreamResponse:
        started = time.perf_counter()
        event_time = time.time()
        request_id = request.headers.get(REQUEST_ID_HEADER) or uuid.uuid4().hex
        entry, match_info, allowed = self.routes.resolve(request.method, request.path)
        plugin = entry.plugin if entry else ""
        route = entry.label if entry else f"{request.method}:unmatched"
        if not self.accepting:
            response: web.StreamResponse = _error(503, "the sidecar is shutting down", request_id)
        elif entry is None:
            if allowed:
                verbs = ", ".join(sorted(allowed))
                response = _error(
                    405, f"{request.method} not allowed here; allowed: {verbs}", request_id, {"Allow": verbs}
                )
            else:
                response = _error(404, f"no plugin route for {request.path}", request_id)
        else:
            response = await self._call(
                entry.plugin, entry.spec.endpoint, entry.label, request, match_info, request_id
            )
        response.headers.setdefault(REQUEST_ID_HEADER, request_id)
        status = response.status
        self.points.add(
            MonitoringPoint(
                "requests",
                event_time,
                {"service": self.service, "route": route, "status_code": status},
                {"request_id": request_id, "execution_time": time.perf_counter() - started},
            )
        )
        if plugin:
            self.metrics.route_requests.labels(plugin, str(status)).inc()
        return response

    async def _call(
        self,
        plugin: str,
        endpoint: object,
        label: str,
        request: web.BaseRequest,
        match_info: dict[str, str],
        request_id: str,
    ) -> web.StreamResponse:
        try:
            body = await request.read()
        except web.HTTPRequestEntityTooLarge as exc:
            return _error(413, f"request body too large: {exc.text}", request_id)
        plugin_request = PluginRequest(request, body, match_info)  # type: ignore[arg-type]
        try:
            async with asyncio.timeout(self.timeout):
                result = endpoint(plugin_request)  # type: ignore[operator]
                if inspect.isawaitable(result):
                    result = await result
        except web.HTTPException as exc:
            return exc
        except TimeoutError:
            log.warning("plugin %s: %s took longer than %g s", plugin, label, self.timeout)
            return _error(504, f"plugin {plugin!r} did not answer within {self.timeout:g} s", request_id)
        except Exception as exc:
            log.error("plugin %s: %s failed: %s", plugin, label, describe_exception(exc), exc_info=exc)
            return _error(500, f"plugin {plugin!r} failed to handle this request", request_id)
        if not isinstance(result, web.StreamResponse):
            log.error("plugin %s: %s returned %r instead of a response", plugin, label, type(result).__name__)
            return _error(500, f"plugin {plugin!r} returned no response", request_id)
        return result
