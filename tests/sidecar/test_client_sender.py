"""The service-side sender (luna_plugins.client) against a real sidecar process: under load,
across a stop and restart of the sidecar, at close, and at the intake's limits."""

from __future__ import annotations

import asyncio
import json
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

from aiohttp import web

from luna_plugins.client import SenderSettings, SidecarSender
from tests.support.sidecar_harness import HOST, Sidecar, free_port, http, start_sidecar, wait_for

#: records, one JSON line per callback, the ``n`` field of every ``load`` point and every event
TALLY = """
import json
from luna_plugins.base.plugins_meta.base_plugins import BaseEventPlugin
from luna_plugins.handler_event.base_plugin import BaseEventSendingPlugin

class PointTally(BaseEventPlugin):
    eventName = "monitoring_event"

    async def handleEvent(self, points, logger):
        seen = [p.fields.get("n") for p in points if p.series == "load"]
        if seen:
            with open(self.settings["out"], "a") as out:
                out.write(json.dumps({"points": seen}) + "\\n")

class EventTally(BaseEventSendingPlugin):
    async def sendEvents(self, events, handlerId, *rest):
        with open(self.settings["out"], "a") as out:
            out.write(json.dumps({"events": [e.asDict()["n"] for e in events], "handler": handlerId}) + "\\n")
"""


def received(out: Path, kind: str = "points") -> list[Any]:
    if not out.exists():
        return []
    text = out.read_text()
    complete = text[: text.rfind("\n") + 1]  # the plugin may be writing the last line right now
    return [n for line in complete.splitlines() for n in json.loads(line).get(kind, [])]


def tally_sidecar(factory: Callable[..., Sidecar], out: Path, *args: str) -> Sidecar:
    return factory(
        plugins={"tally": TALLY}, active=["tally"], settings={"tally": {"out": str(out)}}, args=args
    )


async def until(condition: Callable[[], Any], what: str, timeout: float = 60) -> Any:
    """``wait_for`` off the event loop, so the sender keeps sending meanwhile."""
    return await asyncio.to_thread(wait_for, condition, timeout=timeout, what=what)


async def add_load(sender: SidecarSender, count: int, *, start: int = 0, burst: int = 200) -> None:
    """Add ``count`` points numbered from ``start``, yielding to the loop between bursts."""
    for n in range(start, start + count):
        sender.add_point("load", {"service": "handlers", "route": "GET:/load"}, {"n": n})
        if n % burst == burst - 1:
            await asyncio.sleep(0)


async def test_under_load_every_point_and_event_is_delivered_once(sidecar_factory, tmp_path: Path) -> None:
    out = tmp_path / "tally.jsonl"
    sidecar = tally_sidecar(sidecar_factory, out)
    total = 30_000
    async with SidecarSender(sidecar.admin, settings=SenderSettings(max_points=total)) as sender:
        for request in range(300):
            await add_load(sender, 100, start=request * 100, burst=100)
            sender.add_events([{"n": request}], handler_id="h-1", account_id="a-1", request_id=f"r-{request}")
        assert await sender.flush(timeout=60)
        stats = sender.stats()
    assert (stats.points_sent, stats.points_dropped, stats.points_buffered) == (total, 0, 0)
    assert (stats.events_sent, stats.events_dropped) == (300, 0)
    await until(lambda: len(received(out)) >= total and len(received(out, "events")) >= 300, "the plugin")
    assert sorted(received(out)) == list(range(total))
    assert sorted(received(out, "events")) == list(range(300))
    assert sidecar.metric("luna_intake_items_total", event_name="monitoring_event") == total


def restart(first: Sidecar, factory_dir: Path, out: Path) -> Sidecar:
    """A new sidecar process on the ports ``first`` had (as a restarted container would be)."""
    ports = {
        name: url.rsplit(":", 1)[1]
        for name, url in (
            ("port", first.public),
            ("admin-port", first.admin),
            ("metrics-port", first.metrics_url),
        )
    }
    second = start_sidecar(
        factory_dir,
        plugins={"tally": TALLY},
        active=["tally"],
        settings={"tally": {"out": str(out)}},
        args=[arg for name, port in ports.items() for arg in (f"--{name}", port)],
        wait_ready=False,
    )
    second.public, second.admin, second.metrics_url = first.public, first.admin, first.metrics_url

    def ready() -> bool:
        if second.process.poll() is not None:
            raise AssertionError(f"restarted sidecar exited:\n{second.log()[-3000:]}")
        try:
            return http("GET", second.metrics_url + "/readyz", timeout=1).status == 200
        except OSError:
            return False

    wait_for(ready, timeout=60, what="the restarted sidecar")
    return second


async def test_points_survive_a_sidecar_restart_mid_stream(sidecar_factory, tmp_path: Path) -> None:
    out = tmp_path / "tally.jsonl"
    first = tally_sidecar(sidecar_factory, out)
    total = 6_000  # below the default bound (20,000): nothing may be lost however long the restart takes
    second: Sidecar | None = None
    async with SidecarSender(first.admin, settings=SenderSettings(retry_max=0.5)) as sender:

        async def producer() -> None:
            for chunk in range(60):
                await add_load(sender, 100, start=chunk * 100)
                await asyncio.sleep(0.02)

        producing = asyncio.create_task(producer())
        await until(lambda: len(received(out)) >= 500, "the first points to arrive")
        first.process.send_signal(signal.SIGTERM)  # 503 while it drains, then connection refused
        assert await asyncio.to_thread(first.process.wait, 30) == 0
        try:
            second = await asyncio.to_thread(restart, first, tmp_path / "second", out)
            await producing
            assert await sender.flush(timeout=60)
            stats = sender.stats()
            # 202 means queued: let the plugin write them all before the sidecar goes
            await until(lambda: len(received(out)) >= total, "the plugin to take every point")
        finally:
            if second is not None:
                second.process.kill()
    assert stats.retried > 0, "the sidecar was away: some request must have been retried"
    assert (stats.points_sent, stats.points_dropped, stats.points_buffered) == (total, 0, 0)
    assert sorted(received(out)) == list(range(total)), "each point arrived exactly once"


async def test_an_outage_longer_than_the_bound_drops_the_oldest_and_counts_them(
    sidecar_factory, tmp_path: Path
) -> None:
    out = tmp_path / "tally.jsonl"
    first = tally_sidecar(sidecar_factory, out)
    settings = SenderSettings(max_points=5_000, retry_max=0.3)
    second: Sidecar | None = None
    async with SidecarSender(first.admin, settings=settings) as sender:
        await add_load(sender, 1_000)
        assert await sender.flush(timeout=30)
        assert first.stop() == 0
        await add_load(sender, 8_000, start=1_000)  # 3,000 more than the sender may hold
        await asyncio.sleep(0.5)  # a few retries against the stopped sidecar
        during = sender.stats()
        assert during.points_buffered == 5_000 and during.points_dropped == 3_000
        try:
            second = await asyncio.to_thread(restart, first, tmp_path / "second", out)
            assert await sender.flush(timeout=60)
            await until(lambda: len(received(out)) >= 6_000, "the plugin to take every point")
        finally:
            if second is not None:
                second.process.kill()
        stats = sender.stats()
    assert (stats.points_sent, stats.points_dropped, stats.points_buffered) == (6_000, 3_000, 0)
    # the oldest *waiting* points were dropped: the newest arrived, each once; a batch that was on
    # the wire when the bound was reached (at most batch_points) may have been kept instead of
    # newer ones
    arrived = sorted(received(out))
    assert len(arrived) == len(set(arrived)) == 6_000
    assert arrived[:1_000] == list(range(1_000))
    kept = set(arrived[1_000:])
    assert set(range(9_000 - 5_000 + settings.batch_points, 9_000)) <= kept <= set(range(1_000, 9_000))


async def test_close_sends_what_is_buffered(sidecar_factory, tmp_path: Path) -> None:
    out = tmp_path / "tally.jsonl"
    sidecar = tally_sidecar(sidecar_factory, out)
    sender = SidecarSender(
        sidecar.admin, settings=SenderSettings(batch_delay=60)
    )  # batches never due by time
    await sender.start()
    await add_load(sender, 250)
    sender.add_events([{"n": 1}, {"n": 2}], handler_id="h", account_id="a")
    stats = await sender.close(timeout=30)
    assert (stats.points_sent, stats.events_sent, stats.points_buffered, stats.points_dropped) == (
        250,
        2,
        0,
        0,
    )
    sender.add_point("load", None, {"n": -1})  # after close: dropped and counted, never sent
    sender.add_events([{"n": 3}], handler_id="h", account_id="a")
    after = sender.stats()
    assert (after.points_dropped, after.events_dropped) == (1, 1)
    await until(lambda: len(received(out)) == 250, "the points sent at close")


async def test_close_gives_up_at_its_deadline_and_counts_what_was_left() -> None:
    port = free_port()  # nothing listens here
    sender = SidecarSender(
        f"http://{HOST}:{port}", settings=SenderSettings(retry_initial=0.05, retry_max=0.1)
    )
    await sender.start()
    for n in range(300):
        sender.add_point("load", None, {"n": n})
    sender.add_events([{"n": 1}], handler_id="h", account_id="a")
    stats = await sender.close(timeout=0.5)
    assert stats.retried > 0
    assert (stats.points_sent, stats.points_dropped, stats.points_buffered) == (0, 300, 0)
    assert (stats.events_sent, stats.events_dropped, stats.events_buffered) == (0, 1, 0)


async def test_batches_over_the_intake_item_limit_are_split_not_lost(sidecar_factory, tmp_path: Path) -> None:
    out = tmp_path / "tally.jsonl"
    sidecar = tally_sidecar(sidecar_factory, out, "--max-batch-items", "100")
    async with SidecarSender(sidecar.admin) as sender:  # assumes the default limit of 10,000
        await add_load(sender, 2_500, burst=5_000)
        sender.add_events([{"n": n} for n in range(250)], handler_id="h", account_id="a")
        assert await sender.flush(timeout=60)
        stats = sender.stats()
    assert (stats.points_sent, stats.points_dropped, stats.events_sent, stats.events_dropped) == (
        2_500,
        0,
        250,
        0,
    )
    await until(lambda: len(received(out)) == 2_500 and len(received(out, "events")) == 250, "every item")
    assert sidecar.metric("luna_intake_requests_total", event_name="monitoring_event", status_code="413") > 0


async def test_what_the_sidecar_refuses_is_dropped_alone_and_counted(sidecar_factory, tmp_path: Path) -> None:
    out = tmp_path / "tally.jsonl"
    sidecar = tally_sidecar(sidecar_factory, out, "--max-body-bytes", "4096")
    async with SidecarSender(sidecar.admin) as sender:
        await add_load(sender, 20)
        sender.add_point("load", None, {"n": 20, "blob": "x" * 10_000})  # 413: larger than the body limit
        sender.add_point("load", {"route": "\ud800"}, {"n": 21})  # a lone surrogate: not valid JSON there
        await add_load(sender, 20, start=22)
        assert await sender.flush(timeout=30)
        stats = sender.stats()
    assert (stats.points_sent, stats.points_refused, stats.points_dropped) == (40, 2, 2)
    await until(lambda: len(received(out)) == 40, "the points beside the refused ones")
    assert sorted(received(out)) == [*range(20), *range(22, 42)]


def test_a_sender_is_usable_in_an_aiohttp_app(sidecar_factory, tmp_path: Path) -> None:
    out = tmp_path / "tally.jsonl"
    sidecar = tally_sidecar(sidecar_factory, out)
    sender = SidecarSender(sidecar.admin)

    async def scenario() -> None:
        app = web.Application()
        app.cleanup_ctx.append(sender.cleanup_ctx)
        runner = web.AppRunner(app)
        await runner.setup()  # starts the sender
        sender.add_point("load", None, {"n": 7})
        await runner.cleanup()  # closes it, flushing

    asyncio.run(scenario())
    assert sender.stats().points_sent == 1
    wait_for(lambda: received(out) == [7], what="the point")
