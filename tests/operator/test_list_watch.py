"""The operator's LIST + WATCH loop against a real HTTP server playing the API server: a quiet
watch keeps the feed healthy, an API server that goes away makes it unhealthy, one that comes
back makes it healthy again (the operator's liveness probe is built on this)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp
from aiohttp import web

from luna_operator.list_watch import ListWatch
from tests.support.runtime import wait_until


class FakeAPI:
    """LIST answers one empty list; WATCH holds the stream open without a byte until ``close``."""

    def __init__(self) -> None:
        self.up = True
        self.watches_opened = 0
        self.closing = asyncio.Event()
        self.app = web.Application()
        self.app.router.add_get("/objects", self.handle)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        if not self.up:
            return web.Response(status=503, text="going away")
        if request.query.get("watch") != "true":
            return web.json_response({"metadata": {"resourceVersion": "7"}, "items": []})
        response = web.StreamResponse()
        await response.prepare(request)
        self.watches_opened += 1
        await self.closing.wait()
        return response


class Follower(ListWatch):
    def __init__(self, session: aiohttp.ClientSession, url: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.session = session
        self.url = url

    def request(self, namespace: str | None, **params: Any) -> Any:
        query = {
            key: json.dumps(value) if isinstance(value, bool) else str(value) for key, value in params.items()
        }
        query.pop("_request_timeout", None)
        return self.session.get(self.url, params=query)

    def listed(self, namespace: str | None, items: list[dict[str, Any]]) -> None:
        pass

    def changed(self, kind: str, item: dict[str, Any]) -> None:
        pass


async def test_a_quiet_watch_is_healthy_and_an_api_that_goes_away_is_not() -> None:
    api = FakeAPI()
    runner = web.AppRunner(api.app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    async with aiohttp.ClientSession() as session:
        feed = Follower(session, f"http://127.0.0.1:{port}/objects", client_timeout=30.0)
        task = asyncio.create_task(feed.run())
        try:
            await wait_until(lambda: feed.watching == 1, timeout=10.0, what="the watch to open")
            contact = feed.last_contact
            # no byte on the stream for longer than the liveness bound: still healthy
            await wait_until(
                lambda: asyncio.get_running_loop().time() > contact + 0.3, timeout=10.0, what="time to pass"
            )
            assert feed.healthy(within=0.1)

            # the API server goes away: the stream ends, every request fails
            api.up = False
            api.closing.set()
            await wait_until(lambda: feed.watching == 0, timeout=10.0, what="the watch to end")
            await wait_until(
                lambda: not feed.healthy(within=0.1), timeout=10.0, what="the feed to turn unhealthy"
            )

            # and comes back: listed and watching again
            api.closing = asyncio.Event()
            api.up = True
            opened = api.watches_opened
            await wait_until(lambda: api.watches_opened > opened, timeout=20.0, what="a new watch")
            await wait_until(
                lambda: feed.healthy(within=0.1), timeout=10.0, what="the feed to be healthy again"
            )
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            api.closing.set()
            await runner.cleanup()


async def test_a_feed_that_never_listed_is_unhealthy_once_the_bound_passes() -> None:
    async with aiohttp.ClientSession() as session:
        # nothing listens on port 9 of loopback: every request is refused
        feed = Follower(session, "http://127.0.0.1:9/objects")
        task = asyncio.create_task(feed.run())
        try:
            start = feed.last_contact
            await wait_until(
                lambda: asyncio.get_running_loop().time() > start + 0.2, timeout=10.0, what="time to pass"
            )
            assert not feed.synced.is_set()
            assert not feed.healthy(within=0.1)
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
