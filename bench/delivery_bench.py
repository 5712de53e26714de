"""At-least-once against at-most-once delivery: intake throughput per sidecar CPU-second.

Two sidecars run side by side, each with the no-op monitoring plugin
(``bench/plugins/noop_monitoring.py``): one at-most-once (the default), one at-least-once with a
durable queue in a temporary directory. Each round sends the same monitoring batches (``--points``
points each) to both, in turn, over ``--connections`` keep-alive connections, waits until the
plugin handled every one, and divides the points handled by the CPU seconds the sidecar process
used. The score is the median over rounds of at-least-once / at-most-once (target >= 0.5).

``--latency`` measures instead the time to the intake's 202 answer, at-least-once (on disk, group
fsync) against at-most-once, on the same two sidecars: ``--latency-requests`` sequential requests
per keep-alive connection over ``--latency-connections`` connections, the modes taking turns in
chunks so both see the same load of the machine. It prints p50/p90/p99/max per mode.

``--backlog-mib N`` measures the recovery of a backlog of at least N MiB: a sidecar with an
at-least-once queue and ``bench/plugins/gated_monitoring.py`` (which fails until a marker file
exists) is filled with batches of ``--backlog-points`` points, stopped (SIGTERM), the segment
files are read once after dropping them from the page cache (the disk's sequential read speed),
dropped from the cache again, the marker file is created and the sidecar is started again on
the same queue directory. It prints the time to deliver the whole backlog, the MiB/s of segment
data delivered, the sidecar's CPU seconds, its RSS sampled every 0.5 s (min/median/max), how
fast it answered ``/healthz`` meanwhile and the event loop stalls its watchdog logged.

Usage: ``python bench/delivery_bench.py [--rounds 3] [--requests 4000] [--points 100]``,
``python bench/delivery_bench.py --latency``, ``python bench/delivery_bench.py --backlog-mib 1024``
"""

from __future__ import annotations

import argparse
import http.client
import json
import logging
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PLUGINS = ROOT / "bench" / "plugins"


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def metric(url: str, name: str, label: str = "") -> float:
    """Sum of the samples of ``name``; only those whose labels contain ``label`` if given."""
    text = urllib.request.urlopen(url + "/metrics", timeout=10).read().decode()
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith(name + "{") and label in line
    )


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def spawn(
    workdir: Path,
    extra: list[str],
    active: str = "noop_monitoring",
    env: dict[str, str] | None = None,
) -> tuple[subprocess.Popen[bytes], int, str]:
    admin, metrics_port = free_port(), free_port()
    script = Path(sys.executable).with_name("luna-plugins")
    command = [
        str(script),
        "sidecar",
        "--plugins-dir",
        str(PLUGINS),
        "--active",
        active,
        "--port",
        str(free_port()),
        "--admin-port",
        str(admin),
        "--metrics-host",
        "127.0.0.1",
        "--metrics-port",
        str(metrics_port),
        "--state-dir",
        str(workdir / "state"),
        *extra,
    ]
    log = (workdir / "sidecar.log").open("wb")
    process = subprocess.Popen(
        command, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})}
    )
    return process, admin, f"http://127.0.0.1:{metrics_port}"


def wait_ready(workdir: Path, metrics_url: str, within: float = 60) -> None:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            if urllib.request.urlopen(metrics_url + "/readyz", timeout=1).status == 200:
                return
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"sidecar did not start: {(workdir / 'sidecar.log').read_text()[-2000:]}")


def start(
    workdir: Path,
    extra: list[str],
    active: str = "noop_monitoring",
    env: dict[str, str] | None = None,
) -> tuple[subprocess.Popen[bytes], int, str]:
    process, admin, metrics_url = spawn(workdir, extra, active, env)
    wait_ready(workdir, metrics_url)
    return process, admin, metrics_url


def blast(port: int, body: bytes, requests: int, connections: int) -> None:
    per = requests // connections
    failures: list[str] = []

    def one() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        for _ in range(per):
            conn.request("POST", "/events/monitoring_event", body, {"Content-Type": "application/json"})
            response = conn.getresponse()
            response.read()
            if response.status != 202:
                failures.append(str(response.status))
        conn.close()

    threads = [threading.Thread(target=one) for _ in range(connections)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if failures:
        raise SystemExit(f"{len(failures)} requests failed: {failures[:5]}")


def batch_body(count: int) -> bytes:
    points = [
        {
            "series": "requests",
            "eventTime": 1.7e9 + i,
            "tags": {"route": "/x", "status_code": 200},
            "fields": {"v": i},
        }
        for i in range(count)
    ]
    return json.dumps({"points": points}).encode()


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def throughput(args: argparse.Namespace) -> int:
    body = batch_body(args.points)
    requests = args.requests - args.requests % args.connections
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        (work / "amo").mkdir()
        (work / "alo").mkdir()
        servers = {
            "at-most-once": start(work / "amo", []),
            "at-least-once": start(
                work / "alo", ["--delivery", "at-least-once", "--queue-dir", str(work / "q")]
            ),
        }
        ratios = []
        try:
            for number in range(args.rounds):
                score = {}
                for name, (process, admin, metrics_url) in servers.items():
                    handled = metric(metrics_url, "luna_plugin_events_total")
                    cpu = cpu_seconds(process.pid)
                    began = time.monotonic()
                    blast(admin, body, requests, args.connections)
                    target = handled + requests
                    while metric(metrics_url, "luna_plugin_events_total") < target:
                        time.sleep(0.05)
                    used = cpu_seconds(process.pid) - cpu
                    elapsed = time.monotonic() - began
                    score[name] = requests * args.points / used
                    print(
                        f"round {number + 1} {name}: {requests / elapsed:,.0f} req/s, "
                        f"{score[name]:,.0f} points per CPU-s ({used:.2f} CPU-s)",
                        flush=True,
                    )
                ratios.append(score["at-least-once"] / score["at-most-once"])
        finally:
            for process, _, _ in servers.values():
                process.terminate()
                process.wait(timeout=30)
    median = statistics.median(ratios)
    print(
        f"at-least-once / at-most-once points per CPU-s: median {median:.2f} over {len(ratios)} rounds "
        f"({', '.join(f'{ratio:.2f}' for ratio in ratios)}); target >= 0.5"
    )
    return 0 if median >= 0.5 else 1


def timed_requests(port: int, body: bytes, per_connection: int, connections: int) -> list[float]:
    """Seconds to each 202, ``per_connection`` sequential requests on each keep-alive connection."""
    latencies: list[float] = []
    failures: list[str] = []

    def one() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        mine = []
        for _ in range(per_connection):
            began = time.perf_counter()
            conn.request("POST", "/events/monitoring_event", body, {"Content-Type": "application/json"})
            response = conn.getresponse()
            response.read()
            mine.append(time.perf_counter() - began)
            if response.status != 202:
                failures.append(str(response.status))
        conn.close()
        latencies.extend(mine)

    threads = [threading.Thread(target=one) for _ in range(connections)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if failures:
        raise SystemExit(f"{len(failures)} requests failed: {failures[:5]}")
    return latencies


def latency(args: argparse.Namespace) -> int:
    body = batch_body(args.points)
    chunk = 50  # requests per connection before the other mode takes its turn
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        (work / "amo").mkdir()
        (work / "alo").mkdir()
        servers = {
            "at-most-once": start(work / "amo", []),
            "at-least-once": start(
                work / "alo", ["--delivery", "at-least-once", "--queue-dir", str(work / "q")]
            ),
        }
        samples: dict[str, list[float]] = {name: [] for name in servers}
        cpu: dict[str, float] = {}
        try:
            for name, (process, admin, _) in servers.items():  # warm up
                timed_requests(admin, body, 20, args.latency_connections)
                cpu[name] = cpu_seconds(process.pid)
            left = args.latency_requests
            while left > 0:
                turn = min(chunk, left)
                for name, (_, admin, _) in servers.items():
                    samples[name] += timed_requests(admin, body, turn, args.latency_connections)
                left -= turn
            for name, (process, _, _) in servers.items():
                cpu[name] = cpu_seconds(process.pid) - cpu[name]
        finally:
            for process, _, _ in servers.values():
                process.terminate()
                process.wait(timeout=30)
    print(
        f"latency to the 202: {args.latency_requests} sequential requests on each of "
        f"{args.latency_connections} keep-alive connections per mode, {args.points} points "
        f"({len(body):,} bytes) per batch, modes taking turns every {chunk} requests"
    )
    summary: dict[str, dict[str, float]] = {}
    for name, values in samples.items():
        summary[name] = {
            "p50": percentile(values, 0.50),
            "p90": percentile(values, 0.90),
            "p99": percentile(values, 0.99),
            "max": max(values),
        }
        row = ", ".join(f"{key} {value * 1000:.2f} ms" for key, value in summary[name].items())
        print(f"{name}: {len(values)} requests, {row}; sidecar {cpu[name]:.2f} CPU-s", flush=True)
    added = {key: summary["at-least-once"][key] - summary["at-most-once"][key] for key in ("p50", "p99")}
    print(f"added by at-least-once: p50 {added['p50'] * 1000:+.2f} ms, p99 {added['p99'] * 1000:+.2f} ms")
    return 0


def drop_from_cache(files: list[Path]) -> None:
    os.sync()  # dirty pages are not dropped: written back first, the next read comes from the disk
    for path in files:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def read_speed(files: list[Path]) -> tuple[int, float]:
    """Bytes and seconds to read ``files`` once, sequentially, 1 MiB at a time, not from the cache."""
    drop_from_cache(files)
    total = 0
    began = time.monotonic()
    for path in files:
        with path.open("rb", buffering=0) as handle:
            while chunk := handle.read(1 << 20):
                total += len(chunk)
    return total, time.monotonic() - began


def queue_read_speed(segments: list[Path]) -> tuple[float, float]:
    """Seconds the queue's own code takes, from an uncached start, to open (recover) the backlog's
    queue and then to read every record in order with its checks (nothing acknowledged, so the
    queue is left as it was for the drain that follows)."""
    from luna_sidecar.delivery.segments import SegmentLog

    (directory,) = {path.parent for path in segments}
    drop_from_cache(segments)
    segment_log = SegmentLog(directory, segment_bytes=16 << 20, logger=logging.getLogger("bench"))
    began = time.monotonic()
    segment_log.open()
    opened = time.monotonic()
    drop_from_cache(segments)
    read_from = time.monotonic()
    records = 0
    while segment_log.next_record() is not None:
        records += 1
    done = time.monotonic()
    segment_log.close()
    assert records
    return opened - began, done - read_from


def reading(segments: list[Path], rounds: int = 3) -> tuple[float, float, float]:
    """MiB/s, medians over ``rounds`` taking turns, each from an uncached start: the segment files
    read 1 MiB at a time, the queue's start-up scan, the queue's reading of every record."""
    held = sum(path.stat().st_size for path in segments) / (1 << 20)
    raw, scans, replays = [], [], []
    for _ in range(rounds):
        read, seconds = read_speed(segments)
        raw.append(read / (1 << 20) / seconds)
        scan, replay = queue_read_speed(segments)
        scans.append(held / scan)
        replays.append(held / replay)
    return statistics.median(raw), statistics.median(scans), statistics.median(replays)


def backlog(args: argparse.Namespace) -> int:
    body = batch_body(args.backlog_points)
    requests = -(-args.backlog_mib * (1 << 20) // len(body))
    requests += -requests % args.connections
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        (work / "fill").mkdir()
        (work / "drain").mkdir()
        queues = work / "q"
        gate = work / "gate"
        flags = [
            "--delivery",
            "at-least-once",
            "--queue-dir",
            str(queues),
            "--queue-max-bytes",
            str((args.backlog_mib + 64) << 20),
            "--retry-initial-backoff",
            "30",
            "--retry-max-backoff",
            "60",
            "--retry-max-elapsed",
            "0",
            "--max-body-bytes",
            str(max(len(body) * 2, 8 << 20)),
        ]
        env = {"LUNA_BENCH_GATE": str(gate)}
        process, admin, _ = start(work / "fill", flags, active="gated_monitoring", env=env)
        began = time.monotonic()
        try:
            blast(admin, body, requests, args.connections)
        finally:
            process.terminate()
            process.wait(timeout=60)
        fill = time.monotonic() - began
        files = sorted(p for p in queues.rglob("*") if p.is_file())
        segments = [p for p in files if p.suffix == ".seg"]
        on_disk = sum(p.stat().st_size for p in segments)
        print(
            f"filled: {requests:,} batches of {args.backlog_points} points ({len(body):,} bytes), "
            f"{on_disk / (1 << 20):,.0f} MiB in {len(segments)} files, in {fill:.1f} s "
            f"({on_disk / (1 << 20) / fill:.0f} MiB/s)",
            flush=True,
        )
        disk, scan, replay = reading(segments)
        print(
            f"uncached reads, medians of 3 rounds taking turns: the segment files {disk:.0f} MiB/s; the "
            f"queue's start-up scan {scan:.0f} MiB/s ({scan / disk:.2f} of it); the queue reading every "
            f"record in order with its checks {replay:.0f} MiB/s ({replay / disk:.2f})",
            flush=True,
        )
        drop_from_cache(segments)
        gate.touch()
        rss: list[tuple[float, int]] = []  # (seconds since the start, bytes)
        began = time.monotonic()
        process, _, metrics_url = spawn(work / "drain", flags, active="gated_monitoring", env=env)
        stop = threading.Event()

        def sample() -> None:  # from the start: the start-up reads the queue too
            while not stop.is_set():
                rss.append((time.monotonic() - began, rss_bytes(process.pid)))
                stop.wait(0.5)

        answers: list[tuple[float, float]] = []  # (seconds since the start, seconds to answer /healthz)

        def probe() -> None:  # does the sidecar answer its probes while it drains?
            while not stop.is_set():
                sent = time.monotonic()
                try:
                    urllib.request.urlopen(metrics_url + "/healthz", timeout=5).read()
                    answers.append((sent - began, time.monotonic() - sent))
                except OSError:
                    pass
                stop.wait(0.5)

        helpers = [threading.Thread(target=sample), threading.Thread(target=probe)]
        for helper in helpers:
            helper.start()
        try:
            wait_ready(work / "drain", metrics_url, within=600)
            ready = time.monotonic() - began
            while metric(metrics_url, "luna_plugin_events_total", 'outcome="handled"') < requests:
                time.sleep(0.1)
            drained = time.monotonic() - began
            cpu = cpu_seconds(process.pid)
            pending = metric(metrics_url, "luna_plugin_delivery_queue_batches")
        finally:
            stop.set()
            for helper in helpers:
                helper.join()
            process.terminate()
            process.wait(timeout=60)
        log = (work / "drain" / "sidecar.log").read_text()
    blocked = [
        line.split(" blocked for ", 1)[1].split(" s", 1)[0]
        for line in log.splitlines()
        if " blocked for " in line
    ]
    mib = on_disk / (1 << 20)
    print(
        f"recovery: {requests:,} batches ({mib:,.0f} MiB) delivered {drained:.1f} s after the start "
        f"(/readyz 200 after {ready:.1f} s), {mib / drained:.1f} MiB/s = {mib / drained / disk:.2f} of "
        f"the segments' uncached read; sidecar {cpu:.1f} CPU-s; {pending:.0f} batches left"
    )
    # the first second is the interpreter's start and imports, not the queue's
    values = [value for at, value in rss if 1 <= at <= drained] or [rss[-1][1]]
    print(
        f"RSS every 0.5 s from 1 s after the start to drained ({len(values)} samples): "
        f"min {min(values) / (1 << 20):.0f} MiB, median {statistics.median(values) / (1 << 20):.0f} MiB, "
        f"max {max(values) / (1 << 20):.0f} MiB; samples (MiB): "
        + " ".join(f"{value / (1 << 20):.0f}" for value in values),
        flush=True,
    )
    during = [(at, took) for at, took in answers if at <= drained]
    first = f"first answer to a probe sent {during[0][0]:.1f} s after the start" if during else "no answer"
    worst = max((took for _, took in during), default=0.0)
    print(f"/healthz while it drains: {len(during)} answers, {first}, slowest {worst:.2f} s", flush=True)
    print(f"event loop blocked, as the sidecar logged it (s): {', '.join(blocked) or 'never'}", flush=True)
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--requests", type=int, default=4000)
    parser.add_argument("--points", type=int, default=100)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--latency", action="store_true", help="measure the latency to the 202 instead")
    parser.add_argument("--latency-requests", type=int, default=1000, help="per connection and mode")
    parser.add_argument("--latency-connections", type=int, default=4)
    parser.add_argument("--backlog-mib", type=int, default=0, help="measure the recovery of this backlog")
    parser.add_argument("--backlog-points", type=int, default=1000, help="points per batch of the backlog")
    args = parser.parse_args()
    if args.backlog_mib:
        return backlog(args)
    if args.latency:
        return latency(args)
    return throughput(args)


if __name__ == "__main__":
    sys.exit(main())
