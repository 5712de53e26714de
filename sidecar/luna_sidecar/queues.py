"""Per-plugin event queues: each event plugin has its own bounded queue and worker, so a slow or
failing plugin delays nobody else, and intake never waits on a plugin."""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
from typing import Any

from luna_plugins.base.plugins_meta.base_plugins import BaseEventPlugin
from luna_sidecar.loader import describe_exception
from luna_sidecar.metrics import RuntimeMetrics
from luna_sidecar.timeouts import PluginCancelledError

#: most points one merged monitoring_event callback receives
MERGE_LIMIT = 10_000


class EventWorker:
    """Delivers queued batches to one event plugin instance, one at a time, each under a timeout.

    ``offer`` never blocks: a full queue drops the batch and counts it. Counters (``handled``,
    ``failed``, ``dropped``) and the last error are kept for ``GET /plugins``.
    """

    def __init__(
        self,
        plugin: str,
        instance: BaseEventPlugin,
        *,
        capacity: int,
        timeout: float,
        metrics: RuntimeMetrics,
        logger: logging.Logger,
    ) -> None:
        self.plugin = plugin
        self.instance = instance
        self.class_name = type(instance).__name__
        self.event_name: str = instance.eventName
        self.capacity = capacity
        self.timeout = timeout
        self.logger = logger
        self.handled = 0
        self.failed = 0
        self.dropped = 0
        self.last_error: str | None = None
        self._queue: asyncio.Queue[tuple[Any, ...]] = asyncio.Queue(maxsize=capacity)
        self._task: asyncio.Task[None] | None = None
        self._in_flight = 0
        self._metrics = metrics
        labels = (plugin, self.class_name)
        self._count_handled = metrics.plugin_events.labels(*labels, "handled")
        self._count_failed = metrics.plugin_events.labels(*labels, "failed")
        self._count_timeout = metrics.plugin_events.labels(*labels, "timeout")
        self._count_dropped = metrics.plugin_events.labels(*labels, "dropped")
        self._latency = metrics.callback_seconds.labels(*labels)

    @property
    def depth(self) -> int:
        """Batches waiting (not counting the one being handled)."""
        return self._queue.qsize()

    def start(self) -> None:
        """Start delivering; idempotent."""
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name=f"luna-events-{self.plugin}.{self.class_name}")

    def offer(self, payload: tuple[Any, ...]) -> bool:
        """Queue one batch; returns False (and counts a drop) when the queue is full."""
        try:
            self._queue.put_nowait(payload)
        except asyncio.QueueFull:
            self.dropped += 1
            self._count_dropped.inc()
            return False
        return True

    async def drain(self, deadline: float) -> int:
        """Wait until every queued batch is handled or ``deadline`` (monotonic) passes; returns
        the batches still undelivered."""
        if self._task is not None and not self._task.done():
            try:
                await asyncio.wait_for(self._queue.join(), timeout=max(0.0, deadline - time.monotonic()))
            except TimeoutError:
                pass
        return self._queue.qsize() + self._in_flight

    async def stop(self) -> int:
        """Stop the worker at once; returns the batches still queued or in a callback that is
        cut short (they are lost, and counted as dropped)."""
        left = self._queue.qsize() + self._in_flight
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None
        return left

    async def _run(self) -> None:
        queue = self._queue
        merge = self.event_name == "monitoring_event"
        while True:
            payload = await queue.get()
            batches = 1
            if merge and queue.qsize() and isinstance(payload[0], list):
                # A busy plugin gets what queued up meanwhile in one call: one callback per
                # batch would cost more loop turns than the plugin's own work.
                points = list(payload[0])
                while queue.qsize() and len(points) < MERGE_LIMIT:
                    points.extend(queue.get_nowait()[0])
                    batches += 1
                payload = (points,)
            started = time.perf_counter()
            self._in_flight = batches
            try:
                await self._call(payload)
            except TimeoutError:
                self.failed += batches
                self.last_error = f"callback timed out after {self.timeout:g} s"
                self._count_timeout.inc(batches)
                self.logger.warning("%s.handleEvent timed out after %g s", self.class_name, self.timeout)
            except Exception as exc:
                self.failed += batches
                self.last_error = describe_exception(exc)
                self._count_failed.inc(batches)
                self.logger.error("%s.handleEvent failed: %s", self.class_name, self.last_error, exc_info=exc)
            else:
                self.handled += batches
                self._count_handled.inc(batches)
            finally:
                self._in_flight = 0
                self._latency.observe(time.perf_counter() - started)
                for _ in range(batches):
                    queue.task_done()

    async def _call(self, payload: tuple[Any, ...]) -> None:
        """One callback under the timeout, awaited in this worker's own task: a plugin that
        ignores cancellation can stall only its own queue (its drops are counted)."""
        try:
            async with asyncio.timeout(self.timeout):
                result = self.instance.handleEvent(*payload, self.logger)
                if inspect.isawaitable(result):
                    await result
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                raise  # the worker itself is being stopped
            raise PluginCancelledError("the plugin's callback raised CancelledError") from None
