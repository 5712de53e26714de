"""At-least-once against at-most-once delivery: intake throughput per sidecar CPU-second.

Two sidecars run side by side, each with the no-op monitoring plugin
(``bench/plugins/noop_monitoring.py``): one at-most-once (the default), one at-least-once with a
durable queue in a temporary directory. Each round sends the same monitoring batches (``--points``
points each) to both, in turn, over ``--connections`` keep-alive connections, waits until the
plugin handled every one, and divides the points handled by the CPU seconds the sidecar process
used. The score is the median over rounds of at-least-once / at-most-once (target >= 0.5).

Usage: ``python bench/delivery_bench.py [--rounds 3] [--requests 4000] [--points 100]``
"""

from __future__ import annotations

import argparse
import http.client
import json
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


def metric(url: str, name: str) -> float:
    text = urllib.request.urlopen(url + "/metrics", timeout=10).read().decode()
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name + "{"))


def start(workdir: Path, extra: list[str]) -> tuple[subprocess.Popen[bytes], int, str]:
    admin, metrics_port = free_port(), free_port()
    script = Path(sys.executable).with_name("luna-plugins")
    command = [
        str(script),
        "sidecar",
        "--plugins-dir",
        str(PLUGINS),
        "--active",
        "noop_monitoring",
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
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    metrics_url = f"http://127.0.0.1:{metrics_port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if urllib.request.urlopen(metrics_url + "/readyz", timeout=1).status == 200:
                return process, admin, metrics_url
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"sidecar did not start: {(workdir / 'sidecar.log').read_text()[-2000:]}")


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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--requests", type=int, default=4000)
    parser.add_argument("--points", type=int, default=100)
    parser.add_argument("--connections", type=int, default=16)
    args = parser.parse_args()
    points = [
        {
            "series": "requests",
            "eventTime": 1.7e9 + i,
            "tags": {"route": "/x", "status_code": 200},
            "fields": {"v": i},
        }
        for i in range(args.points)
    ]
    body = json.dumps({"points": points}).encode()
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


if __name__ == "__main__":
    sys.exit(main())
