"""The service side of luna-plugins: sending monitoring points and events to the sidecar.

The ``luna-plugins-client`` distribution: it needs aiohttp (its HTTP client) and nothing of the
runtime (no kopf, kubernetes-asyncio, uvloop, httptools). The full ``luna-plugins`` distribution
holds it too, also importable there as ``luna_plugins.client``.

- :class:`SidecarSender`: adds points and events without ever waiting, batches them, holds a
  bounded backlog (the oldest waiting are dropped when full, and counted), retries with backoff
  while the sidecar starts or restarts, flushes on close within a deadline, and counts what it
  sent and dropped (:class:`SenderStats`);
- a middleware per framework recording a ``requests`` point (and an ``errors`` point for error
  answers) per request, with LUNA's route names: :func:`monitoring_middleware` (aiohttp, here),
  :func:`luna_plugins_client.sanic.install_monitoring` (Sanic) and
  :class:`luna_plugins_client.asgi.MonitoringMiddleware` (Starlette, FastAPI, any ASGI app);
- :func:`luna_plugins_client.prometheus.register_sender_metrics`: the sender's counters as
  Prometheus metrics.

Importing this package loads aiohttp only; the Sanic, ASGI and Prometheus modules load their
framework when imported themselves. The body shapes are those of the sidecar's intake
(``docs/openapi/intake.yaml``).
"""

from luna_plugins_client.aiohttp import error_code_of, monitoring_middleware, request_id_of, route_name
from luna_plugins_client.recording import REQUEST_ID_HEADER, new_request_id
from luna_plugins_client.sender import (
    ADMIN_URL_VARIABLE,
    DEFAULT_ADMIN_URL,
    SenderSettings,
    SenderStats,
    SidecarSender,
    admin_url,
)
from luna_plugins_client.wire import InvalidPointError

__all__ = [
    "ADMIN_URL_VARIABLE",
    "DEFAULT_ADMIN_URL",
    "REQUEST_ID_HEADER",
    "InvalidPointError",
    "SenderSettings",
    "SenderStats",
    "SidecarSender",
    "admin_url",
    "error_code_of",
    "monitoring_middleware",
    "new_request_id",
    "request_id_of",
    "route_name",
]
