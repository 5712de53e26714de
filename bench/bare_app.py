"""The baseline: a bare aiohttp app doing the work the sidecar's endpoints must do at least.

``POST /events/monitoring_event`` reads the body, parses it as JSON and answers 202 with a fixed
text; ``GET /hello`` answers a fixed text. No validation, metrics or plugins; access log off.

Usage: ``python bench/bare_app.py PORT`` (listens on 127.0.0.1).
"""

from __future__ import annotations

import json
import sys

from aiohttp import web

ACCEPTED = '{"accepted": true}'
HELLO = "hello, world\n"


async def intake(request: web.Request) -> web.Response:
    body = json.loads(await request.read())
    if not isinstance(body, dict):
        return web.Response(status=400, text="not an object")
    return web.Response(status=202, text=ACCEPTED, content_type="application/json")


async def hello(_: web.Request) -> web.Response:
    return web.Response(text=HELLO)


def build_app() -> web.Application:
    app = web.Application(client_max_size=8 * 1024 * 1024)
    app.router.add_post("/events/monitoring_event", intake)
    app.router.add_get("/hello", hello)
    return app


def main(argv: list[str]) -> int:
    if len(argv) != 2 or not argv[1].isdigit():
        print("usage: bare_app.py PORT", file=sys.stderr)
        return 2
    web.run_app(build_app(), host="127.0.0.1", port=int(argv[1]), access_log=None, print=None)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
