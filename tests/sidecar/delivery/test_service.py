"""The delivery service: queues opened off the event loop, once per plugin class."""

from __future__ import annotations

import asyncio
import logging
import threading
from pathlib import Path

from prometheus_client import CollectorRegistry

from luna_contract.delivery import DeliveryPolicy
from luna_plugins.application import LunaApplication
from luna_plugins.handler_event.base_plugin import BaseEventSendingPlugin
from luna_sidecar.delivery.segments import SegmentLog
from luna_sidecar.delivery.service import DeliveryService, DeliverySettings
from luna_sidecar.observability import RuntimeMetrics

DURABLE = DeliveryPolicy(mode="at-least-once")


class Sink(BaseEventSendingPlugin):
    async def sendEvents(self, *args: object, **kwargs: object) -> None:
        return None


def backlog(queue_dir: Path, records: int) -> None:
    """``records`` durable batches in the queue of plugin ``sink``, class ``Sink``."""
    segment_log = SegmentLog(queue_dir / "sink" / "Sink", segment_bytes=64 * 1024, logger=logging.getLogger())
    segment_log.open()
    for index in range(records):
        segment_log.append(b'{"events": [], "n": %d}' % index)
    job = segment_log.prepare_sync(closing=True)
    job.run()
    assert job.error is None
    segment_log.finish_sync(job)
    segment_log.close()


def service(queue_dir: Path) -> DeliveryService:
    registry = CollectorRegistry()
    return DeliveryService(
        DeliverySettings(queue_dir=queue_dir, default=DURABLE),
        metrics=RuntimeMetrics(registry),
        registry=registry,
    )


def test_a_queue_is_recovered_in_a_thread_while_the_loop_keeps_running(
    tmp_path: Path, app: LunaApplication
) -> None:
    backlog(tmp_path, 2000)
    delivery = service(tmp_path)
    opened_on: list[str] = []
    real_open = SegmentLog.open

    def spying_open(self: SegmentLog) -> None:
        opened_on.append(threading.current_thread().name)
        real_open(self)

    async def scenario() -> int:
        SegmentLog.open = spying_open  # type: ignore[method-assign]
        turns = 0
        finished = asyncio.Event()

        async def ticker() -> None:
            nonlocal turns
            while not finished.is_set():
                turns += 1
                await asyncio.sleep(0)

        task = asyncio.create_task(ticker())
        try:
            await delivery.prepare("sink", [Sink(app)])
        finally:
            finished.set()
            SegmentLog.open = real_open  # type: ignore[method-assign]
        await task
        return turns

    turns = asyncio.run(scenario())
    assert opened_on and opened_on[0] != threading.main_thread().name
    assert turns >= 1  # the loop ran other tasks while the backlog was scanned
    worker = delivery.worker("sink", Sink(app), timeout=1.0, logger=logging.getLogger())
    assert worker.queue.log.pending == 2000  # the worker got the queue prepare opened
    asyncio.run(delivery.close())


def test_two_loads_of_one_class_open_its_queue_once(tmp_path: Path, app: LunaApplication) -> None:
    backlog(tmp_path, 10)
    delivery = service(tmp_path)
    calls: list[str] = []
    real_open = delivery._open

    def counting_open(plugin: str, class_name: str, policy: DeliveryPolicy) -> object:
        calls.append(class_name)
        return real_open(plugin, class_name, policy)

    delivery._open = counting_open  # type: ignore[assignment,method-assign]

    async def scenario() -> None:
        await asyncio.gather(delivery.prepare("sink", [Sink(app)]), delivery.prepare("sink", [Sink(app)]))
        await delivery.prepare("sink", [Sink(app)])  # already open: nothing to do

    asyncio.run(scenario())
    assert calls == ["Sink"]
    asyncio.run(delivery.close())


def test_a_queue_that_cannot_be_opened_raises_and_a_later_load_tries_again(
    tmp_path: Path, app: LunaApplication
) -> None:
    blocker = tmp_path / "sink"
    blocker.write_text("a file where the plugin's directory should be")
    delivery = service(tmp_path)

    async def attempt() -> str:
        try:
            await delivery.prepare("sink", [Sink(app)])
        except OSError as exc:
            return type(exc).__name__
        return "opened"

    assert asyncio.run(attempt()) in {"FileExistsError", "NotADirectoryError"}
    blocker.unlink()
    assert asyncio.run(attempt()) == "opened"
    asyncio.run(delivery.close())
