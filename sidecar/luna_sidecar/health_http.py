"""The metrics listener: ``/metrics`` (Prometheus text format), ``/healthz`` and ``/readyz``."""

from __future__ import annotations

from collections.abc import Callable

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest


def build_metrics_app(
    registry: CollectorRegistry,
    *,
    live: Callable[[], tuple[bool, str]],
    ready: Callable[[], tuple[bool, str]],
) -> web.Application:
    """``live``/``ready`` return (ok, reason); a failing check answers 503 with the reason."""

    async def metrics(_: web.Request) -> web.Response:
        body = generate_latest(registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    def probe(check: Callable[[], tuple[bool, str]]) -> Callable[[web.Request], object]:
        async def handler(_: web.Request) -> web.Response:
            ok, reason = check()
            return web.Response(status=200 if ok else 503, text=reason + "\n")

        return handler

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/healthz", probe(live))  # type: ignore[arg-type]
    app.router.add_get("/readyz", probe(ready))  # type: ignore[arg-type]
    return app
