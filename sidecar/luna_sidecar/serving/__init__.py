"""The sidecar's three listeners on its own hardened HTTP/1.1 server.

``http_server`` is the server; ``public_http`` serves the plugins' routes, ``admin_http`` and
``admin_server`` the event intake and ``GET /plugins``, ``health_http`` ``/metrics`` and the
probes. What they serve comes from the engine; none of them knows where plugins come from.
"""

from luna_sidecar.serving.admin_http import SHUTTING_DOWN, STARTING, AdminEndpoints, EventIntake
from luna_sidecar.serving.admin_server import AdminServer
from luna_sidecar.serving.health_http import HealthServer, probe_limits
from luna_sidecar.serving.http_server import HttpServer, ListenerLimits, refused_counter
from luna_sidecar.serving.public_http import PublicServer, RouteDispatcher

__all__ = [
    "SHUTTING_DOWN",
    "STARTING",
    "AdminEndpoints",
    "AdminServer",
    "EventIntake",
    "HealthServer",
    "HttpServer",
    "ListenerLimits",
    "PublicServer",
    "RouteDispatcher",
    "probe_limits",
    "refused_counter",
]
