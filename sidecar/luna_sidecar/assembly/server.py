"""The sidecar process: three listeners, the runtime, change detection and signals.

Start-up: metrics listener first (so probes answer), then admin and routes, the loop watchdog,
then the first sync; ready once that sync is done; then the feed's tasks run, supervised.
SIGTERM/SIGINT: not ready, stop intake and routes, drain the queues and close every plugin by
the shutdown deadline, exit 0. SIGHUP: re-read and retry.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import signal
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path

from prometheus_client import CollectorRegistry, Gauge, disable_created_metrics

from luna_plugins.application import LunaApplication
from luna_plugins.compat import install_log_alias
from luna_sidecar.assembly.feeds import ClusterFeed, DirectoryFeed, Feed, StartupError
from luna_sidecar.config import SidecarConfig, delivery_policy
from luna_sidecar.delivery import DeliveryService, DeliverySettings
from luna_sidecar.engine import EventBus, PackageSettings, PointBuffer, RouteTable, Runtime, RuntimeLimits
from luna_sidecar.isolation import BlockLedger, Containment, CrashGuard, Leftovers, LoopWatchdog, Supervisor
from luna_sidecar.observability import (
    LeftoverCollector,
    MappingError,
    PluginStateCollector,
    PointMetrics,
    RuntimeMetrics,
    exposed_label,
    load_rules,
    watch_loop_lag,
)
from luna_sidecar.process import IsolationSettings, ProcessLimits, ProcessMetrics
from luna_sidecar.serving import (
    SHUTTING_DOWN,
    STARTING,
    AdminEndpoints,
    AdminServer,
    EventIntake,
    HealthServer,
    HttpServer,
    ListenerLimits,
    PublicServer,
    RouteDispatcher,
    probe_limits,
    refused_counter,
)

log = logging.getLogger("luna.sidecar")


@dataclass
class Sidecar:
    """The wired-up components of one sidecar (also what tests poke at in-process)."""

    config: SidecarConfig
    registry: CollectorRegistry
    metrics: RuntimeMetrics
    runtime: Runtime
    intake: EventIntake
    dispatcher: RouteDispatcher
    points: PointBuffer
    watchdog: LoopWatchdog
    ready: bool = False
    stopping: bool = False
    problems: Callable[[], list[str]] = field(default=list)
    """What is wrong with the desired state now (set once the feed exists)."""

    def describe(self) -> dict[str, object]:
        """``GET /plugins``: every plugin, plus abandoned plugin work and desired-state problems."""
        return {
            "service": self.config.service,
            "ready": self.ready,
            "plugins": self.runtime.describe(),
            "stuck": [entry.describe() for entry in self.runtime.leftovers.entries()],
            "problems": self.problems(),
            "packages": self.runtime.packages.describe(),
        }


#: seconds a listener waits for requests still in flight when it closes, at the very end of a
#: shutdown (they had the whole drain before); a handler ignoring cancellation is not waited for
LISTENER_SHUTDOWN_TIMEOUT = 0.5

#: first-generation threshold: queued points are many short-lived objects; the default (700)
#: makes the collector run for every few batches
GC_GEN0_THRESHOLD = 20_000


def tune_garbage_collector() -> None:
    """Move what start-up made (modules, plugins) out of the collector's sight and let the
    first generation grow before collecting."""
    gc.collect()
    gc.freeze()
    _, gen1, gen2 = gc.get_threshold()
    gc.set_threshold(GC_GEN0_THRESHOLD, gen1, gen2)


def build_sidecar(config: SidecarConfig) -> Sidecar:
    """Create every component from ``config``; raises :class:`StartupError` for a bad mapping file."""
    disable_created_metrics()  # type: ignore[no-untyped-call]  # *_created series only double the scrape
    registry = CollectorRegistry(auto_describe=False)
    metrics = RuntimeMetrics(registry)
    # the pod's service, which the runtime's per-plugin series do not carry: the chart's alerts
    # and dashboard join on (namespace, pod) to count a plugin's trouble per service, not per pod
    Gauge(
        "luna_sidecar_info",
        "Always 1; its label is the service whose plugins this sidecar runs.",
        [exposed_label("service")],
        registry=registry,
    ).labels(config.service).set(1)
    try:
        rules = load_rules(config.metrics_mapping) if config.metrics_mapping is not None else []
        point_metrics = PointMetrics(
            overflow_counter=metrics.label_overflow,
            error_counter=metrics.point_errors,
            max_label_sets=config.max_label_sets,
            rules=rules,
        )
    except MappingError as exc:
        raise StartupError(str(exc)) from None
    registry.register(point_metrics)
    bus = EventBus(point_metrics)
    routes = RouteTable()
    app = LunaApplication(config.service, logger=logging.getLogger("luna.plugins"))
    limits = RuntimeLimits(
        queue_items=config.queue_items,
        callback_timeout=config.callback_timeout,
        lifecycle_timeout=config.lifecycle_timeout,
    )
    leftovers = Leftovers()
    ledger = BlockLedger(metrics)
    packages = PackageSettings(
        root=config.packages_dir,
        index_url=config.packages_index_url,
        extra_index_urls=config.packages_extra_index_urls,
        find_links=config.packages_find_links,
        ca_file=config.packages_ca_file,
        trusted_hosts=config.packages_trusted_hosts,
        timeout=config.packages_timeout,
        require_hashes=config.packages_require_hashes,
        max_bytes=config.packages_max_bytes,
    )
    delivery = _delivery(config, metrics, registry)
    isolation = IsolationSettings(
        limits=ProcessLimits(
            memory_bytes=config.isolated_memory,
            stall_seconds=config.isolated_stall_timeout,
            open_files=config.isolated_open_files,
            processes=config.isolated_processes,
            crash_limit=config.isolated_crash_limit,
        ),
        service=config.service,
        callback_timeout=config.callback_timeout,
        route_timeout=config.route_timeout,
        lifecycle_timeout=config.lifecycle_timeout,
        # the plugins' folder holds every plugin's settings file; the settings Secret every plugin's values
        hidden=tuple(
            str(path) for path in (config.plugins_dir, config.secret_settings_dir) if path is not None
        ),
    )
    runtime = Runtime(
        isolation=isolation,
        process_metrics=ProcessMetrics(registry),
        app=app,
        delivery=delivery,
        bus=bus,
        routes=routes,
        metrics=metrics,
        limits=limits,
        leftovers=leftovers,
        ledger=ledger,
        packages=packages,
        crash_guard=CrashGuard(
            config.state_dir or Path(tempfile.gettempdir()) / f"luna-sidecar-{config.service}-{config.port}"
        ),
    )
    watchdog = LoopWatchdog(
        threshold=config.loop_block_threshold,
        ledger=ledger,
        metrics=metrics,
        budget=config.loop_block_budget,
        over_budget=runtime.quarantine_soon,
    )
    registry.register(PluginStateCollector(runtime.snapshot))
    registry.register(LeftoverCollector(leftovers.counts))
    points = PointBuffer(bus)
    dispatcher = RouteDispatcher(
        max_body_bytes=config.max_body_bytes,
        routes=routes,
        points=points,
        metrics=metrics,
        service=config.service,
        timeout=config.route_timeout,
        leftovers=leftovers,
    )
    metrics.on_forget(dispatcher.forget_plugin)
    intake = EventIntake(
        bus=bus, metrics=metrics, max_body_bytes=config.max_body_bytes, max_items=config.max_batch_items
    )
    return Sidecar(config, registry, metrics, runtime, intake, dispatcher, points, watchdog)


def _delivery(
    config: SidecarConfig, metrics: RuntimeMetrics, registry: CollectorRegistry
) -> DeliveryService | None:
    """The durable queues, whenever there is a queue directory (a plugin's ``spec.delivery`` may
    ask for at-least-once under an at-most-once default). The directory must be writable: with
    an at-least-once default the start fails otherwise; with at-most-once it is logged, and the
    plugins asking for at-least-once fail to load, saying so."""
    policy = delivery_policy(config)
    if config.queue_dir is None:
        return None
    probe = config.queue_dir / ".luna-write-check"
    try:
        config.queue_dir.mkdir(parents=True, exist_ok=True)
        probe.write_bytes(b"ok")
        probe.unlink()
    except OSError as exc:
        problem = (
            f"--queue-dir {config.queue_dir}: cannot write the durable queues there: {exc.strerror or exc}"
        )
        if policy.durable:
            raise StartupError(problem) from None
        log.error("%s; plugins asking for at-least-once delivery will not load", problem)
        return None
    return DeliveryService(DeliverySettings(config.queue_dir, policy), metrics=metrics, registry=registry)


@contextlib.asynccontextmanager
async def _serving(server: HttpServer, host: str, port: int, what: str) -> AsyncIterator[None]:
    try:
        await server.start(host, port)
    except OSError as exc:
        raise StartupError(f"cannot listen for {what} on {host}:{port}: {exc.strerror or exc}") from None
    log.info("listening for %s on http://%s:%d", what, host, port)
    try:
        yield
    finally:
        await server.close(LISTENER_SHUTDOWN_TIMEOUT)


def listener_limits(config: SidecarConfig) -> ListenerLimits:
    """The limits the route and admin listeners apply, from the settings (the metrics listener
    has its own, :func:`luna_sidecar.serving.health_http.probe_limits`)."""
    return ListenerLimits(
        max_body_bytes=config.max_body_bytes,
        max_connections=config.max_connections,
        max_in_flight=config.max_requests_in_flight,
        header_timeout=config.header_timeout,
        request_timeout=config.request_read_timeout,
    )


async def serve(config: SidecarConfig, *, stop: asyncio.Event | None = None) -> int:
    """Run the sidecar until ``stop`` is set or SIGTERM/SIGINT arrives; returns the exit code."""
    install_log_alias()
    sidecar = build_sidecar(config)
    sidecar.intake.refusing = STARTING  # until the first sync has loaded the plugins
    feed: Feed = (
        ClusterFeed(config, sidecar.runtime, sidecar)
        if config.namespace
        else DirectoryFeed(config, sidecar.runtime)
    )
    sidecar.problems = feed.problems
    problems = Gauge(
        "luna_desired_state_problems",
        "Problems with the desired state (e.g. an unusable active list) being ignored now; see GET /plugins.",
        registry=sidecar.registry,
    )
    problems.set_function(lambda: len(feed.problems()))
    supervisors: list[Supervisor] = []
    stop = stop or asyncio.Event()
    containment = Containment(sidecar.metrics, lambda: sidecar.runtime.ledger.plugins)
    containment.arm({signal.SIGTERM: stop.set, signal.SIGINT: stop.set, signal.SIGHUP: feed.request_reload})

    def live() -> tuple[bool, str]:
        for check in (feed.live, *(supervisor.live for supervisor in supervisors)):
            ok, reason = check()
            if not ok:
                return ok, reason
        return True, "ok"

    def ready() -> tuple[bool, str]:
        if sidecar.stopping:
            return False, "shutting down"
        return (True, "ready") if sidecar.ready else (False, "first sync of the plugins not done yet")

    refused = refused_counter(sidecar.registry)
    limits = listener_limits(config)
    probes = HealthServer(
        sidecar.registry,
        live=live,
        ready=ready,
        # a probe's request is a few hundred bytes: all of it within the header deadline
        limits=probe_limits(
            max_connections=config.metrics_max_connections,
            header_timeout=config.header_timeout,
            request_timeout=config.header_timeout,
        ),
        refused=refused,
    )
    admin = AdminServer(
        AdminEndpoints(sidecar.intake, sidecar.describe, sidecar.runtime.delivery),
        limits=limits,
        refused=refused,
    )
    public = PublicServer(sidecar.dispatcher, limits=limits, refused=refused)
    tasks: list[asyncio.Task[None]] = []
    try:
        async with contextlib.AsyncExitStack() as stack:
            await stack.enter_async_context(
                _serving(probes, config.metrics_host, config.metrics_port, "metrics and probes")
            )
            await stack.enter_async_context(
                _serving(admin, config.admin_host, config.admin_port, "event intake and /plugins")
            )
            await stack.enter_async_context(_serving(public, config.host, config.port, "plugin routes"))
            tasks.append(asyncio.create_task(watch_loop_lag(sidecar.metrics.loop_lag), name="luna-loop-lag"))
            sidecar.watchdog.start()
            stack.callback(sidecar.watchdog.stop)
            first_sync = asyncio.create_task(feed.sync(), name="luna-first-sync")
            await asyncio.wait(
                {first_sync, asyncio.create_task(stop.wait())}, return_when=asyncio.FIRST_COMPLETED
            )
            if first_sync.done():
                first_sync.result()  # a StartupError of the feed surfaces here
                sidecar.ready = True
                sidecar.intake.refusing = None
                log.info("ready: %d plugin(s) active", len(sidecar.runtime.slots))
                tune_garbage_collector()
                for name, run in feed.runners().items():
                    supervisor = Supervisor(
                        name, run, limit=config.api_timeout, restarts=sidecar.metrics.feed_restarts
                    )
                    supervisor.start()
                    supervisors.append(supervisor)
                await stop.wait()
            else:
                first_sync.cancel()
            started = time.monotonic()
            deadline = started + config.shutdown_timeout
            log.info("shutting down: intake closed, draining event queues")
            sidecar.stopping = True
            sidecar.intake.refusing = SHUTTING_DOWN
            sidecar.dispatcher.accepting = False
            await asyncio.gather(*(supervisor.stop() for supervisor in supervisors))
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            sidecar.points.flush()
            lost = await sidecar.runtime.shutdown(deadline)
            if lost:
                log.warning("shutdown deadline passed: %d queued event batch(es) were not delivered", lost)
            if sidecar.runtime.delivery is not None:
                await sidecar.runtime.delivery.close()  # every cursor on disk
            for entry in sidecar.runtime.leftovers.entries():
                log.warning("plugin %s: %s still runs at exit; abandoned", entry.plugin, entry.what)
            await feed.close()
            log.info("all plugins closed in %.1f s; bye", time.monotonic() - started)
    finally:
        containment.disarm()
    return 0
