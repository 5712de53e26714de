"""What the rest of the sidecar uses of durable delivery: each plugin's policy, its queue (opened
once per module and class under ``--queue-dir`` and kept across versions), the workers, the dead
letters' admin operations, and the final flush at shutdown.
"""

from __future__ import annotations

import asyncio
import logging
import re
import shutil
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry

from luna_contract.delivery import DeliveryPolicy
from luna_plugins.base.plugins_meta.base_plugins import BaseEventPlugin
from luna_sidecar.delivery.commit import GroupCommitter
from luna_sidecar.delivery.dead_letters import DeadLetters
from luna_sidecar.delivery.metrics import DeliveryMetrics, QueueCollector
from luna_sidecar.delivery.segments import SegmentLog
from luna_sidecar.delivery.worker import DurableQueue, DurableWorker
from luna_sidecar.observability import RuntimeMetrics

log = logging.getLogger(__name__)

#: largest segment file; smaller queues get segments of an eighth of their bound
MAX_SEGMENT_BYTES = 16 * 1024 * 1024
_SAFE = re.compile(r"[^A-Za-z0-9_.-]")


@dataclass(frozen=True)
class DeliverySettings:
    """Where durable queues live and the policy every plugin gets unless it says otherwise."""

    queue_dir: Path | None = None
    """None: no durable queue can be opened (a plugin asking for at-least-once fails to load)"""
    default: DeliveryPolicy = field(default_factory=DeliveryPolicy)


class DeadLetterError(LookupError):
    """No durable queue of that plugin (it is unknown, or its delivery is at-most-once)."""


class DeliveryService:
    """Owns the durable queues of the process."""

    def __init__(
        self, settings: DeliverySettings, *, metrics: RuntimeMetrics, registry: CollectorRegistry
    ) -> None:
        self.settings = settings
        self.runtime_metrics = metrics
        self.metrics = DeliveryMetrics(registry, metrics)
        self.committer = GroupCommitter()
        self._queues: dict[tuple[str, str], DurableQueue] = {}
        self._opening: dict[tuple[str, str], asyncio.Future[None]] = {}
        registry.register(QueueCollector(self.live_queues))

    def policy_for(self, plugin: str, requested: DeliveryPolicy | None = None) -> DeliveryPolicy:
        """The policy of ``plugin``: the one its LunaPlugin's ``spec.delivery`` asks for
        (``requested``, taken as a whole), else the settings' default."""
        del plugin
        return requested if requested is not None else self.settings.default

    def durable(self, plugin: str, requested: DeliveryPolicy | None = None) -> bool:
        """True when ``plugin``'s batches go through a durable queue."""
        return self.policy_for(plugin, requested).durable and self.settings.queue_dir is not None

    def worker(
        self,
        plugin: str,
        instance: BaseEventPlugin,
        *,
        timeout: float,
        logger: logging.Logger,
        requested: DeliveryPolicy | None = None,
    ) -> DurableWorker:
        """A worker delivering ``plugin``'s durable queue of ``instance``'s class to ``instance``
        under ``policy_for(plugin, requested)``; opens (and recovers) the queue on the loop if
        :meth:`prepare` did not open it first, and gives an open queue that policy when it
        changed. Raises ``OSError`` when it cannot."""
        policy = self.policy_for(plugin, requested)
        queue = self._queue(plugin, type(instance).__name__, instance.eventName, policy)
        return DurableWorker(
            queue,
            instance,
            timeout=timeout,
            metrics=self.runtime_metrics,
            delivery_metrics=self.metrics,
            logger=logger,
        )

    async def prepare(
        self, plugin: str, instances: Iterable[BaseEventPlugin], requested: DeliveryPolicy | None = None
    ) -> None:
        """Open (and recover) the durable queues of ``instances``' classes that are not open yet,
        in a thread: the start-up scan of a large backlog (every record's frame and checksum)
        never stalls the event loop, so probes, the intake and the other plugins keep answering
        meanwhile. Raises ``OSError`` when a queue cannot be opened."""
        policy = self.policy_for(plugin, requested)
        for instance in instances:
            key = (plugin, type(instance).__name__)
            while key not in self._queues:
                opening = self._opening.get(key)
                if opening is not None:  # another load of this class opens it: look again after
                    await asyncio.shield(opening)
                    continue
                self._opening[key] = done = asyncio.get_running_loop().create_future()
                try:
                    opened = await asyncio.to_thread(self._open, plugin, key[1], policy)
                    self._register(plugin, key[1], instance.eventName, policy, opened)
                finally:
                    del self._opening[key]
                    done.set_result(None)  # waiters find the queue, or try (and fail) themselves

    def _queue(self, plugin: str, class_name: str, event_name: str, policy: DeliveryPolicy) -> DurableQueue:
        key = (plugin, class_name)
        queue = self._queues.get(key)
        if queue is not None:
            queue.adopt(policy)
            return queue
        return self._register(plugin, class_name, event_name, policy, self._open(plugin, class_name, policy))

    def _open(
        self, plugin: str, class_name: str, policy: DeliveryPolicy
    ) -> tuple[SegmentLog, DeadLetters, str | None]:
        """The files of one queue, opened and recovered (blocking: a thread or the loop)."""
        root = self.settings.queue_dir
        assert root is not None
        directory = root / _SAFE.sub("_", plugin) / _SAFE.sub("_", class_name)
        segment_log = SegmentLog(
            directory,
            segment_bytes=min(MAX_SEGMENT_BYTES, max(64 * 1024, policy.max_queue_bytes // 8)),
            logger=log,
        )
        segment_log.open()
        dead = DeadLetters(directory / "dead")
        dead.open()
        warning = _capacity_warning(directory, policy.max_queue_bytes, segment_log.total_bytes)
        return segment_log, dead, warning

    def _register(
        self,
        plugin: str,
        class_name: str,
        event_name: str,
        policy: DeliveryPolicy,
        opened: tuple[SegmentLog, DeadLetters, str | None],
    ) -> DurableQueue:
        segment_log, dead, capacity_warning = opened
        queue = DurableQueue(
            plugin,
            class_name,
            event_name,
            policy,
            segment_log,
            dead,
            self.committer,
            self.runtime_metrics,
            self.metrics,
        )
        if segment_log.quarantined:
            self.metrics.quarantined.labels(plugin, class_name).inc(segment_log.quarantined)
        queue.capacity_warning = capacity_warning
        if queue.capacity_warning:
            log.warning("plugin %s (%s): %s", plugin, class_name, queue.capacity_warning)
        if segment_log.pending:
            log.info(
                "plugin %s (%s): %d batch(es) from before the start are queued for delivery",
                plugin,
                class_name,
                segment_log.pending,
            )
        self._queues[(plugin, class_name)] = queue
        return queue

    def live_queues(self) -> Iterator[DurableQueue]:
        """Queues with a running worker."""
        return (queue for queue in list(self._queues.values()) if queue.worker is not None)

    def _of(self, plugin: str) -> list[DurableQueue]:
        queues = [queue for (name, _), queue in self._queues.items() if name == plugin]
        if not queues:
            raise DeadLetterError(
                f"plugin {plugin!r} has no durable queue (unknown, or at-most-once delivery)"
            )
        return queues

    def dead_letters(self, plugin: str) -> dict[str, Any]:
        """``GET /plugins/{plugin}/dead-letters``: the dead letters of each class of ``plugin``."""
        return {
            "plugin": plugin,
            "classes": [
                {
                    "name": queue.class_name,
                    "count": queue.dead.count,
                    "bytes": queue.dead.bytes,
                    "deadLetters": [letter.describe() for letter in queue.dead.list()],
                }
                for queue in self._of(plugin)
            ],
        }

    async def replay(self, plugin: str, names: list[str] | None = None) -> int:
        """Queue ``plugin``'s dead letters (all, or those ``names``) for delivery again."""
        return sum([await queue.replay(names) for queue in self._of(plugin)])

    async def discard(self, plugin: str, names: list[str] | None = None) -> int:
        """Delete ``plugin``'s dead letters (all, or those ``names``)."""
        return sum([await queue.discard(names) for queue in self._of(plugin)])

    async def close(self) -> None:
        """Persist every cursor and close the files (after the workers stopped)."""
        await self.committer.flush([queue.log for queue in self._queues.values()])
        for queue in self._queues.values():
            queue.log.close()
        self.committer.close()


def _capacity_warning(directory: Path, bound: int, held: int) -> str | None:
    """Why ``directory`` cannot hold a queue of ``bound`` bytes (it holds ``held``), if it cannot."""
    try:
        free = shutil.disk_usage(directory).free
    except OSError as exc:
        return f"cannot read the free space of {directory}: {exc}"
    if free + held < bound:
        return (
            f"the queue directory {directory} has {free + held} bytes for a queue bound of {bound} bytes: "
            "batches will be refused or dropped before the bound "
            "(lower --queue-max-bytes or give it more space)"
        )
    return None
