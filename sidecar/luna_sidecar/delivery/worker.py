"""The durable worker: delivers one plugin class's queue from disk, in order, at least once.

A :class:`DurableQueue` (log, dead letters, breaker) belongs to a plugin module and class and
outlives the plugin's versions: when a version is reloaded, the new version's worker takes the
queue over after the old one's attempt in progress ends. One batch is in delivery at a time; a
failed attempt (the callback raised or ran past ``--callback-timeout``) is retried after the
backoff or the ``retry_after`` the exception asked for, while the circuit breaker allows it,
until the policy's ``maxElapsed``; then the batch becomes a dead letter and the queue moves on.
The callback reads the batch's delivery id and attempt with ``luna_plugins.delivery``.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
import traceback
from typing import Any

from luna_contract.delivery import DeliveryPolicy
from luna_plugins.base.plugins_meta.base_plugins import BaseEventPlugin
from luna_plugins.delivery import DeliveryInfo, _enter, _leave
from luna_sidecar.delivery.commit import GroupCommitter
from luna_sidecar.delivery.dead_letters import DeadLetters
from luna_sidecar.delivery.metrics import DeliveryMetrics
from luna_sidecar.delivery.retry import Breaker, backoff, retry_after
from luna_sidecar.delivery.segments import Record, SegmentLog
from luna_sidecar.intake import PayloadError, PointDecoder, decode_sending
from luna_sidecar.isolation import CANCEL_GRACE, PluginCancelledError, PluginEscapeError, overdue_seconds
from luna_sidecar.observability import RuntimeMetrics
from luna_sidecar.process import ProcessStandIn

#: a stored body was validated by the intake; this only bounds a damaged one
_MAX_ITEMS = 10_000_000
#: batches (and their request bytes) whose decoded form is kept for their first delivery, so a
#: queue that keeps up does not decode every body twice; past this, bodies are decoded again
FRESH_BATCHES = 1024
FRESH_BYTES = 32 * 1024 * 1024
#: the drop reason of a dead letter that did not fit the bound (``maxDeadLetterBytes``)
DEAD_LETTERS_FULL = "dead_letters_full"


class DurableQueue:
    """The durable queue of one plugin module and class: what survives its versions."""

    def __init__(
        self,
        plugin: str,
        class_name: str,
        event_name: str,
        policy: DeliveryPolicy,
        segment_log: SegmentLog,
        dead: DeadLetters,
        committer: GroupCommitter,
        runtime_metrics: RuntimeMetrics,
        metrics: DeliveryMetrics,
    ) -> None:
        self.plugin = plugin
        self.class_name = class_name
        self.event_name = event_name
        self.policy = policy
        self.log = segment_log
        self.dead = dead
        self.committer = committer
        self.breaker = Breaker(policy.breaker)
        self.consumer = asyncio.Lock()
        """held by the worker delivering; the next version's worker waits for it"""
        self.worker: DurableWorker | None = None
        self.head: Record | None = None
        self.head_attempt = 0
        self.capacity_warning: str | None = None
        self.dropped: dict[str, int] = {}
        self.delivered = 0
        self.retried = 0
        self.dead_lettered = 0
        self._runtime_metrics = runtime_metrics
        self._metrics = metrics
        self._wake = asyncio.Event()
        committer.listeners[segment_log] = self._wake.set
        self._fresh: dict[int, tuple[tuple[Any, ...], int]] = {}
        self._fresh_bytes = 0

    def adopt(self, policy: DeliveryPolicy) -> None:
        """Apply ``policy`` from now on (a new version of the plugin asks for another one): the
        bound and whenFull for the next appends, the retry and the breaker's thresholds for the
        next failure (the breaker keeps its state). The segment size stays as opened."""
        self.policy = policy
        self.breaker.policy = policy.breaker

    def wake(self) -> None:
        """Something changed (records durable, a worker handing over): look again."""
        self._wake.set()

    async def woken(self) -> None:
        """Wait for :meth:`wake`."""
        await self._wake.wait()
        self._wake.clear()

    def refuses(self, size: int) -> str | None:
        """Why a batch of ``size`` body bytes cannot be taken now under ``whenFull: refuse``."""
        if self.policy.when_full != "refuse" or not self._over(size):
            return None
        return (
            f"the durable queue of plugin {self.plugin} ({self.class_name}) is full "
            f"({self.log.pending_bytes} of {self.policy.max_queue_bytes} bytes); send it again later"
        )

    def _over(self, size: int) -> bool:
        return self.log.pending_bytes + size + 64 > self.policy.max_queue_bytes

    def append(
        self, body: bytes, payload: tuple[Any, ...] | None = None, *, delivery_id: str = ""
    ) -> asyncio.Future[None] | None:
        """Queue ``body`` (``payload``: the callback's arguments decoded from it, kept for its
        first delivery while the queue keeps up); the future resolves once it is on disk. None
        when the batch was dropped (``whenFull: dropNewest``, or a batch larger than the whole
        bound). Raises ``OSError`` when it cannot be written."""
        if self._over(len(body)):
            if self.policy.when_full == "dropOldest":
                while self._over(len(body)):
                    lost = self.log.drop_oldest()
                    if not lost:
                        break
                    self.count_dropped("queue_full_oldest", lost)
                self.committer.touch(self.log)
            if self._over(len(body)):
                self.count_dropped("queue_full", 1)
                return None
        try:
            seq = self.log.append(body, delivery_id=delivery_id)
        except OSError:
            self.committer.touch(self.log)  # a segment given up is deleted by the next sync
            raise
        if (
            payload is not None
            and len(self._fresh) < FRESH_BATCHES
            and self._fresh_bytes + len(body) <= FRESH_BYTES
        ):
            self._fresh[seq] = (payload, len(body))
            self._fresh_bytes += len(body)
        return self.committer.commit(self.log)

    def take_fresh(self, seq: int) -> tuple[Any, ...] | None:
        """The decoded arguments of record ``seq`` if still kept (forgets those before it)."""
        fresh = self._fresh
        while fresh:
            first = next(iter(fresh))
            if first > seq:
                return None
            payload, size = fresh.pop(first)
            self._fresh_bytes -= size
            if first == seq:
                return payload
        return None

    def count_dropped(self, reason: str, batches: int) -> None:
        """Count ``batches`` lost for ``reason`` (``luna_plugin_dropped_batches``)."""
        self.dropped[reason] = self.dropped.get(reason, 0) + batches
        self._runtime_metrics.dropped_batches.labels(self.plugin, self.class_name, reason).inc(batches)

    def oldest_age(self, now: float) -> float:
        """Seconds since the oldest batch not delivered yet was accepted (0 when none)."""
        head = self.head
        if head is None or (head.seq < self.log.cursor and self.log.pending == 0):
            return 0.0
        return max(0.0, now - head.enqueued_at)

    def describe(self) -> dict[str, Any]:
        """The queue as ``GET /plugins`` shows it (under ``delivery``)."""
        return {
            "mode": self.policy.mode,
            "queueDir": str(self.log.directory),
            "pending": self.log.pending,
            "pendingBytes": self.log.pending_bytes,
            "maxBytes": self.policy.max_queue_bytes,
            "whenFull": self.policy.when_full,
            "oldestBatchAgeSeconds": round(self.oldest_age(time.time()), 3),
            "delivered": self.delivered,
            "retried": self.retried,
            "deadLettered": self.dead_lettered,
            "deadLetters": self.dead.count,
            "dropped": dict(self.dropped),
            "breaker": self.breaker.state,
            "breakerOpened": self.breaker.opened,
            "headAttempt": self.head_attempt if self.head is not None else 0,
            "quarantinedSegments": self.log.quarantined,
            "capacityWarning": self.capacity_warning,
        }

    # -- dead letters

    async def replay(self, names: list[str] | None) -> int:
        """Queue dead letters again (all, or those ``names``), at the end of the queue with their
        delivery ids; each is removed once its copy in the queue is on disk. Returns how many."""
        chosen = names if names is not None else self.dead.names()
        done = 0
        for name in chosen:
            loaded = await asyncio.to_thread(self.dead.load, name)
            if loaded is None:
                continue
            delivery_id, body = loaded
            self.log.append(body, delivery_id=delivery_id)
            await self.committer.commit(self.log)
            await asyncio.to_thread(self.dead.remove, name)
            done += 1
        return done

    async def discard(self, names: list[str] | None) -> int:
        """Delete dead letters (all, or those ``names``); each counts as dropped, ``discarded``."""
        chosen = names if names is not None else self.dead.names()
        done = 0
        for name in chosen:
            if await asyncio.to_thread(self.dead.remove, name):
                done += 1
        if done:
            self.count_dropped("discarded", done)
        return done


class DurableWorker:
    """Delivers a :class:`DurableQueue` to one plugin instance. Offers the interface the runtime
    uses of an in-memory worker (``start``, ``drain``, ``stop``, the counters); the intake
    reaches the queue through :meth:`refuses` and :meth:`append`."""

    def __init__(
        self,
        queue: DurableQueue,
        instance: BaseEventPlugin,
        *,
        timeout: float,
        metrics: RuntimeMetrics,
        delivery_metrics: DeliveryMetrics,
        logger: logging.Logger,
    ) -> None:
        self.queue = queue
        self.plugin = queue.plugin
        self.instance = instance
        self.class_name = queue.class_name
        self.event_name: str = instance.eventName
        self.capacity = queue.policy.max_queue_bytes
        self.timeout = timeout
        self.logger = logger
        self.handled = 0
        self.failed = 0
        self.dropped = 0
        self.dropped_items = 0
        self.last_error: str | None = None
        self.stuck_task: asyncio.Task[None] | None = None
        self._task: asyncio.Task[None] | None = None
        self._stopped = False
        self._handing_over = False
        self._call_started: float | None = None
        self._decoder = PointDecoder(max_items=_MAX_ITEMS) if self.event_name == "monitoring_event" else None
        labels = (self.plugin, self.class_name)
        self._count_handled = metrics.plugin_events.labels(*labels, "handled")
        self._count_failed = metrics.plugin_events.labels(*labels, "failed")
        self._count_timeout = metrics.plugin_events.labels(*labels, "timeout")
        self._latency = metrics.callback_seconds.labels(*labels)
        self._delivery_latency = delivery_metrics.latency.labels(*labels)
        self._retries = delivery_metrics.retries.labels(*labels)
        self._dead_lettered = delivery_metrics.dead_lettered.labels(*labels)

    # -- what the intake and the runtime use

    def refuses(self, size: int) -> str | None:
        """See :meth:`DurableQueue.refuses`."""
        return self.queue.refuses(size)

    def append(self, body: bytes, payload: tuple[Any, ...] | None = None) -> asyncio.Future[None] | None:
        """See :meth:`DurableQueue.append`."""
        return self.queue.append(body, payload)

    @property
    def depth(self) -> int:
        """Batches not delivered yet."""
        return self.queue.log.pending

    @property
    def items(self) -> int:
        """Batches not delivered yet (a durable queue is bounded in bytes, not points)."""
        return self.queue.log.pending

    def overdue(self) -> float | None:
        """Seconds the running callback is past its timeout (it ignores cancellation), if it is."""
        return overdue_seconds(self._call_started, self.timeout)

    def start(self) -> None:
        """Start delivering (once the previous version's worker, if any, handed the queue over)."""
        if self._task is None and not self._stopped:
            self.queue.worker = self
            self._task = asyncio.create_task(
                self._run(), name=f"luna-delivery-{self.plugin}.{self.class_name}"
            )

    async def drain(self, deadline: float) -> int:
        """Hand the queue over: the attempt in progress may end (until ``deadline``, monotonic),
        no new one starts. Returns 0: what is not delivered stays on disk for the next worker or
        the next start."""
        self._handing_over = True
        self.queue.wake()
        task = self._task
        if task is not None and not task.done():
            await asyncio.wait({task}, timeout=max(0.0, deadline - time.monotonic()))
        return 0

    async def stop(self, grace: float = CANCEL_GRACE, *, reason: str = "retired") -> int:
        """Stop; an attempt cut short is delivered again by the next worker (same delivery id).
        Returns 0: nothing is lost. A callback ignoring the cancellation is left as ``stuck_task``."""
        del reason
        self._stopped = self._handing_over = True
        self.queue.wake()
        task, self._task = self._task, None
        if self.queue.worker is self:
            self.queue.worker = None
        if task is not None:
            task.cancel()
            await asyncio.wait({task}, timeout=grace)
            if task.done():
                if not task.cancelled():
                    task.exception()
            else:
                self.stuck_task = task
        return 0

    # -- delivering

    async def _run(self) -> None:
        queue = self.queue
        async with queue.consumer:
            queue.log.rewind()  # the batch a previous worker had in hand, if any, comes first
            while not self._handing_over:
                record = queue.log.next_record()
                if record is None:
                    await queue.woken()
                    continue
                await self._deliver(record)
                # a callback that never suspends would keep the loop from everything else (probes,
                # the intake, routes, the cursor's fsync rounds) for the whole backlog
                await asyncio.sleep(0)
        queue.wake()  # the next worker may be waiting on the lock: let it look at once

    def _payload(self, record: Record) -> tuple[Any, ...]:
        if self._decoder is not None:
            return (self._decoder.decode(record.body),)
        return decode_sending(record.body, max_items=_MAX_ITEMS)

    async def _deliver(self, record: Record) -> None:
        queue = self.queue
        policy = queue.policy
        info_id = record.delivery_id or queue.log.default_id(record.seq)
        queue.head, queue.head_attempt = record, 0
        try:
            payload = queue.take_fresh(record.seq) or self._payload(record)
        except PayloadError as exc:
            await self._dead_letter(record, info_id, 0, f"the stored batch cannot be decoded: {exc.message}")
            return
        first = time.monotonic()
        attempt = 0
        while True:
            wait = queue.breaker.wait(time.monotonic())
            if wait > 0 and not await self._pause(wait):
                return
            if record.seq < queue.log.cursor:  # dropped meanwhile (whenFull: dropOldest)
                queue.head = None
                return
            attempt += 1
            queue.head_attempt = attempt
            started = time.perf_counter()
            self._call_started = time.monotonic()
            first_argument = payload[0] if payload else None
            # every attempt gets its own list: what a failed attempt did to it is not retried
            arguments = (list(first_argument), *payload[1:]) if isinstance(first_argument, list) else payload
            try:
                await self._call(arguments, DeliveryInfo(info_id, attempt))
            except Exception as exc:
                error: BaseException = exc
            else:
                self._call_started = None
                self._latency.observe(time.perf_counter() - started)
                queue.breaker.success()
                queue.log.done(record)
                queue.committer.touch(queue.log)
                queue.head = None
                queue.delivered += 1
                self.handled += 1
                self._count_handled.inc()
                self._delivery_latency.observe(max(0.0, time.time() - record.enqueued_at))
                return
            self._call_started = None
            self._latency.observe(time.perf_counter() - started)
            queue.breaker.failure(time.monotonic())
            self.failed += 1
            if isinstance(error, TimeoutError):
                self.last_error = f"callback timed out after {self.timeout:g} s"
                self._count_timeout.inc()
            else:
                self.last_error = _describe(error)
                self._count_failed.inc()
            delay = retry_after(error, policy.retry)
            if delay is None:
                delay = backoff(policy.retry, attempt)
            elapsed = time.monotonic() - first
            if policy.retry.max_elapsed and elapsed + delay > policy.retry.max_elapsed:
                self.logger.error(
                    "%s.handleEvent failed %d time(s) in %.1f s, batch %s dead-lettered: %s",
                    self.class_name,
                    attempt,
                    elapsed,
                    info_id,
                    self.last_error,
                )
                await self._dead_letter(record, info_id, attempt, self.last_error)
                return
            self.logger.warning(
                "%s.handleEvent attempt %d of batch %s failed, retrying in %.2f s: %s",
                self.class_name,
                attempt,
                info_id,
                delay,
                self.last_error,
            )
            queue.retried += 1
            self._retries.inc()
            if self._handing_over or not await self._pause(delay):
                return

    async def _pause(self, seconds: float) -> bool:
        """Sleep ``seconds`` unless the worker hands over meanwhile; False when it does."""
        deadline = time.monotonic() + seconds
        while not self._handing_over:
            left = deadline - time.monotonic()
            if left <= 0:
                return True
            try:
                await asyncio.wait_for(self.queue.woken(), timeout=left)
            except TimeoutError:
                return True
        return False

    async def _dead_letter(self, record: Record, delivery_id: str, attempts: int, error: str) -> None:
        queue = self.queue
        while True:
            bound = queue.policy.max_dead_letter_bytes
            try:
                written, removed = await asyncio.to_thread(
                    queue.dead.add,
                    record,
                    delivery_id=delivery_id,
                    attempts=attempts,
                    error=error,
                    max_bytes=bound,
                )
                break
            except OSError as exc:  # a full disk: the batch stays at the head of the queue
                wait = queue.policy.retry.max_backoff
                self.logger.error(
                    "cannot write batch %s of %s (%s) as a dead letter (%s); it stays in the queue, "
                    "written again in %g s",
                    delivery_id,
                    queue.plugin,
                    queue.class_name,
                    exc,
                    wait,
                )
                if not await self._pause(wait):
                    return  # handing over: the next worker starts from this batch again
        queue.log.done(record)
        queue.committer.touch(queue.log)
        queue.head = None
        if removed or not written:
            queue.count_dropped(DEAD_LETTERS_FULL, removed + (not written))
            self.logger.warning(
                "dead letters of %s (%s) are bounded to %d bytes: %s",
                queue.plugin,
                queue.class_name,
                bound,
                f"{removed} oldest removed to keep batch {delivery_id}"
                if written
                else f"batch {delivery_id} ({record.size} bytes) is larger than the bound and was dropped",
            )
        if written:
            queue.dead_lettered += 1
            self._dead_lettered.inc()

    async def _call(self, payload: tuple[Any, ...], info: DeliveryInfo) -> None:
        """One attempt under the timeout, in this worker's task, with the delivery context set.
        An isolated plugin's attempt waits first while its process restarts (nothing is lost:
        the batch stays in the durable queue)."""
        if isinstance(self.instance, ProcessStandIn) and not self.instance.supervisor.available:
            await self.instance.supervisor.wait_available()
        token = _enter(info)
        try:
            async with asyncio.timeout(self.timeout):
                result = self.instance.handleEvent(*payload, self.logger)
                if inspect.isawaitable(result):
                    await result
        except asyncio.CancelledError:
            if self._stopped:
                raise
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                task.uncancel()
            raise PluginCancelledError("the plugin's callback raised CancelledError") from None
        except (Exception, GeneratorExit):
            raise
        except BaseException as exc:  # SystemExit, KeyboardInterrupt: the plugin's failure
            raise PluginEscapeError(exc) from exc
        finally:
            _leave(token)


def _describe(exc: BaseException) -> str:
    if isinstance(exc, PluginEscapeError):
        exc = exc.original
    return "".join(traceback.format_exception_only(type(exc), exc)).strip()
