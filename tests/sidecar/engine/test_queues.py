"""Per-plugin event queues and workers."""

from __future__ import annotations

import asyncio
import contextvars
import logging
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from luna_plugins.application import LunaApplication
from luna_plugins.base.plugins_meta.base_plugins import BaseEventPlugin
from luna_sidecar.engine.queues import EventWorker, batch_weight
from luna_sidecar.observability.metrics import RuntimeMetrics
from tests.support.runtime import metric_value, wait_until

LOGGER = logging.getLogger("luna.tests.unit.queues")


class Recorder(BaseEventPlugin):
    """Records each batch; ``behaviour(batch)`` may raise, hang or gate the call."""

    eventName = "monitoring_event"

    def __init__(self, app: LunaApplication) -> None:
        super().__init__(app)
        self.batches: list[Any] = []
        self.loggers: list[Any] = []
        self.behaviour: Callable[[Any], Any] | None = None

    async def handleEvent(self, batch: Any, logger: Any) -> None:
        if self.behaviour is not None:
            result = self.behaviour(batch)
            if asyncio.iscoroutine(result):
                await result
        self.batches.append(batch)
        self.loggers.append(logger)


@pytest.fixture
def plugin(app: LunaApplication) -> Recorder:
    return Recorder(app)


@pytest.fixture
async def make_worker(runtime_metrics: RuntimeMetrics) -> AsyncIterator[Callable[..., EventWorker]]:
    workers: list[EventWorker] = []

    def make(instance: BaseEventPlugin, *, capacity: int = 10, timeout: float = 1.0) -> EventWorker:
        worker = EventWorker(
            "unit_mod", instance, capacity=capacity, timeout=timeout, metrics=runtime_metrics, logger=LOGGER
        )
        workers.append(worker)
        return worker

    yield make
    for worker in workers:
        await worker.stop()


def events(registry: CollectorRegistry, outcome: str) -> float:
    return metric_value(
        registry, "luna_plugin_events_total", {"plugin": "unit_mod", "class": "Recorder", "outcome": outcome}
    )


async def test_batches_are_delivered_in_order_with_the_logger(
    plugin: Recorder, make_worker: Callable[..., EventWorker], registry: CollectorRegistry
) -> None:
    worker = make_worker(plugin)
    assert (worker.class_name, worker.event_name, worker.capacity) == ("Recorder", "monitoring_event", 10)
    worker.start()
    worker.start()  # idempotent
    for index in range(3):
        assert worker.offer((f"batch-{index}",))
    await wait_until(lambda: worker.handled == 3, what="three batches handled")
    assert plugin.batches == ["batch-0", "batch-1", "batch-2"]
    assert plugin.loggers == [LOGGER] * 3
    assert (worker.failed, worker.dropped, worker.last_error) == (0, 0, None)
    assert events(registry, "handled") == 3
    assert (
        metric_value(
            registry,
            "luna_plugin_callback_duration_seconds_count",
            {"plugin": "unit_mod", "class": "Recorder"},
        )
        == 3
    )


async def test_full_queue_drops_and_counts(
    plugin: Recorder, make_worker: Callable[..., EventWorker], registry: CollectorRegistry
) -> None:
    worker = make_worker(plugin, capacity=2)  # not started: nothing is taken off the queue
    assert worker.offer(("a",))
    assert worker.offer(("b",))
    assert worker.depth == 2
    assert worker.offer(("c",)) is False
    assert worker.offer(("d",)) is False
    assert worker.dropped == 2
    assert worker.depth == 2
    assert events(registry, "dropped") == 2
    worker.start()
    await wait_until(lambda: worker.handled == 2, what="the queued batches")
    assert plugin.batches == ["a", "b"]


async def test_timeout_counts_as_failure_and_worker_continues(
    plugin: Recorder, make_worker: Callable[..., EventWorker], registry: CollectorRegistry
) -> None:
    async def maybe_hang(batch: Any) -> None:
        if batch == "hang":
            await asyncio.Event().wait()

    plugin.behaviour = maybe_hang
    worker = make_worker(plugin, timeout=0.05)
    worker.start()
    worker.offer(("hang",))
    worker.offer(("after",))
    await wait_until(lambda: worker.handled == 1, what="the batch after the hung one")
    assert plugin.batches == ["after"]
    assert worker.failed == 1
    assert worker.last_error == "callback timed out after 0.05 s"
    assert events(registry, "timeout") == 1
    assert events(registry, "failed") == 0


async def test_exception_is_recorded_as_last_error(
    plugin: Recorder, make_worker: Callable[..., EventWorker], registry: CollectorRegistry
) -> None:
    def explode(batch: Any) -> None:
        if batch == "bad":
            raise ValueError("unexpected point")

    plugin.behaviour = explode
    worker = make_worker(plugin)
    worker.start()
    for batch in ("bad", "good", "bad"):
        worker.offer((batch,))
    await wait_until(lambda: worker.handled + worker.failed == 3, what="three batches")
    assert (worker.handled, worker.failed) == (1, 2)
    assert worker.last_error == "ValueError: unexpected point"
    assert events(registry, "failed") == 2
    assert events(registry, "handled") == 1


async def test_drain_waits_for_queued_batches(
    plugin: Recorder, make_worker: Callable[..., EventWorker]
) -> None:
    gate = asyncio.Event()

    async def wait_for_gate(batch: Any) -> None:
        await gate.wait()

    plugin.behaviour = wait_for_gate
    worker = make_worker(plugin)
    worker.start()
    for index in range(3):
        worker.offer((index,))
    drain = asyncio.create_task(worker.drain(time.monotonic() + 5.0))
    await wait_until(lambda: worker.depth == 2, what="the first batch to be taken")
    assert not drain.done()
    gate.set()
    assert await drain == 0
    assert plugin.batches == [0, 1, 2]
    assert worker.depth == 0


async def test_drain_gives_up_at_the_deadline(
    plugin: Recorder, make_worker: Callable[..., EventWorker]
) -> None:
    plugin.behaviour = lambda batch: asyncio.Event().wait()
    worker = make_worker(plugin, timeout=5.0)
    worker.start()
    for index in range(3):
        worker.offer((index,))
    await wait_until(lambda: worker.depth == 2, what="the first batch to be taken")
    started = time.monotonic()
    # the batch the plugin is stuck on counts as undelivered too
    assert await worker.drain(time.monotonic() + 0.05) == 3
    assert time.monotonic() - started < 1.0
    assert await worker.stop() == 3


async def test_drain_of_an_unstarted_worker_returns_at_once(
    plugin: Recorder, make_worker: Callable[..., EventWorker]
) -> None:
    worker = make_worker(plugin)
    worker.offer(("x",))
    assert await worker.drain(time.monotonic() + 10.0) == 1


async def test_stop_cancels_the_worker(plugin: Recorder, make_worker: Callable[..., EventWorker]) -> None:
    worker = make_worker(plugin)
    worker.start()
    worker.offer(("one",))
    await wait_until(lambda: worker.handled == 1, what="one batch")
    assert await worker.stop() == 0
    assert await worker.stop() == 0  # twice is harmless
    worker.offer(("late",))
    assert worker.depth == 1
    assert plugin.batches == ["one"]


async def test_callback_raising_cancelled_error_does_not_stop_the_worker(
    plugin: Recorder, make_worker: Callable[..., EventWorker]
) -> None:
    def cancel(batch: Any) -> None:
        if batch == "cancel":
            raise asyncio.CancelledError()

    plugin.behaviour = cancel
    worker = make_worker(plugin)
    worker.start()
    worker.offer(("cancel",))
    worker.offer(("after",))
    assert await worker.drain(time.monotonic() + 0.5) == 0
    assert plugin.batches == ["after"]
    assert worker.failed == 1


async def test_the_bound_counts_points_not_batches(
    plugin: Recorder, make_worker: Callable[..., EventWorker], registry: CollectorRegistry
) -> None:
    worker = make_worker(plugin, capacity=5)  # not started: everything stays held
    assert worker.offer(([1, 2, 3],))
    assert worker.offer(([4, 5],))
    assert worker.items == 5
    assert worker.offer(([6],)) is False, "a sixth point does not fit"
    assert (worker.dropped, worker.dropped_items) == (1, 1)
    assert (
        metric_value(registry, "luna_plugin_dropped_items_total", {"plugin": "unit_mod", "class": "Recorder"})
        == 1
    )
    worker.start()
    await wait_until(lambda: worker.items == 0, what="the held points delivered")
    assert plugin.batches[0] == [1, 2, 3, 4, 5], "queued batches are merged into one call"


async def test_an_empty_queue_takes_a_batch_larger_than_its_bound(
    plugin: Recorder, make_worker: Callable[..., EventWorker]
) -> None:
    worker = make_worker(plugin, capacity=2)
    assert worker.offer((list(range(10)),))
    assert worker.items == 10
    assert worker.offer(([1],)) is False


async def test_a_batch_weighs_its_request_body_when_that_is_more(
    plugin: Recorder, make_worker: Callable[..., EventWorker]
) -> None:
    worker = make_worker(plugin, capacity=100)
    assert batch_weight(3, body_bytes=64 * 1024) == 64
    assert worker.offer(([{"big": "event"}],), batch_weight(1, body_bytes=80 * 1024))
    assert worker.items == 80
    assert worker.offer(([{"big": "event"}],), batch_weight(1, body_bytes=80 * 1024)) is False


async def test_stop_is_bounded_when_the_callback_ignores_cancellation(
    plugin: Recorder, make_worker: Callable[..., EventWorker]
) -> None:
    release, started = asyncio.Event(), asyncio.Event()

    async def stubborn(batch: Any) -> None:
        started.set()
        while not release.is_set():
            try:
                await release.wait()
            except asyncio.CancelledError:
                pass  # swallowed

    plugin.behaviour = stubborn
    worker = make_worker(plugin, timeout=0.05)
    worker.start()
    worker.offer(([1],))
    try:
        await asyncio.wait_for(started.wait(), 5)
        worker.offer(([2],))
        assert await worker.drain(time.monotonic() + 30) == 2, "no waiting on a callback past its timeout"
        assert await worker.stop(grace=0.05) == 2
        assert worker.stuck_task is not None and not worker.stuck_task.done()
        assert worker.depth == 0 and worker.items == 1, "the queue is released; the callback keeps its batch"
    finally:
        release.set()  # or the test's loop would wait for it forever at its end
    await wait_until(lambda: worker.stuck_task is not None and worker.stuck_task.done(), what="it ends")
    assert plugin.batches == [[1]], "a stopped worker takes nothing more"


async def test_system_exit_in_a_callback_is_that_batch_failing(
    plugin: Recorder, make_worker: Callable[..., EventWorker]
) -> None:
    def exits(batch: Any) -> None:
        if batch == "exit":
            raise SystemExit(2)

    plugin.behaviour = exits
    worker = make_worker(plugin)
    worker.start()
    worker.offer(("exit",))
    worker.offer(("after",))
    await wait_until(lambda: worker.handled == 1, what="the batch after")
    assert worker.failed == 1 and worker.last_error == "SystemExit: 2"


# -- callbacks started at once ---------------------------------------------------------------------


async def offer_from_a_callback(worker: EventWorker, payload: tuple[Any, ...]) -> dict[str, Any]:
    """Offer ``payload`` from a plain loop callback (as the intake's protocol and the runtime's
    timers do: no task running) once the worker waits; returns its state right after offer."""
    await wait_until(lambda: worker._waiting, what="the worker to wait")
    loop = asyncio.get_running_loop()
    seen: asyncio.Future[dict[str, Any]] = loop.create_future()

    def offer() -> None:
        accepted = worker.offer(payload)
        seen.set_result({"accepted": accepted, "handled": worker.handled, "depth": worker.depth})

    loop.call_soon(offer)
    return await seen


async def test_an_idle_worker_runs_a_callback_that_does_not_await_at_once(
    plugin: Recorder, make_worker: Callable[..., EventWorker], registry: CollectorRegistry
) -> None:
    worker = make_worker(plugin)
    worker.start()
    state = await offer_from_a_callback(worker, ([1, 2],))
    assert state == {"accepted": True, "handled": 1, "depth": 0}, "handled inside offer"
    assert plugin.batches == [[1, 2]]
    assert (worker.items, worker.depth) == (0, 0)
    assert events(registry, "handled") == 1


async def test_offered_from_a_task_the_batch_is_queued(
    plugin: Recorder, make_worker: Callable[..., EventWorker]
) -> None:
    worker = make_worker(plugin)
    worker.start()
    await wait_until(lambda: worker._waiting, what="the worker to wait")
    worker.offer(([1],))  # this test is a task: the worker's task must not be entered from it
    assert worker.handled == 0 and worker.depth == 1
    await wait_until(lambda: worker.handled == 1, what="the worker")


async def test_a_callback_that_awaits_is_finished_by_the_worker_in_order(
    plugin: Recorder, make_worker: Callable[..., EventWorker]
) -> None:
    gate = asyncio.Event()
    begun: list[Any] = []

    async def wait_for_gate(batch: Any) -> None:
        begun.append(batch)
        await gate.wait()

    plugin.behaviour = wait_for_gate
    worker = make_worker(plugin)
    worker.start()
    await offer_from_a_callback(worker, ([1],))
    assert begun == [[1]], "its first step ran at once"
    worker.offer(([2],))
    worker.offer(([3],))
    assert begun == [[1]], "the others wait their turn"
    assert worker.items == 3
    gate.set()
    await wait_until(lambda: worker.handled == 3, what="all three")
    assert plugin.batches == [[1], [2, 3]], "what queued behind it is merged"
    assert worker.items == 0


async def test_the_timeout_of_a_started_callback_counts_from_its_start(
    plugin: Recorder, make_worker: Callable[..., EventWorker], registry: CollectorRegistry
) -> None:
    plugin.behaviour = lambda batch: asyncio.Event().wait()
    worker = make_worker(plugin, timeout=0.05)
    worker.start()
    await offer_from_a_callback(worker, ("hangs",))
    await wait_until(lambda: worker.failed == 1, what="the timeout")
    assert worker.last_error == "callback timed out after 0.05 s"
    assert events(registry, "timeout") == 1 and worker.items == 0


class Tracer(BaseEventPlugin):
    """Records what its callback sees before and after its first await."""

    eventName = "monitoring_event"
    variable: contextvars.ContextVar[str] = contextvars.ContextVar("unit_eager", default="unset")

    def __init__(self, app: LunaApplication) -> None:
        super().__init__(app)
        self.seen: list[Any] = []

    async def handleEvent(self, batch: Any, logger: Any) -> None:
        self.variable.set(str(batch))
        before = asyncio.current_task()
        await asyncio.sleep(0)
        self.seen.append((self.variable.get(), before, asyncio.current_task()))


async def test_a_started_callback_is_the_workers_task_in_the_workers_context(
    app: LunaApplication, make_worker: Callable[..., EventWorker]
) -> None:
    tracer = Tracer(app)
    worker = make_worker(tracer)
    worker.start()
    await offer_from_a_callback(worker, ("traced",))
    await wait_until(lambda: worker.handled == 1, what="the callback")
    [(value, before, after)] = tracer.seen
    assert value == "traced", "a context variable set before the first await is kept after it"
    assert before is after is worker._task
    assert Tracer.variable.get() == "unset", "the caller's context is untouched"


async def test_a_timeout_the_callback_opens_at_once_is_its_own(
    app: LunaApplication, make_worker: Callable[..., EventWorker]
) -> None:
    outcomes: list[str] = []

    class Impatient(BaseEventPlugin):
        eventName = "monitoring_event"

        async def handleEvent(self, batch: Any, logger: Any) -> None:
            try:
                async with asyncio.timeout(batch[0]):
                    await asyncio.sleep(10)
            except TimeoutError:
                outcomes.append("timed out")

    worker = make_worker(Impatient(app), timeout=5.0)
    worker.start()
    # 0: expires before the worker took the rest over; 0.01: while the worker awaits it
    for count, seconds in enumerate((0, 0.01), start=1):
        await offer_from_a_callback(worker, ([seconds],))
        await wait_until(lambda count=count: len(outcomes) == count, what="the plugin's timeout")
    assert outcomes == ["timed out", "timed out"]
    assert (worker.handled, worker.failed) == (2, 0), "the worker is unharmed"


async def test_a_callback_cancelling_its_task_fails_only_its_batch(
    app: LunaApplication, make_worker: Callable[..., EventWorker]
) -> None:
    class Rude(BaseEventPlugin):
        eventName = "monitoring_event"

        async def handleEvent(self, batch: Any, logger: Any) -> None:
            if batch == "cancel":
                asyncio.current_task().cancel()  # type: ignore[union-attr]
                await asyncio.sleep(0)

    worker = make_worker(Rude(app))
    worker.start()
    await offer_from_a_callback(worker, ("cancel",))
    await wait_until(lambda: worker.failed == 1, what="the batch to fail")
    assert "CancelledError" in (worker.last_error or "")
    state = await offer_from_a_callback(worker, ("fine",))
    assert state["handled"] == 1, "the worker goes on"


async def test_stopping_closes_a_started_callback_the_worker_did_not_take_yet(
    app: LunaApplication, make_worker: Callable[..., EventWorker]
) -> None:
    seen: list[str] = []

    class Closing(BaseEventPlugin):
        eventName = "monitoring_event"

        async def handleEvent(self, batch: Any, logger: Any) -> None:
            try:
                await asyncio.Event().wait()
            finally:
                seen.append("finally")

    worker = make_worker(Closing(app))
    worker.start()
    await wait_until(lambda: worker._waiting, what="the worker to wait")
    loop = asyncio.get_running_loop()
    stopped: asyncio.Future[int] = loop.create_future()

    def offer_then_stop() -> None:
        worker.offer(([1],))
        assert worker.depth == 1, "the rest waits for the worker"
        loop.create_task(worker.stop()).add_done_callback(lambda done: stopped.set_result(done.result()))

    loop.call_soon(offer_then_stop)
    assert await stopped == 1
    assert seen == ["finally"] and worker.items == 0
