"""What a route handler returns reaches the client as the handler left it, through the sidecar's
dispatcher: ``pluginHTTPResponse`` as built, the same response changed after it was built
(headers, status, body, cookies), a plain aiohttp response, and header values that would split
the response."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from luna_plugins.base.plugins_meta.base_plugins import pluginHTTPResponse
from luna_sidecar.testing import run_plugin

ROUTES = """
from aiohttp import web
from luna_plugins.base.plugins_meta.base_plugins import BaseBackgroundPlugin, pluginHTTPResponse

def as_built(request):
    return pluginHTTPResponse(statusCode=201, body={"a": 1}, headers={"X-Kept": "yes", "Date": "never"})

def changed(request):
    response = pluginHTTPResponse(body="first", headers={"X-Old": "1"})
    response.headers["X-Added"] = "2"
    response.set_status(202)
    response.body = b"second"
    response.set_cookie("session", "abc")
    return response

def own_id(request):
    return pluginHTTPResponse(body="mine", headers={"Luna-Request-Id": "chosen"})

def status_only(request):
    response = pluginHTTPResponse(body="x")
    response.set_status(418)
    return response

def aiohttp_response(request):
    return web.Response(status=203, text="plain", headers={"X-Plain": "1"})

class Routes(BaseBackgroundPlugin):
    async def initialize(self):
        self.addRoute("/built", as_built)
        self.addRoute("/changed", changed)
        self.addRoute("/own-id", own_id)
        self.addRoute("/status-only", status_only)
        self.addRoute("/aiohttp", aiohttp_response)
"""


async def test_responses_reach_the_client_as_the_handler_left_them(tmp_path: Path) -> None:
    path = tmp_path / "routes.py"
    path.write_text(textwrap.dedent(ROUTES))
    async with run_plugin(path) as plugin:
        built = await plugin.request("GET", "/built")
        assert (built.status, built.json()) == (201, {"a": 1})
        assert built.headers["X-Kept"] == "yes" and built.headers["Content-Type"] == "application/json"
        assert built.headers["Date"] != "never" and built.headers["Luna-Request-Id"]

        changed = await plugin.request("GET", "/changed")
        assert (changed.status, changed.body) == (202, b"second")
        assert changed.headers["X-Old"] == "1" and changed.headers["X-Added"] == "2"
        assert "session=abc" in changed.headers["Set-Cookie"]

        own = await plugin.request("GET", "/own-id")
        assert own.headers["Luna-Request-Id"] == "chosen"

        teapot = await plugin.request("GET", "/status-only")
        assert (teapot.status, teapot.body) == (418, b"x")

        plain = await plugin.request("GET", "/aiohttp")
        assert (plain.status, plain.text, plain.headers["X-Plain"]) == (203, "plain", "1")

        head = await plugin.request("HEAD", "/built")
        assert (head.status, head.body) == (201, b"")


@pytest.mark.parametrize(
    "headers",
    [
        {"X-Split": "a\r\nSet-Cookie: evil=1"},
        {"X-Bad\nName": "v"},
        {"X-Lone": "a\rb"},
        {"Date": "left out", "X-Split": "a\r\nSet-Cookie: evil=1"},
    ],
)
def test_a_header_that_would_split_the_response_is_refused(headers: dict[str, str]) -> None:
    with pytest.raises(ValueError, match="CR or LF"):
        pluginHTTPResponse(body="x", headers=headers)
