"""Isolated plugins against the same plugins in-process: the issue's figures, side by side.

- **intake**: the no-op monitoring plugin (``bench/plugins/noop_monitoring.py``) in a sidecar of
  its own, in-process and isolated (``--isolate``), fed the same batches in turn; points handled
  per CPU-second of the server, where the isolated server's CPU is the sidecar's plus its plugin
  process's. Score: median over rounds of isolated / in-process (target >= 0.5).
- **route**: ``GET /hello`` of ``bench/plugins/hello_route.py``, in-process and isolated,
  sequential requests on keep-alive connections, the two taking turns in chunks; p50/p99 of each
  and the difference (target: p50 added under 200 us).
- **restart**: the isolated route plugin's process killed (SIGKILL) ``--restarts`` times; the
  time from the kill until the route answers 200 again (this includes the restart delay of 0.5 s).
- **rss**: resident memory of an isolated plugin's process after loading and after the intake.

Usage: ``python bench/isolation_bench.py [--rounds 3] [--requests 4000] [--points 100]``
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import signal
import statistics
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from delivery_bench import batch_body, blast, cpu_seconds, metric, percentile, rss_bytes, spawn, wait_ready


def plugin_process(admin: int, name: str) -> dict[str, object]:
    with urllib.request.urlopen(f"http://127.0.0.1:{admin}/plugins", timeout=5) as reply:
        plugins = {entry["name"]: entry for entry in json.load(reply)["plugins"]}
    process = plugins[name].get("process")
    return process if isinstance(process, dict) else {}


def start(work: Path, active: str, isolated: bool) -> tuple[object, int, str, int]:
    work.mkdir()
    # the bench kills the process on purpose, more often than the quarantine allows
    extra = ["--isolate", active, "--isolated-crash-limit", "1000"] if isolated else []
    process, admin, metrics_url = spawn(work, extra, active)
    wait_ready(work, metrics_url)
    child = int(plugin_process(admin, active).get("pid") or 0) if isolated else 0
    return process, admin, metrics_url, child


def server_cpu(pid: int, child: int) -> float:
    return cpu_seconds(pid) + (cpu_seconds(child) if child else 0.0)


def intake(args: argparse.Namespace, work: Path) -> float:
    body = batch_body(args.points)
    requests = args.requests - args.requests % args.connections
    servers = {
        "in-process": start(work / "intake-here", "noop_monitoring", False),
        "isolated": start(work / "intake-isolated", "noop_monitoring", True),
    }
    child = servers["isolated"][3]
    print(f"isolated plugin process: RSS after loading {rss_bytes(child) / 2**20:.1f} MiB", flush=True)
    ratios = []
    try:
        for number in range(args.rounds):
            score = {}
            order = list(servers.items()) if number % 2 == 0 else list(reversed(servers.items()))
            for name, (process, admin, metrics_url, child) in order:
                handled = metric(metrics_url, "luna_plugin_events_total")
                cpu = server_cpu(process.pid, child)  # type: ignore[attr-defined]
                began = time.monotonic()
                blast(admin, body, requests, args.connections)
                while metric(metrics_url, "luna_plugin_events_total") < handled + requests:
                    time.sleep(0.02)
                used = server_cpu(process.pid, child) - cpu  # type: ignore[attr-defined]
                elapsed = time.monotonic() - began
                score[name] = requests * args.points / used
                print(
                    f"intake round {number + 1} {name}: {requests / elapsed:,.0f} req/s, "
                    f"{score[name]:,.0f} points per CPU-s ({used:.2f} CPU-s)",
                    flush=True,
                )
            ratios.append(score["isolated"] / score["in-process"])
        print(f"isolated plugin process: RSS after the intake {rss_bytes(child) / 2**20:.1f} MiB", flush=True)
    finally:
        for process, *_ in servers.values():
            process.terminate()  # type: ignore[attr-defined]
            process.wait(timeout=30)  # type: ignore[attr-defined]
    median = statistics.median(ratios)
    print(
        f"intake: isolated / in-process points per CPU-s: median {median:.2f} over {len(ratios)} rounds "
        f"({', '.join(f'{ratio:.2f}' for ratio in ratios)}); target >= 0.5",
        flush=True,
    )
    return median


def timed_gets(port: int, count: int) -> list[float]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    times = []
    try:
        for _ in range(count):
            began = time.perf_counter()
            conn.request("GET", "/hello")
            response = conn.getresponse()
            response.read()
            times.append(time.perf_counter() - began)
            if response.status != 200:
                raise SystemExit(f"GET /hello answered {response.status}")
    finally:
        conn.close()
    return times


def route_port(work: Path) -> int:
    log = (work / "sidecar.log").read_text()
    marker = "listening for plugin routes on http://"
    line = next(line for line in log.splitlines() if marker in line)
    return int(line.rsplit(":", 1)[1])


def route(args: argparse.Namespace, work: Path) -> None:
    servers = {
        "in-process": start(work / "route-here", "hello_route", False),
        "isolated": start(work / "route-isolated", "hello_route", True),
    }
    ports = {
        name: route_port(work / ("route-here" if name == "in-process" else "route-isolated"))
        for name in servers
    }
    try:
        for port in ports.values():
            timed_gets(port, 200)  # warm-up
        times: dict[str, list[float]] = {name: [] for name in servers}
        for _ in range(args.route_chunks):
            for name, port in ports.items():
                times[name] += timed_gets(port, args.route_requests // args.route_chunks)
        p50 = {name: statistics.median(values) for name, values in times.items()}
        for name, values in times.items():
            print(
                f"route {name}: {len(values)} requests, p50 {p50[name] * 1e6:.0f} us, "
                f"p99 {percentile(values, 0.99) * 1e6:.0f} us, max {max(values) * 1e6:.0f} us",
                flush=True,
            )
        added50 = (p50["isolated"] - p50["in-process"]) * 1e6
        added99 = (percentile(times["isolated"], 0.99) - percentile(times["in-process"], 0.99)) * 1e6
        print(
            f"route: added by the process boundary p50 {added50:.0f} us, p99 {added99:.0f} us; "
            "target p50 < 200 us"
        )
        restart(args, servers["isolated"], ports["isolated"])
    finally:
        for process, *_ in servers.values():
            process.terminate()  # type: ignore[attr-defined]
            process.wait(timeout=30)  # type: ignore[attr-defined]


def restart(args: argparse.Namespace, server: tuple[object, int, str, int], port: int) -> None:
    """Kill the process ``--restarts`` times; the restart delay doubles per crash in the window,
    so each figure is printed with the delay it had, and the process's own start time."""
    _, admin, _, _ = server
    rows = []
    for number in range(args.restarts):
        pid = int(plugin_process(admin, "hello_route").get("pid") or 0)
        began = time.monotonic()
        os.kill(pid, signal.SIGKILL)
        while True:
            try:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
                conn.request("GET", "/hello")
                response = conn.getresponse()
                response.read()
                conn.close()
                if response.status == 200:
                    break
            except OSError:
                pass
            time.sleep(0.005)
        took = time.monotonic() - began
        start_seconds = float(plugin_process(admin, "hello_route").get("startSeconds") or 0.0)  # type: ignore[arg-type]
        delay = 0.5 * 2**number
        rows.append((took, delay, start_seconds))
        print(
            f"restart {number + 1}: kill to first 200 {took:.2f} s (restart delay {delay:g} s; "
            f"the new process loaded the plugin in {start_seconds:.2f} s)",
            flush=True,
        )
    overheads = [took - delay for took, delay, _ in rows]
    print(
        f"restart: beyond the delay, median {statistics.median(overheads):.2f} s; process start to "
        f"plugin loaded, median {statistics.median(row[2] for row in rows):.2f} s",
        flush=True,
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--requests", type=int, default=4000)
    parser.add_argument("--points", type=int, default=100)
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--route-requests", type=int, default=4000)
    parser.add_argument("--route-chunks", type=int, default=8)
    parser.add_argument("--restarts", type=int, default=4)
    args = parser.parse_args()
    print(f"cpus: {os.cpu_count()}; python {sys.version.split()[0]}", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        median = intake(args, work)
        route(args, work)
    return 0 if median >= 0.5 else 1


if __name__ == "__main__":
    sys.exit(main())
