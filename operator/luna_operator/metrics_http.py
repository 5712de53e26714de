"""``GET /metrics`` of the operator: its own registry in the Prometheus text format.

A small aiohttp server beside kopf's liveness endpoint (kopf's own server cannot take more
routes), run as kopf runs its probe server: an ``AppRunner`` without signal handling, cleaned
up when the block ends.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest


def metrics_app(registry: CollectorRegistry) -> web.Application:
    """The application serving ``registry`` at ``/metrics``."""

    async def metrics(request: web.Request) -> web.Response:
        response = web.Response(body=generate_latest(registry))
        response.headers["Content-Type"] = CONTENT_TYPE_LATEST
        return response

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    return app


@contextlib.asynccontextmanager
async def serving_metrics(registry: CollectorRegistry, host: str, port: int) -> AsyncIterator[web.AppRunner]:
    """Serve ``registry`` on ``host:port`` for as long as the block runs."""
    runner = web.AppRunner(metrics_app(registry), handle_signals=False, access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port).start()
        yield runner
    finally:
        await runner.cleanup()
