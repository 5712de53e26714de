"""The admin intake's CPU per batch in process, stage by stage: no sockets, no other process.

The benchmark's own body is fed to the admin listener's connection protocol (llhttp, the intake,
the metrics, a started worker of the no-op monitoring plugin, which gets every batch at once),
and its stages are timed on their own: decoding (msgspec and the read-only tags and fields), the
metrics' ``observe``, publishing (the metrics and the hand-over to the plugin, with its walk).
Each figure is the best of several slices of ``time.thread_time``, in microseconds per batch.
Run it against another source tree with ``PYTHONPATH=DIR/sidecar`` to compare the two.

Usage: ``python bench/intake_inprocess.py [--points 100] [--batches 200] [--slices 7]``.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import logging
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry
from run import BENCH, MONITOR, make_body

from luna_sidecar.engine.bus import EventBus
from luna_sidecar.engine.queues import EventWorker
from luna_sidecar.intake.point_decoding import PointDecoder
from luna_sidecar.observability.mapping import PointMetrics
from luna_sidecar.observability.metrics import RuntimeMetrics
from luna_sidecar.serving.admin_http import AdminEndpoints, EventIntake
from luna_sidecar.serving.admin_server import AdminServer
from luna_sidecar.serving.http_server import _Connection, refused_counter


class _Sink:
    """A transport that takes the replies and drops them."""

    def write(self, data: bytes) -> None:
        pass

    def is_closing(self) -> bool:
        return False

    def close(self) -> None:
        pass

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return default


def best_of(action: Callable[[], object], batches: int, slices: int) -> float:
    """Microseconds of this thread's CPU per call of ``action``: the best of ``slices`` slices."""
    found = []
    for _ in range(slices):
        started = time.thread_time()
        for _ in range(batches):
            action()
        found.append((time.thread_time() - started) / batches * 1e6)
    return min(found)


def load_plugin() -> Any:
    """The benchmark's no-op monitoring plugin, constructed."""
    spec = importlib.util.spec_from_file_location(MONITOR, BENCH / "plugins" / f"{MONITOR}.py")
    if spec is None or spec.loader is None:
        raise SystemExit(f"cannot load {MONITOR}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.NoopMonitoring(None)


def measure(points: int, batches: int, slices: int) -> dict[str, float]:
    """Each stage's microseconds per batch (see the module's docstring); runs its own loop."""
    body = make_body(points)
    request = (
        b"POST /events/monitoring_event HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\n\r\n" % len(body)
    ) + body

    async def inside_loop() -> dict[str, float]:
        runtime = RuntimeMetrics(CollectorRegistry())
        metrics = PointMetrics(
            overflow_counter=runtime.label_overflow, error_counter=runtime.point_errors, max_label_sets=1000
        )
        bus = EventBus(metrics)
        plugin = load_plugin()
        worker = EventWorker(
            MONITOR, plugin, capacity=100_000, timeout=5.0, metrics=runtime, logger=logging.getLogger("bench")
        )
        worker.start()
        bus.subscribe(worker)
        await asyncio.sleep(0)  # the worker waits for its first batch
        intake = EventIntake(bus=bus, metrics=runtime, max_body_bytes=8 << 20, max_items=10_000)
        server = AdminServer(AdminEndpoints(intake, dict), refused=refused_counter(None))
        server.loop = asyncio.get_running_loop()
        protocol = _Connection(server)
        protocol.connection_made(_Sink())  # type: ignore[arg-type]
        decoder = PointDecoder(max_items=10_000)
        decoded = decoder.decode(body)
        result: asyncio.Future[dict[str, float]] = server.loop.create_future()

        def stages() -> None:
            # from a plain callback, as a protocol runs: the worker starts each callback at once
            found = {
                "whole path": best_of(lambda: protocol.data_received(request), batches, slices),
                "decode": best_of(lambda: decoder.decode(body), batches, slices),
                "observe": best_of(lambda: metrics.observe(decoded), batches, slices),
                "publish": best_of(
                    lambda: bus.publish_points(decoded, body_bytes=len(body)), batches, slices
                ),
            }
            if worker.handled != 2 * batches * slices or plugin.seen != worker.handled * points:
                raise SystemExit(f"the plugin did not get every batch: {worker.handled} handled")
            result.set_result(found)

        server.loop.call_soon(stages)
        return await result

    return asyncio.run(inside_loop())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--points", type=int, default=100, help="points per batch (default 100)")
    parser.add_argument("--batches", type=int, default=200, help="batches per slice (default 200)")
    parser.add_argument("--slices", type=int, default=7, help="slices per stage, the best counts (default 7)")
    args = parser.parse_args(argv)
    import luna_sidecar

    print(f"luna_sidecar from {Path(luna_sidecar.__file__).parent}; {args.points}-point batches")
    for stage, micros in measure(args.points, args.batches, args.slices).items():
        print(f"{stage:>11}: {micros:7.1f} us per batch")
    return 0


if __name__ == "__main__":
    sys.exit(main())
