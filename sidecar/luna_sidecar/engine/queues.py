"""Per-plugin event queues: each event plugin has its own bounded queue and worker, so a slow or
failing plugin delays nobody else, and intake never waits on a plugin.

A batch offered to an idle worker (nothing queued, no callback running) starts at once: the
callback runs up to its first ``await`` right where the batch is offered (:mod:`eager`), so a
callback that does not wait for anything costs no task, timer or loop turn. What is left of a
callback that awaits goes to the worker's task like any queued batch, and its timeout counts
from the moment it started.

A queue is bounded by the points (``monitoring_event``) or events (``sending_event``) it holds,
counting the batch in the callback: that, not the number of batches, is what costs memory. A
batch weighs its points or events, or one per KiB of the request body that brought it if that
is more (a few huge events cost like many small ones). A batch that does not fit is dropped
whole and counted.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import inspect
import logging
import time
from collections.abc import Awaitable
from typing import Any, NamedTuple

from luna_plugins.base.plugins_meta.base_plugins import BaseEventPlugin
from luna_sidecar.engine import eager
from luna_sidecar.engine.loader import describe_exception
from luna_sidecar.isolation import (
    CANCEL_GRACE,
    PluginCancelledError,
    PluginEscapeError,
    escaped,
    overdue_seconds,
)
from luna_sidecar.observability import RuntimeMetrics
from luna_sidecar.process import IsolatedPlugin, ProcessStandIn

#: most points one merged monitoring_event callback receives
MERGE_LIMIT = 10_000

#: request-body bytes that weigh as much as one point or event
BYTES_PER_ITEM = 1024


def batch_items(payload: tuple[Any, ...]) -> int:
    """Points or events in a batch (its first argument, a list); 1 for anything else."""
    first = payload[0] if payload else None
    return len(first) if isinstance(first, list) else 1


def batch_weight(items: int, body_bytes: int = 0) -> int:
    """What a batch of ``items`` points or events from a ``body_bytes`` request body counts
    against a queue's capacity."""
    return max(items, body_bytes // BYTES_PER_ITEM, 1)


class _Queued(NamedTuple):
    """A batch in a worker's queue: its callback's arguments, or what is left of a callback that
    already started (``rest``, begun at ``started``/``clock`` on perf_counter/monotonic)."""

    payload: tuple[Any, ...]
    weight: int
    rest: Awaitable[Any] | None = None
    started: float = 0.0
    clock: float = 0.0


class EventWorker:
    """Delivers queued batches to one event plugin instance, one at a time, each under a timeout.

    ``offer`` never blocks: a batch that would take the points or events held past ``capacity``
    is dropped and counted (a batch is always taken by an empty queue, so the most held is
    ``max(capacity, one batch)``). Counters (``handled``, ``failed``, ``dropped`` in batches,
    ``dropped_items``) and the last error are kept for ``GET /plugins``.
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
        self.dropped_items = 0
        self.last_error: str | None = None
        self.stuck_task: asyncio.Task[None] | None = None
        """Set by :meth:`stop` when the callback ignored the cancellation and still runs."""
        self._queue: asyncio.Queue[_Queued] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        # one context for the worker's task and the callbacks started at once: a context
        # variable a callback sets before its first await is still set after it
        self._context = contextvars.copy_context()
        self._in_flight = 0
        self._items = 0
        self._call_started: float | None = None
        self._rest_waiting = False  # the rest of a callback started at once is first in the queue
        self._waiting = False  # the worker's task waits in the queue for the next batch
        self._stopped = False
        self._metrics = metrics
        labels = (plugin, self.class_name)
        self._count_handled = metrics.plugin_events.labels(*labels, "handled")
        self._count_failed = metrics.plugin_events.labels(*labels, "failed")
        self._count_timeout = metrics.plugin_events.labels(*labels, "timeout")
        self._count_dropped = metrics.plugin_events.labels(*labels, "dropped")
        self._count_dropped_items = metrics.dropped_items.labels(*labels)
        self._lost_full = metrics.dropped_batches.labels(*labels, "queue_full")
        #: an isolated plugin's process: while it restarts, batches wait in the queue
        self._gate: IsolatedPlugin | None = (
            instance.supervisor if isinstance(instance, ProcessStandIn) else None
        )
        self._lost_timeout = metrics.dropped_batches.labels(*labels, "timeout")
        self._lost_failed = metrics.dropped_batches.labels(*labels, "failed")
        self._latency = metrics.callback_seconds.labels(*labels)

    @property
    def depth(self) -> int:
        """Batches waiting (not counting the one being handled)."""
        return self._queue.qsize()

    @property
    def items(self) -> int:
        """Weight held (points or events, see :func:`batch_weight`): waiting, and in the callback."""
        return self._items

    def overdue(self) -> float | None:
        """Seconds the running callback is past its timeout (it ignores cancellation), if it is."""
        return overdue_seconds(self._call_started, self.timeout)

    def start(self) -> None:
        """Start delivering; idempotent."""
        if self._task is None and not self._stopped:
            self._task = asyncio.create_task(
                self._run(), name=f"luna-events-{self.plugin}.{self.class_name}", context=self._context
            )

    def offer(self, payload: tuple[Any, ...], weight: int | None = None) -> bool:
        """Accept one batch weighing ``weight`` (default: its points or events); returns False
        (and counts a drop) when it does not fit. An idle, started worker starts the callback at
        once (see the module's docstring); otherwise the batch is queued."""
        if weight is None:
            weight = batch_items(payload)
        if self._items and self._items + weight > self.capacity:
            count = batch_items(payload)
            self.dropped += 1
            self.dropped_items += count
            self._count_dropped.inc()
            self._count_dropped_items.inc(count)
            self._lost_full.inc()
            return False
        self._items += weight
        task = self._task
        if (
            self._waiting  # its task waits for the next batch (so it is not running, nor done)
            and task is not None
            and not self._stopped
            and self._queue.empty()
            and asyncio.current_task(task.get_loop()) is None  # offered from a protocol or a timer
            and (self._gate is None or self._gate.available)
        ):
            self._start_now(task, payload, weight)
        else:
            self._queue.put_nowait(_Queued(payload, weight))
        return True

    def _start_now(self, task: asyncio.Task[None], payload: tuple[Any, ...], weight: int) -> None:
        started, clock = time.perf_counter(), time.monotonic()
        self._in_flight, self._call_started = 1, clock
        try:
            # as the worker's task, so what the callback opens before its first await is the
            # worker's, like the rest it will await
            rest = eager.start_as(task, self._context, self.instance.handleEvent, *payload, self.logger)
        except BaseException as exc:  # anything the plugin raised is this batch failing, nothing more
            if isinstance(exc, asyncio.CancelledError):
                exc = PluginCancelledError("the plugin's callback raised CancelledError")
            self._failed(1, escaped(exc))
        else:
            if rest is not None:
                # it awaits something: the worker awaits the rest, under the timeout from now
                self._in_flight, self._call_started = 0, None
                self._rest_waiting = True
                self._queue.put_nowait(_Queued(payload, weight, rest, started, clock))
                return
            self.handled += 1
            self._count_handled.inc()
        self._in_flight, self._call_started = 0, None
        self._items -= weight
        self._latency.observe(time.perf_counter() - started)

    def _failed(self, batches: int, exc: BaseException) -> None:
        self.failed += batches
        self.last_error = describe_exception(exc)
        self._count_failed.inc(batches)
        self._lost_failed.inc(batches)
        self.logger.error("%s.handleEvent failed: %s", self.class_name, self.last_error, exc_info=exc)

    async def drain(self, deadline: float) -> int:
        """Wait until every queued batch is handled or ``deadline`` (monotonic) passes; returns
        the batches still undelivered. Gives up early on a callback that ignored its timeout's
        cancellation: nothing queued behind it would be delivered anyway."""
        if self._task is not None and not self._task.done():
            joined = asyncio.ensure_future(self._queue.join())
            try:
                while not joined.done() and self.overdue() is None:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        break
                    await asyncio.wait({joined}, timeout=min(left, CANCEL_GRACE))
            finally:
                joined.cancel()
        return self._queue.qsize() + self._in_flight

    async def stop(self, grace: float = CANCEL_GRACE, *, reason: str = "retired") -> int:
        """Stop the worker; returns the batches still queued or in a callback that is cut short
        (they are lost, and counted in ``luna_plugin_dropped_batches`` with ``reason``). Waits at
        most ``grace`` seconds for the callback to end: one that ignores cancellation is left
        running as :attr:`stuck_task` (it takes nothing more from the queue, whose batches are
        released at once)."""
        left = self._queue.qsize() + self._in_flight
        if left:
            self._metrics.dropped_batches.labels(self.plugin, self.class_name, reason).inc(left)
        self._stopped = True
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.wait({task}, timeout=grace)
            if task.done():
                if not task.cancelled():
                    task.exception()  # retrieved: nothing to report beyond what _run logged
            else:
                self.stuck_task = task
        while not self._queue.empty():  # what is queued is lost: free its memory now
            queued = self._queue.get_nowait()
            self._items -= queued.weight
            if isinstance(queued.rest, eager.Continuation):
                queued.rest.close(self.logger)
        return left

    async def _run(self) -> None:
        queue = self._queue
        merge = self.event_name == "monitoring_event"
        while not self._stopped:
            self._waiting = not queue.qsize()
            try:
                payload, weight, rest, started, clock = await queue.get()
            except asyncio.CancelledError:
                if self._stopped or not self._rest_waiting:
                    raise
                # a timer or task group that a callback started at once opened (as this task)
                # fired before the rest was taken over: the rest gets the cancellation
                payload, weight, rest, started, clock = queue.get_nowait()
                if isinstance(rest, eager.Continuation):
                    rest = rest.cancelled_meanwhile()
            finally:
                self._waiting = False
            self._rest_waiting = False
            batches = 1
            if rest is None and merge and queue.qsize() and isinstance(payload[0], list):
                # A busy plugin gets what queued up meanwhile in one call: one callback per
                # batch would cost more loop turns than the plugin's own work. (A started
                # callback is only ever queued first, into an empty queue, so none is merged.)
                points = list(payload[0])
                while queue.qsize() and len(points) < MERGE_LIMIT:
                    more = queue.get_nowait()
                    points.extend(more.payload[0])
                    weight += more.weight
                    batches += 1
                payload = (points,)
                del points
            self._in_flight = batches
            if rest is None and self._gate is not None and not self._gate.available:
                with contextlib.suppress(Exception):  # one that never comes back: the call fails at once
                    await self._gate.wait_available()
            if rest is None:
                started, clock = time.perf_counter(), time.monotonic()
            self._call_started = clock
            try:
                await self._call(payload, rest, clock + self.timeout)
            except TimeoutError:
                self.failed += batches
                self.last_error = f"callback timed out after {self.timeout:g} s"
                self._count_timeout.inc(batches)
                self._lost_timeout.inc(batches)
                self.logger.warning("%s.handleEvent timed out after %g s", self.class_name, self.timeout)
            except Exception as exc:
                self._failed(batches, exc)
            else:
                self.handled += batches
                self._count_handled.inc(batches)
            finally:
                self._in_flight = 0
                self._items -= weight
                self._call_started = None
                del payload, rest  # release the points before waiting for the next batch
                self._latency.observe(time.perf_counter() - started)
                for _ in range(batches):
                    queue.task_done()

    async def _call(self, payload: tuple[Any, ...], rest: Awaitable[Any] | None, deadline: float) -> None:
        """One callback (or the ``rest`` of one started at once) under the timeout, awaited in
        this worker's own task: a plugin that ignores cancellation can stall only its own queue
        (its drops are counted). ``deadline`` is on the monotonic clock."""
        try:
            async with asyncio.timeout_at(asyncio.get_running_loop().time() + deadline - time.monotonic()):
                if rest is None:
                    result = self.instance.handleEvent(*payload, self.logger)
                    if inspect.isawaitable(result):
                        await result
                else:
                    await rest
        except asyncio.CancelledError:
            if self._stopped:
                raise  # the worker itself is being stopped
            # the plugin raised it, or cancelled the task its callback runs in: its failure only
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                task.uncancel()
            raise PluginCancelledError("the plugin's callback raised CancelledError") from None
        except (Exception, GeneratorExit):  # GeneratorExit: the loop closing this worker
            raise
        except BaseException as exc:  # SystemExit, KeyboardInterrupt: the plugin's failure, not ours
            raise PluginEscapeError(exc) from exc
