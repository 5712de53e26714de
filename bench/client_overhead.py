"""What the service-side client (luna_plugins.client) costs the service.

1. ``add``: CPU per ``SidecarSender.add_point`` call (the check, the copy, the backlog): the
   caller's cost per point, amortised (garbage collection included). Target: at most 2 us.
   Measured twice: while the sender delivers to a real sidecar (``luna-plugins sidecar`` with one
   no-op monitoring plugin), points added in bursts of 1,000 no faster than it delivers (the
   backlog stays small, as at a service's request rate); and with no sidecar, the backlog filling
   up to ``--points`` (the garbage collector then walks what the backlog holds).
2. ``send``: CPU of this process per point delivered to the real sidecar: adding plus encoding
   the batches plus the HTTP client, amortised over every point; the sidecar's CPU not counted.
3. ``latency``: a small aiohttp service (``bench/service_app.py``) with and without
   ``monitoring_middleware`` (sending to the sidecar), under ``wrk``: requests per second and
   latency percentiles; the rounds alternate between the two variants.

Usage: ``python bench/client_overhead.py [--points 200000] [--rounds 5] [--duration 5]``.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

from run import (
    BENCH,
    WRK_DONE,
    BenchError,
    Processes,
    WrkResult,
    cpu_seconds,
    ensure_wrk,
    free_ports,
    http_get,
    plan_pinning,
    run_wrk,
    sidecar_command,
    wait_until,
)

from luna_plugins.client import SenderSettings, SidecarSender

TAGS = {"service": "handlers", "route": "POST:/6/handlers/{id}/events", "status_code": 201}


def fields(n: int) -> dict[str, object]:
    return {"request_id": f"1700000000,{n:032x}", "execution_time": 0.0123}


def measure_add(points: int, rounds: int) -> list[float]:
    """us per add_point with no sidecar (the backlog grows to ``points``), per round."""
    results = []
    for _ in range(rounds):
        sender = SidecarSender("http://127.0.0.1:9", settings=SenderSettings(max_points=points))
        prepared = [fields(n) for n in range(points)]
        started = time.process_time()
        for n in range(points):
            sender.add_point("requests", TAGS, prepared[n], event_time=1_700_000_000.0)
        results.append((time.process_time() - started) / points * 1e6)
    return results


async def measure_send(admin: str, points: int) -> tuple[float, float, int, int]:
    """(CPU us per add_point, CPU us of this process per point delivered, sent, dropped)."""
    prepared = [fields(n) for n in range(points)]
    adding = 0.0
    async with SidecarSender(admin, settings=SenderSettings(max_points=points)) as sender:
        started = time.process_time()
        for burst in range(0, points, 1_000):
            burst_started = time.process_time()
            for n in range(burst, min(burst + 1_000, points)):
                sender.add_point("requests", TAGS, prepared[n])
            adding += time.process_time() - burst_started
            # A service adds points at its request rate, far below what the sender delivers, so
            # the backlog stays small; a producer running flat out would measure the outage case
            # (the backlog grows and the garbage collector walks it), which is the first figure.
            if not await sender.flush(timeout=120):  # one batch of 1,000 per burst
                raise BenchError("the sidecar did not take the points within 120 s")
        cpu = time.process_time() - started
        stats = sender.stats()
    sent = max(stats.points_sent, 1)
    return adding / points * 1e6, cpu / sent * 1e6, stats.points_sent, stats.points_dropped


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--points", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per wrk run")
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--no-pin", action="store_true", help="do not pin wrk and the servers to CPUs")
    parser.add_argument("--profile-sidecar", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()

    adds = measure_add(args.points, args.rounds)
    rounds = ", ".join(f"{a:.2f}" for a in adds)
    print(
        f"add_point, no sidecar: {statistics.median(adds):.2f} us per point, best round "
        f"{min(adds):.2f} (CPU time; {args.rounds} rounds of {args.points:,}: {rounds})",
        flush=True,
    )

    wrk = ensure_wrk()
    pin = plan_pinning(not args.no_pin)
    processes = Processes()
    logs = Path(tempfile.mkdtemp(prefix="luna-client-bench-"))
    try:
        public, admin, metrics, plain, monitored = free_ports(5)
        ports = {"public": public, "admin": admin, "metrics": metrics}
        processes.start("sidecar", [*pin.server, *sidecar_command(args, ports)], logs / "sidecar.log")
        wait_until(
            "the sidecar", lambda: http_get(f"http://127.0.0.1:{metrics}/readyz")[0] == 200, processes, 60
        )
        admin_url = f"http://127.0.0.1:{admin}"
        sends = [asyncio.run(measure_send(admin_url, args.points)) for _ in range(args.rounds)]
        add_running = statistics.median(result[0] for result in sends)
        per_point = statistics.median(result[1] for result in sends)
        sent, dropped = sum(result[2] for result in sends), sum(result[3] for result in sends)
        print(f"add_point while sending: {add_running:.2f} us per point (median of {args.rounds} rounds)")
        print(
            f"send: {per_point:.2f} us of the service's CPU per point delivered ({sent:,} sent, {dropped} "
            "dropped; adding + encoding + HTTP client)",
            flush=True,
        )

        app = [sys.executable, str(BENCH / "service_app.py")]
        pids: dict[str, int] = {}
        pids["without"] = processes.start(
            "plain", [*pin.server, *app, str(plain), "--sidecar", admin_url], logs / "plain.log"
        ).pid
        pids["with"] = processes.start(
            "monitored",
            [*pin.server, *app, str(monitored), "--sidecar", admin_url, "--middleware"],
            logs / "monitored.log",
        ).pid
        for port in (plain, monitored):
            wait_until(
                "the service",
                lambda port=port: http_get(f"http://127.0.0.1:{port}/stats")[0] == 200,
                processes,
                30,
            )
        script = logs / "get.lua"
        script.write_text(WRK_DONE)
        runs: dict[str, list[WrkResult]] = {"without": [], "with": []}
        cpu_per_request: dict[str, list[float]] = {"without": [], "with": []}
        for round_ in range(args.rounds):
            order = [("without", plain), ("with", monitored)]
            for name, port in order if round_ % 2 == 0 else reversed(order):
                url = f"http://127.0.0.1:{port}/6/handlers/0b3b6b1c"
                before = cpu_seconds(pids[name])
                result = run_wrk(wrk, pin, args, url, script, args.duration)
                runs[name].append(result)
                spent = cpu_seconds(pids[name]) - before
                cpu_per_request[name].append(spent / max(result.requests, 1) * 1e6)
                processes.check_alive()
        print(
            f"latency ({pin.note}; wrk -t{args.threads} -c{args.connections}, {args.rounds} x "
            f"{args.duration:g} s each):"
        )
        for name, results in runs.items():
            rate = statistics.median(r.requests / r.seconds for r in results)
            p50 = statistics.median(r.p50_ms for r in results)
            p99 = statistics.median(r.p99_ms for r in results)
            errors = sum(r.errors + r.non_2xx for r in results)
            cpu = statistics.median(cpu_per_request[name])
            print(
                f"  {name:7} middleware: {rate:,.0f} req/s, p50 {p50:.2f} ms, p99 {p99:.2f} ms, "
                f"{cpu:.1f} us of the service's CPU per request, {errors} errors"
            )
        _, body = http_get(f"http://127.0.0.1:{monitored}/stats")
        print(f"  the monitored service's sender: {body.decode()}")
    except BenchError as exc:
        print(f"client_overhead: {exc}", file=sys.stderr)
        return 1
    finally:
        processes.stop_all()
    return 0


if __name__ == "__main__":
    sys.exit(main())
