"""The service side of luna-plugins: sending monitoring points and events to the sidecar.

A service imports this with nothing beyond aiohttp installed (none of the runtime's other
dependencies):

- :class:`SidecarSender`: adds points and events without ever waiting, batches them, holds a
  bounded backlog (the oldest waiting are dropped when full, and counted), retries with backoff
  while the sidecar starts or restarts, flushes on close within a deadline, and counts what it
  sent and dropped (:class:`SenderStats`);
- :func:`monitoring_middleware`: an aiohttp middleware recording a ``requests`` point (and an
  ``errors`` point for error answers) per request, with LUNA's route names.

The body shapes are those of the sidecar's intake (``docs/openapi/intake.yaml``).
"""

from luna_plugins.client.middleware import (
    REQUEST_ID_HEADER,
    error_code_of,
    monitoring_middleware,
    new_request_id,
    request_id_of,
    route_name,
)
from luna_plugins.client.sender import (
    ADMIN_URL_VARIABLE,
    DEFAULT_ADMIN_URL,
    SenderSettings,
    SenderStats,
    SidecarSender,
    admin_url,
)
from luna_plugins.client.wire import InvalidPointError

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
