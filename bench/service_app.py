"""A service for the client benchmark: one LUNA-like route, with or without monitoring_middleware.

``GET /6/handlers/{id}`` answers a small JSON document. With ``--middleware`` every request
becomes a ``requests`` point sent by a SidecarSender to ``--sidecar``; without it the app is the
same minus the middleware (the sender still runs, idle), so the difference is what the service
pays for its monitoring.

Usage: ``python bench/service_app.py PORT --sidecar URL [--middleware]`` (listens on 127.0.0.1).
"""

from __future__ import annotations

import argparse
import json

from aiohttp import web

from luna_plugins.client import SenderSettings, SidecarSender, monitoring_middleware

STATS = web.AppKey("sender", SidecarSender)


async def handler(request: web.Request) -> web.Response:
    return web.json_response({"handler_id": request.match_info["id"], "description": "bench"})


async def stats(request: web.Request) -> web.Response:
    return web.Response(
        text=json.dumps(request.app[STATS].stats().as_dict()), content_type="application/json"
    )


def make_app(sidecar: str, middleware: bool) -> web.Application:
    sender = SidecarSender(sidecar, settings=SenderSettings(max_points=200_000))
    monitored = [monitoring_middleware(sender, monitored=lambda r: r.path != "/stats")] if middleware else []
    app = web.Application(middlewares=monitored)
    app[STATS] = sender
    app.cleanup_ctx.append(sender.cleanup_ctx)
    app.router.add_get("/6/handlers/{id}", handler)
    app.router.add_get("/stats", stats)
    return app


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("port", type=int)
    parser.add_argument("--sidecar", required=True)
    parser.add_argument("--middleware", action="store_true")
    options = parser.parse_args()
    web.run_app(
        make_app(options.sidecar, options.middleware),
        host="127.0.0.1",
        port=options.port,
        print=None,
        access_log=None,
    )


if __name__ == "__main__":
    main()
