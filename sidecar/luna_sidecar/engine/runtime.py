"""The runtime: converges the loaded plugins on a desired list, one module at a time.

For each module of the desired list, in order: unchanged code and settings -> nothing to do;
new or changed -> load the new version completely (initialize, start), then swap its routes and
event queues in, then close the old version. A version that fails to load is reported and the
old one, if any, keeps serving. Modules no longer desired are unloaded, with their metric series.

Every wait on plugin code is bounded: retiring a version waits at most ``callback_timeout`` for
its queue, ``CANCEL_GRACE`` for its workers and ``lifecycle_timeout`` per ``close()``; what
ignores cancellation is abandoned and reported (``leftovers``). A plugin that blocks the event
loop beyond its budget can be quarantined: unloaded and marked failed until its code changes.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import types
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import msgspec
from prometheus_client import CollectorRegistry

from luna_plugins.application import LunaApplication
from luna_plugins.base.plugins_meta.base_plugins import BaseBackgroundPlugin
from luna_sidecar.delivery import DeliveryService, DurableWorker
from luna_sidecar.desired import DesiredPlugin, PluginSource
from luna_sidecar.engine.bus import EventBus
from luna_sidecar.engine.lifecycle import PluginVersion, close_instances, load_version, plugin_logger
from luna_sidecar.engine.loader import PluginLoadError, describe_exception, forget_module, publish_module
from luna_sidecar.engine.packages import PackageManager, PackageSettings, PackageStatus
from luna_sidecar.engine.queues import EventWorker
from luna_sidecar.engine.routing import PluginRoutes, RouteConflictError, RouteTable
from luna_sidecar.isolation import CANCEL_GRACE, BlockLedger, CrashGuard, Leftovers
from luna_sidecar.observability import PluginState, QueueState, RuntimeMetrics
from luna_sidecar.process import (
    ChildLoadError,
    IsolatedPlugin,
    IsolationSettings,
    ProcessLimits,
    ProcessMetrics,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RuntimeLimits:
    """Timeouts and sizes the runtime applies to every plugin."""

    queue_items: int = 20_000
    """points or events each event plugin's queue holds at most"""
    callback_timeout: float = 10.0
    lifecycle_timeout: float = 30.0


@dataclass
class PluginSlot:
    """Everything known about one module of the active list."""

    module: str
    current: PluginVersion | None = None
    workers: list[EventWorker | DurableWorker] = field(default_factory=list)
    state: str = "loading"
    failed_hash: str | None = None
    failed_key: str | None = None
    """code hash + settings of the version that failed (a settings change is a new version)"""
    error: str | None = None
    changed_at: float = field(default_factory=time.time)
    packages: PackageStatus | None = None
    """the requirements of the desired version (installed, installing, failed)"""

    def describe(self, routes: RouteTable, ledger: BlockLedger, leftovers: Leftovers) -> dict[str, Any]:
        """The slot as ``GET /plugins`` shows it."""
        current = self.current
        answers, errors = routes.tally.of(self.module)
        return {
            "name": self.module,
            "state": self.state,
            "codeHash": current.source.code_hash if current else None,
            "origin": current.source.origin if current else None,
            "loadedAt": current.loaded_at if current else None,
            "error": self.error,
            # a newer version that failed while this one keeps running
            "failedCodeHash": self.failed_hash,
            "classes": [
                {"name": type(instance).__name__, "kind": _kind(instance)}
                | _queue_info(self.workers, instance)
                for instance in (current.instances if current else [])
            ],
            "routes": [entry.label.replace(":", " ", 1) for entry in routes.routes_of(self.module)],
            "loopBlockedSeconds": round(ledger.total(self.module), 3),
            "routeAnswers": answers,
            "routeErrors": errors,
            "stuck": [entry.describe() for entry in leftovers.entries() if entry.plugin == self.module],
            "requirements": _requirements_info(self.packages),
            "isolation": current.source.isolation if current else None,
            "process": current.process.describe()
            if current is not None and current.process is not None
            else None,
            "changedAt": self.changed_at,
        }


def _requirements_info(status: PackageStatus | None) -> dict[str, Any] | None:
    if status is None or status.state == "none":
        return None
    return {"state": status.state, "set": status.environment, "error": status.error}


def _kind(instance: object) -> str:
    return "background" if isinstance(instance, BaseBackgroundPlugin) else "event"


def _queue_info(workers: list[EventWorker | DurableWorker], instance: object) -> dict[str, Any]:
    for worker in workers:
        if worker.instance is instance:
            overdue = worker.overdue()
            delivery = {"delivery": worker.queue.describe()} if isinstance(worker, DurableWorker) else {}
            return delivery | {
                "eventName": worker.event_name,
                "queue": {"depth": worker.depth, "items": worker.items, "capacity": worker.capacity},
                "handled": worker.handled,
                "failed": worker.failed,
                "dropped": worker.dropped,
                "droppedItems": worker.dropped_items,
                "lastError": worker.last_error,
                # a callback still running this long after its timeout ignores cancellation
                "callbackOverdueSeconds": round(overdue, 1) if overdue is not None else None,
            }
    return {}


def _config_key(source: PluginSource) -> str:
    """Settings, requirements and delivery policy: changing any makes a new version of the same
    code (a new policy takes effect with the new version's workers)."""
    delivery = msgspec.to_builtins(source.delivery) if source.delivery is not None else None
    return json.dumps(
        [source.settings, source.requirements, delivery, source.isolation], sort_keys=True, default=str
    )


def _version_key(source: PluginSource) -> str:
    return f"{source.code_hash}:{_config_key(source)}"


class Runtime:
    """Owns the loaded plugins. ``apply`` calls are serialized; everything runs on one loop."""

    def __init__(
        self,
        *,
        app: LunaApplication,
        bus: EventBus,
        routes: RouteTable,
        metrics: RuntimeMetrics,
        limits: RuntimeLimits,
        leftovers: Leftovers | None = None,
        ledger: BlockLedger | None = None,
        packages: PackageSettings | None = None,
        crash_guard: CrashGuard | None = None,
        delivery: DeliveryService | None = None,
        isolation: IsolationSettings | None = None,
        process_metrics: ProcessMetrics | None = None,
    ) -> None:
        self.app = app
        #: how isolated plugins' processes are started and limited
        self.isolation = isolation or IsolationSettings(
            limits=ProcessLimits(),
            service=app.serviceName,
            callback_timeout=limits.callback_timeout,
            route_timeout=30.0,
            lifecycle_timeout=limits.lifecycle_timeout,
        )
        self.process_metrics = process_metrics
        #: durable queues of the plugins whose policy is at-least-once; None: all at-most-once
        self.delivery = delivery
        self.bus = bus
        self.routes = routes
        #: ``app.router`` from now on: the plugins' addRoute goes through it to ``routes``
        self.plugin_routes = PluginRoutes(routes)
        app.use_router(self.plugin_routes)
        self.metrics = metrics
        self.limits = limits
        self.leftovers = leftovers if leftovers is not None else Leftovers()
        self.ledger = ledger if ledger is not None else BlockLedger(metrics)
        self.crash_guard = crash_guard if crash_guard is not None else CrashGuard(None)
        self._slots: dict[str, PluginSlot] = {}
        self._lock = asyncio.Lock()
        self._quarantines: set[asyncio.Task[None]] = set()
        self._shut_down = False
        self.packages = PackageManager(packages or PackageSettings(), on_done=self._packages_done)
        self._last_desired: list[DesiredPlugin] = []
        self._reapply: asyncio.Task[None] | None = None
        #: called after the runtime changed something on its own (requirements installed)
        self.on_change: list[Callable[[], None]] = []

    @property
    def slots(self) -> list[PluginSlot]:
        """The slots in load order."""
        return list(self._slots.values())

    def current_source(self, module: str) -> PluginSource | None:
        """The source of the version of ``module`` running now, if any."""
        slot = self._slots.get(module)
        return slot.current.source if slot is not None and slot.current is not None else None

    def describe(self) -> list[dict[str, Any]]:
        """Every plugin's state, in load order."""
        return [slot.describe(self.routes, self.ledger, self.leftovers) for slot in self._slots.values()]

    def snapshot(self) -> list[PluginState]:
        """Every plugin's state and queues, for the metrics."""
        return [
            PluginState(
                slot.module,
                slot.current.source.code_hash if slot.current else (slot.failed_hash or ""),
                slot.state,
                [QueueState(worker.class_name, worker.depth, worker.items) for worker in slot.workers],
            )
            for slot in self._slots.values()
        ]

    async def apply(self, desired: list[DesiredPlugin], *, retry_failed: bool = False) -> None:
        """Converge on ``desired`` (in load order). A version that already failed is not tried
        again unless ``retry_failed`` (a SIGHUP) asks for it. Never raises for plugin faults."""
        async with self._lock:
            if self._shut_down:
                return
            self._last_desired = list(desired)
            if retry_failed:
                self.crash_guard.release()
            packages = self.packages.status(
                [(entry.module, entry.source.requirements if entry.source else ()) for entry in desired]
            )
            wanted = {entry.module for entry in desired}
            for module in [name for name in self._slots if name not in wanted]:
                await self._unload(self._slots[module])
            ordered: dict[str, PluginSlot] = {}
            for entry in desired:
                slot = self._slots.get(entry.module) or PluginSlot(entry.module)
                ordered[entry.module] = slot
                self._slots[entry.module] = slot
                slot.packages = packages[entry.module]
                try:
                    await self._converge(slot, entry, retry_failed=retry_failed)
                except Exception as exc:  # one plugin's change never stops the others applying
                    source = entry.source
                    log.error("plugin %s: applying its change failed", entry.module, exc_info=exc)
                    self._failed(
                        slot,
                        source.code_hash if source else None,
                        f"could not be applied: {describe_exception(exc)}",
                        _version_key(source) if source else None,
                    )
            self._slots = ordered
            self.plugin_routes.forget_unserved()  # of versions that failed to load, of stray plugin objects

    def _changed_on_its_own(self) -> None:
        """Something changed without an apply (an isolated plugin's process ended or came back):
        tell the listeners (the per-pod report)."""
        for listener in self.on_change:
            listener()

    def _packages_done(self) -> None:
        """A requirement set finished installing (or failed): converge again on what is desired."""
        if self._shut_down or (self._reapply is not None and not self._reapply.done()):
            return

        async def reapply() -> None:
            await self.apply(self._last_desired)
            for listener in self.on_change:
                listener()

        self._reapply = asyncio.create_task(reapply(), name="luna-packages-reapply")

    async def _converge(self, slot: PluginSlot, entry: DesiredPlugin, *, retry_failed: bool) -> None:
        source = entry.source
        if source is None:
            self._failed(slot, None, entry.error or "plugin source unavailable", None)
            return
        current = slot.current
        if (
            current is not None
            and current.source.code_hash == source.code_hash
            and _config_key(current.source) == _config_key(source)
        ):
            if slot.failed_hash is not None:  # the desired version is the running one again
                slot.failed_hash = slot.failed_key = slot.error = None
                slot.changed_at = time.time()
            return
        if slot.failed_key == _version_key(source) and not retry_failed:
            return  # this exact version already failed; a SIGHUP retries it
        packages = slot.packages
        if packages is not None and not packages.ready:
            # not failed_key: once the set is installed (or the index is back) it is tried again
            if packages.state == "installing":
                if current is None:
                    slot.state, slot.error = "installing", None
                return
            self._failed(slot, source.code_hash, packages.error or "requirements not installed", None)
            return
        unavailable = self._delivery_unavailable(source)
        if unavailable is not None:
            self._failed(slot, source.code_hash, unavailable, _version_key(source))
            return
        if source.isolation == "process":
            loaded = await self._load_isolated(slot, source)
            if loaded is None:
                return
            version = loaded
        else:
            loaded = await self._load_in_process(slot, source)
            if loaded is None:
                return
            version = loaded
        try:
            self.routes.replace(slot.module, version.routes())
        except Exception as exc:  # a conflict, or anything else its routes made the table raise
            await self._close(version)
            reason = str(exc) if isinstance(exc, RouteConflictError) else describe_exception(exc)
            self._failed(slot, source.code_hash, f"routes: {reason}", _version_key(source))
            return
        try:
            await self._swap_in(slot, version)
        except Exception:
            # the table may hold the new routes: give the slot back what it served before
            previous = slot.current
            self.routes.replace(slot.module, previous.routes() if previous is not None else [])
            if slot.current is not version:
                await self._close(version)
            raise

    async def _load_isolated(self, slot: PluginSlot, source: PluginSource) -> PluginVersion | None:
        """Start ``source`` in a process of its own; None (the slot marked failed) if it fails."""
        verb = "reloading" if slot.current else "loading"
        log.info("%s plugin %s in a process of its own (code %s)", verb, slot.module, source.code_hash[:12])
        if self.process_metrics is None:
            self.process_metrics = ProcessMetrics(CollectorRegistry(auto_describe=False))
        logger = plugin_logger(slot.module)
        supervisor = IsolatedPlugin(
            module=slot.module,
            code=source.code,
            origin=source.origin,
            code_hash=source.code_hash,
            settings=source.settings,
            app=self.app,
            isolation=self.isolation,
            metrics=self.process_metrics,
            logger=logger,
            on_quarantine=self.quarantine_process_soon,
            on_change=self._changed_on_its_own,
        )
        try:
            stand_ins = await supervisor.load()
        except ChildLoadError as exc:
            self._failed(slot, source.code_hash, f"{exc.stage}: {exc.message}", _version_key(source))
            return None
        return PluginVersion(
            source, types.ModuleType(slot.module), stand_ins, logger, self.app.router, process=supervisor
        )

    async def _load_in_process(self, slot: PluginSlot, source: PluginSource) -> PluginVersion | None:
        """Load ``source`` into this process; None (the slot marked failed) if it fails."""
        crashed = self.crash_guard.quarantined(slot.module)
        if crashed == source.code_hash:
            self._failed(
                slot,
                source.code_hash,
                "quarantined: the sidecar process exited while loading this version (os._exit, a crash in "
                "C code); fix the code, or send SIGHUP to retry",
                _version_key(source),
            )
            return None
        if crashed is not None:
            self.crash_guard.release(slot.module)  # its code changed
        verb = "reloading" if slot.current else "loading"
        log.info("%s plugin %s (code %s)", verb, slot.module, source.code_hash[:12])
        self.ledger.track(slot.module)  # initialize() and start() run on the loop already
        try:
            with self.crash_guard.loading(slot.module, source.code_hash):
                version = await load_version(
                    source, app=self.app, timeout=self.limits.lifecycle_timeout, leftovers=self.leftovers
                )
        except PluginLoadError as exc:
            self._failed(slot, source.code_hash, str(exc), _version_key(source))
            return None
        return version

    async def _swap_in(self, slot: PluginSlot, version: PluginVersion) -> None:
        """Route table already holds the new routes: move events over, then retire the old."""
        old_version, old_workers = slot.current, slot.workers
        if version.process is None:  # an isolated plugin's module lives in its process
            publish_module(version.module)
        if self.delivery is not None and self.delivery.durable(slot.module, version.source.delivery):
            await self.delivery.prepare(slot.module, version.event_plugins, version.source.delivery)
        workers = [self._worker(slot.module, instance, version) for instance in version.event_plugins]
        for worker in workers:
            worker.start()
            self.bus.subscribe(worker)
        for worker in old_workers:
            self.bus.unsubscribe(worker)
        self.plugin_routes.serve(slot.module, version.background_plugins)
        slot.current, slot.workers = version, workers
        slot.state, slot.failed_hash, slot.failed_key, slot.error = "running", None, None, None
        slot.changed_at = time.time()
        self.ledger.clear_recent(slot.module)  # a new version starts with a full blocking budget
        self.routes.tally.reset(slot.module)
        self.metrics.reloads.labels(slot.module, "success").inc()
        log.info("plugin %s running (code %s)", slot.module, version.source.code_hash[:12])
        if old_version is not None:
            await self._retire(old_version, old_workers)

    def _delivery_unavailable(self, source: PluginSource) -> str | None:
        """Why ``source`` cannot be delivered as its own policy asks (None: it can)."""
        if source.delivery is None or not source.delivery.durable:
            return None
        if self.delivery is None or self.delivery.settings.queue_dir is None:
            return (
                "its spec.delivery asks for at-least-once, but this sidecar has no queue directory "
                "(--queue-dir unset or not writable, see the sidecar's log): give the sidecar one on a "
                "volume, or use at-most-once"
            )
        return None

    def _worker(self, module: str, instance: Any, version: PluginVersion) -> EventWorker | DurableWorker:
        requested = version.source.delivery
        if self.delivery is not None and self.delivery.durable(module, requested):
            return self.delivery.worker(
                module,
                instance,
                timeout=self.limits.callback_timeout,
                logger=version.logger,
                requested=requested,
            )
        return EventWorker(
            module,
            instance,
            capacity=self.limits.queue_items,
            timeout=self.limits.callback_timeout,
            metrics=self.metrics,
            logger=version.logger,
        )

    async def _retire(self, version: PluginVersion, workers: list[EventWorker | DurableWorker]) -> None:
        """Let the old version finish what it had queued (bounded), then close it."""
        self.plugin_routes.retire(version.background_plugins)
        deadline = time.monotonic() + self.limits.callback_timeout
        for worker in workers:
            await worker.drain(deadline)
        # concurrently: each stuck callback costs the grace once, not once per worker
        lost = sum(await asyncio.gather(*(self._stop_worker(worker, version) for worker in workers)))
        if lost:
            version.logger.warning("%d queued batch(es) of the old version were not delivered", lost)
        await self._close(version)

    async def _stop_worker(
        self,
        worker: EventWorker | DurableWorker,
        version: PluginVersion,
        grace: float = CANCEL_GRACE,
        reason: str = "retired",
    ) -> int:
        """Stop ``worker`` (bounded); a callback that ignores the cancellation is reported."""
        lost = await worker.stop(grace, reason=reason)
        if worker.stuck_task is not None:
            self.leftovers.add_task(
                worker.stuck_task,
                plugin=version.source.module,
                code_hash=version.source.code_hash,
                what=f"{worker.class_name}.handleEvent()",
            )
        return lost

    async def _close(self, version: PluginVersion, deadline: float | None = None) -> list[str]:
        self.plugin_routes.retire(version.background_plugins)  # close() adding routes serves nothing
        problems = await close_instances(
            version.instances,
            timeout=self.limits.lifecycle_timeout,
            deadline=deadline,
            logger=version.logger,
            leftovers=self.leftovers,
            source=version.source,
        )
        self.plugin_routes.forget(version.background_plugins)
        return problems

    def _failed(self, slot: PluginSlot, code_hash: str | None, error: str, key: str | None) -> None:
        if slot.current is None:
            slot.state = "failed"
            log.error("plugin %s failed: %s", slot.module, error)
        else:
            log.error(
                "plugin %s: new version failed, version %s keeps running: %s",
                slot.module,
                slot.current.source.code_hash[:12],
                error,
            )
        if (slot.failed_hash, slot.error) != (code_hash, error):
            self.metrics.reloads.labels(slot.module, "failure").inc()
            slot.changed_at = time.time()
        slot.failed_hash, slot.failed_key, slot.error = code_hash, key, error

    async def _unload(self, slot: PluginSlot) -> None:
        log.info("unloading plugin %s", slot.module)
        slot.state = "stopping"
        self.routes.replace(slot.module, [])
        for worker in slot.workers:
            self.bus.unsubscribe(worker)
        if slot.current is not None:
            await self._retire(slot.current, slot.workers)
        forget_module(slot.module)
        self._slots.pop(slot.module, None)
        self.ledger.forget(slot.module)
        self.metrics.forget_plugin(slot.module)
        if self.process_metrics is not None:
            self.process_metrics.forget(slot.module)

    def quarantine_soon(self, module: str, blocked: float) -> None:
        """Quarantine ``module``, which blocked the event loop for ``blocked`` seconds in the
        last minute (called on the loop by the watchdog)."""
        task = asyncio.create_task(self.quarantine(module, blocked), name=f"luna-quarantine-{module}")
        self._quarantines.add(task)
        task.add_done_callback(self._quarantines.discard)

    def quarantine_process_soon(self, module: str, reason: str) -> None:
        """Quarantine ``module``, whose process kept ending (called by its supervisor)."""
        task = asyncio.create_task(
            self._quarantine(module, reason, process_only=True), name=f"luna-quarantine-{module}"
        )
        self._quarantines.add(task)
        task.add_done_callback(self._quarantines.discard)

    async def quarantine(self, module: str, blocked: float) -> None:
        """Unload the running version of ``module`` and mark it failed with the reason; it stays
        failed until its code or settings change, or SIGHUP retries it."""
        reason = (
            f"quarantined: blocked the event loop for {blocked:.1f} s in the last minute "
            "(synchronous work in a callback or route handler); fix the code, or send SIGHUP to retry"
        )
        await self._quarantine(module, reason)

    async def _quarantine(self, module: str, reason: str, *, process_only: bool = False) -> None:
        async with self._lock:
            slot = self._slots.get(module)
            if self._shut_down or slot is None or slot.current is None:
                return  # shut down meanwhile (everything is closed), or unloaded, or not running
            version = slot.current
            if process_only and (version.process is None or version.process.state != "quarantined"):
                return  # a newer version (or an in-process one) runs meanwhile
            log.error("plugin %s %s", module, reason)
            slot.state = "stopping"
            self.routes.replace(module, [])
            for worker in slot.workers:
                self.bus.unsubscribe(worker)
            await self._retire(version, slot.workers)
            forget_module(module)
            slot.current, slot.workers = None, []
            slot.state = "failed"
            slot.failed_hash, slot.failed_key, slot.error = (
                version.source.code_hash,
                _version_key(version.source),
                reason,
            )
            slot.changed_at = time.time()
            self.ledger.clear_recent(module)
            self.metrics.reloads.labels(module, "quarantined").inc()

    async def shutdown(self, deadline: float) -> int:
        """Stop everything by ``deadline`` (monotonic): drain the queues while the time allows
        (half of what is left, at most ``lifecycle_timeout``, is kept for closing), then close
        every plugin, modules concurrently; whatever ignores cancellation is abandoned and
        reported. Returns the number of batches that could not be delivered."""
        await self.packages.close()  # pip, if it runs, is killed
        async with self._lock:
            self._shut_down = True
            slots = list(self._slots.values())
            for slot in slots:
                for worker in slot.workers:
                    self.bus.unsubscribe(worker)
            left = max(0.0, deadline - time.monotonic())
            close_phase = min(self.limits.lifecycle_timeout, left / 2)
            drain_until = deadline - close_phase
            workers = [
                (worker, slot.current)
                for slot in slots
                if slot.current is not None
                for worker in slot.workers
            ]
            await asyncio.gather(*(worker.drain(drain_until) for worker, _ in workers))
            grace = min(CANCEL_GRACE, close_phase / 2)
            losses = await asyncio.gather(
                *(self._stop_worker(worker, version, grace, "shutdown") for worker, version in workers)
            )
            for slot in slots:
                slot.state = "stopping"
                self.routes.replace(slot.module, [])
            # reverse load order to start with; concurrently, so one slow close() delays nobody
            await asyncio.gather(
                *(self._close(slot.current, deadline) for slot in reversed(slots) if slot.current is not None)
            )
            return sum(losses)
