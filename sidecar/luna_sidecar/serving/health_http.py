"""The metrics listener: ``/metrics`` (Prometheus text format), ``/healthz`` and ``/readyz``, on
the hardened server of :mod:`luna_sidecar.serving.http_server`.

It has limits of its own (:func:`probe_limits`), so a flood of the route or admin listener
never takes its connections, and nothing a probe needs is larger than a few kilobytes. Every
answer is computed at once (no task per request). ``GET`` and ``HEAD`` are answered; another
verb on these paths gets 405, another path 404.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, generate_latest

from luna_sidecar.serving.http_server import HttpRequest, HttpServer, ListenerLimits, response_bytes

#: (ok, reason): a failing check answers 503 with the reason
Check = Callable[[], tuple[bool, str]]

#: what a probe or a scrape needs, and no more: no body, a short URL, a few small headers
PROBE_LIMITS = ListenerLimits(
    max_body_bytes=4 * 1024,
    max_url_bytes=2 * 1024,
    max_header_bytes=16 * 1024,
    max_headers=64,
    max_connections=64,
    max_in_flight=64,
)

_TEXT = "text/plain; charset=utf-8"
_PATHS = ("/metrics", "/healthz", "/readyz")


def probe_limits(*, max_connections: int, header_timeout: float, request_timeout: float) -> ListenerLimits:
    """The metrics listener's limits: :data:`PROBE_LIMITS` with these connections and deadlines."""
    return replace(
        PROBE_LIMITS,
        max_connections=max_connections,
        header_timeout=header_timeout,
        request_timeout=request_timeout,
    )


class HealthServer(HttpServer):
    """The metrics listener: ``start(host, port)`` listens, ``close()`` closes every connection.

    Its refusals are counted as ``luna_http_refused_total{listener="metrics"}``.
    """

    def __init__(
        self,
        registry: CollectorRegistry,
        *,
        live: Check,
        ready: Check,
        limits: ListenerLimits = PROBE_LIMITS,
        refused: Counter | None = None,
    ) -> None:
        self.registry = registry
        self.checks = {"/healthz": live, "/readyz": ready}
        super().__init__(self._handle, name="metrics", limits=limits, refused=refused)

    def _handle(self, request: HttpRequest) -> bytes:
        method, path = request.method, request.path
        close = not request.keep_alive
        head = method == "HEAD"
        if request.body_too_large:
            request.close_after = True
            return response_bytes(413, b"request body too large\n", content_type=_TEXT, close=True)
        if path not in _PATHS:
            return response_bytes(404, b"not found\n", content_type=_TEXT, close=close, head=head)
        if method not in ("GET", "HEAD"):
            return response_bytes(
                405,
                b"method not allowed\n",
                content_type=_TEXT,
                headers=[("Allow", "GET, HEAD")],
                close=close,
                head=head,
            )
        if path == "/metrics":
            body = generate_latest(self.registry)
            return response_bytes(200, body, content_type=CONTENT_TYPE_LATEST, close=close, head=head)
        ok, reason = self.checks[path]()
        return response_bytes(
            200 if ok else 503, (reason + "\n").encode(), content_type=_TEXT, close=close, head=head
        )
