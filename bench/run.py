"""Throughput of the sidecar against a bare aiohttp app doing the same HTTP work, with ``wrk``.

Scenarios (each against the sidecar and against ``bench/bare_app.py``):

- ``intake``: ``POST /events/monitoring_event`` with a batch of ``--points`` ``requests`` points;
  the sidecar validates it, records it in the default metrics mapping and queues it to one no-op
  monitoring plugin (``bench/plugins/noop_monitoring.py``); the bare app only parses the JSON.
- ``route``: ``GET /hello``; the sidecar serves it from a plugin route
  (``bench/plugins/hello_route.py``), the bare app from an aiohttp router.

Both servers run side by side; wrk alternates between them round by round (the order rotates
every round), so background load hits both alike. The score of a scenario is the median over
rounds of the paired ratio sidecar/bare (each pair ran back to back). After every sidecar run the
script waits for the plugin queue to drain and reads the sidecar's ``/metrics``, so the figures
say how many points were really handled by the plugin and how many were dropped.

Usage: ``python bench/run.py [--rounds 5] [--duration 10] [--connections 32] [--threads 1]``
(``make bench``). ``--profile-sidecar FILE`` runs the sidecar under cProfile and writes its
profile to FILE on exit (the figures of such a run are not comparable).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
PLUGINS = ("noop_monitoring", "hello_route")
INTAKE_PATH = "/events/monitoring_event"
ROUTE_PATH = "/hello"
TARGETS = {"intake": 0.50, "route": 0.80}
READY_TIMEOUT = 60.0
DRAIN_TIMEOUT = 60.0
QUIET_SECONDS = 0.12

WRK_DONE = r"""
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRK_RESULT {"requests": %.0f, "duration_us": %.0f, "bytes": %.0f, "connect": %.0f, ' ..
    '"read": %.0f, "write": %.0f, "status": %.0f, "timeout": %.0f, "p50_us": %.0f, "p99_us": %.0f}\n',
    summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write, e.status,
    e.timeout, latency:percentile(50), latency:percentile(99)))
end
"""


class BenchError(RuntimeError):
    """The benchmark cannot run or its result cannot be trusted; the message says why."""


# ---------------------------------------------------------------- set-up


def ensure_wrk() -> str:
    """The path of ``wrk``; installs the Debian package when missing and running as root."""
    found = shutil.which("wrk")
    if found:
        return found
    if os.geteuid() == 0 and shutil.which("apt-get"):
        print("wrk is not installed; installing the Debian package (apt-get install -y wrk)", flush=True)
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        for command in (["apt-get", "update"], ["apt-get", "install", "-y", "wrk"]):
            if subprocess.run(command, env=env, timeout=600).returncode != 0:
                raise BenchError(f"{' '.join(command)} failed; install wrk by hand and retry")
        found = shutil.which("wrk")
        if found:
            return found
    raise BenchError(
        "wrk is not installed. Install it (Debian/Ubuntu: sudo apt-get install -y wrk; "
        "macOS: brew install wrk) and run the benchmark again."
    )


def make_body(count: int, seed: int = 7) -> bytes:
    """A monitoring batch of ``count`` ``requests`` points, as the service would send it."""
    rng = random.Random(seed)
    routes = [f"POST:/6/handlers/{name}/events" for name in ("faces", "bodies", "cars", "docs", "pets")]
    routes += ["GET:/6/handlers", "GET:/6/handlers/{handler_id}", "PUT:/6/handlers/{handler_id}"]
    now = 1_700_000_000.0
    points = []
    for index in range(count):
        points.append(
            {
                "series": "requests",
                "eventTime": round(now + index * 0.01, 3),
                "tags": {
                    "service": "handlers",
                    "route": rng.choice(routes),
                    "status_code": rng.choice((200, 200, 200, 200, 201, 400, 404, 500)),
                },
                "fields": {
                    "request_id": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
                    "execution_time": round(rng.lognormvariate(-4.5, 1.0), 6),
                },
            }
        )
    return json.dumps({"points": points}).encode()


def write_scripts(workdir: Path, body: bytes) -> tuple[Path, Path]:
    """wrk Lua scripts: a POST of ``body`` and a plain GET, both reporting as JSON."""
    text = body.decode()
    if "]==]" in text:
        raise BenchError("the generated body cannot be embedded in a Lua long string")
    post = workdir / "post.lua"
    post.write_text(
        'wrk.method = "POST"\n'
        'wrk.headers["Content-Type"] = "application/json"\n'
        f"wrk.body = [==[{text}]==]\n" + WRK_DONE
    )
    get = workdir / "get.lua"
    get.write_text(WRK_DONE)
    return post, get


def free_ports(count: int) -> list[int]:
    """``count`` distinct free TCP ports on 127.0.0.1 (bound together, then released)."""
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind(("127.0.0.1", 0))
            sockets.append(sock)
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


@dataclass(frozen=True)
class Pinning:
    """CPU pinning: wrk on one core, the servers on another (when taskset and 2 cores exist)."""

    wrk: list[str]
    server: list[str]
    note: str


def plan_pinning(enabled: bool) -> Pinning:
    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    taskset = shutil.which("taskset")
    if not enabled:
        return Pinning([], [], "CPU pinning off (--no-pin)")
    if taskset is None:
        return Pinning([], [], "CPU pinning off: taskset not found (Debian package util-linux)")
    if len(cpus) < 2:
        return Pinning([], [], f"CPU pinning off: only {len(cpus)} CPU available")
    wrk_cpu, server_cpu = cpus[0], cpus[-1]
    return Pinning(
        [taskset, "-c", str(wrk_cpu)],
        [taskset, "-c", str(server_cpu)],
        f"pinned with taskset: wrk on CPU {wrk_cpu}, servers on CPU {server_cpu}",
    )


# ---------------------------------------------------------------- processes


class Processes:
    """Started child processes; ``stop_all`` terminates them (then kills) in reverse order."""

    def __init__(self) -> None:
        self.children: list[tuple[str, subprocess.Popen[bytes], Path]] = []

    def start(self, name: str, command: list[str], log: Path) -> subprocess.Popen[bytes]:
        with log.open("wb") as sink:
            child = subprocess.Popen(
                command,
                cwd=ROOT,
                stdin=subprocess.DEVNULL,
                stdout=sink,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # Ctrl-C reaches only us; we stop the children ourselves
            )
        self.children.append((name, child, log))
        return child

    def check_alive(self) -> None:
        for name, child, log in self.children:
            if child.poll() is not None:
                raise BenchError(f"{name} exited with code {child.returncode}:\n{tail(log)}")

    def stop_all(self) -> None:
        for _, child, _ in reversed(self.children):
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 30
        for name, child, _ in reversed(self.children):
            try:
                child.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                print(f"{name} did not stop on SIGTERM; killing it", file=sys.stderr)
                child.kill()
                child.wait()
        self.children.clear()


def tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


# loopback only: never through a proxy from the environment
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def http_get(url: str, timeout: float = 5.0) -> tuple[int, bytes]:
    try:
        with _OPENER.open(url, timeout=timeout) as reply:
            return reply.status, reply.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def http_post(url: str, body: bytes, timeout: float = 5.0) -> tuple[int, bytes]:
    request = urllib.request.Request(
        url, data=body, method="POST", headers={"Content-Type": "application/json"}
    )
    try:
        with _OPENER.open(request, timeout=timeout) as reply:
            return reply.status, reply.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def wait_until(what: str, check: Callable[[], bool], processes: Processes, timeout: float) -> None:
    """Poll ``check`` (connection errors count as not yet) until it holds or ``timeout`` passes."""
    deadline = time.monotonic() + timeout
    delay = 0.02
    while True:
        processes.check_alive()
        try:
            if check():
                return
        except (OSError, ValueError):
            pass
        if time.monotonic() > deadline:
            raise BenchError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(delay)
        delay = min(delay * 1.5, 0.25)


# ---------------------------------------------------------------- sidecar metrics


@dataclass
class Snapshot:
    """The sidecar counters the benchmark checks, read from ``/metrics``."""

    handled: float = 0.0
    dropped: float = 0.0
    failed: float = 0.0
    intake_items: float = 0.0
    intake_ok: float = 0.0
    intake_bad: float = 0.0
    route_requests: float = 0.0
    point_requests: float = 0.0
    queue_depth: float = 0.0

    def minus(self, other: Snapshot) -> Snapshot:
        return Snapshot(**{name: getattr(self, name) - getattr(other, name) for name in vars(self)})


def read_metrics(url: str) -> Snapshot:
    status, body = http_get(url)
    if status != 200:
        raise BenchError(f"{url} answered {status}")
    snap = Snapshot()
    for family in text_string_to_metric_families(body.decode()):
        for sample in family.samples:
            name, labels, value = sample.name, sample.labels, sample.value
            if name == "luna_plugin_events_total" and labels.get("plugin") == "noop_monitoring":
                outcome = labels.get("outcome")
                if outcome == "handled":
                    snap.handled += value
                elif outcome == "dropped":
                    snap.dropped += value
                else:
                    snap.failed += value
            elif name == "luna_intake_items_total" and labels.get("event_name") == "monitoring_event":
                snap.intake_items += value
            elif name == "luna_intake_requests_total":
                if labels.get("status_code") == "202":
                    snap.intake_ok += value
                else:
                    snap.intake_bad += value
            elif name == "luna_plugin_route_requests_total":
                snap.route_requests += value
            elif name == "luna_requests_total":
                snap.point_requests += value
            elif name == "luna_plugin_queue_depth":
                snap.queue_depth += value
    return snap


# ---------------------------------------------------------------- wrk


@dataclass
class WrkResult:
    requests: int
    seconds: float
    errors: int
    non_2xx: int
    p50_ms: float
    p99_ms: float
    server_cpu: float = 0.0  # CPU seconds the server process used for this run (0: unknown)

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    @property
    def per_cpu_second(self) -> float:
        """Requests per CPU second of the server: barely moved by other load on the machine."""
        return self.requests / self.server_cpu if self.server_cpu else 0.0


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` so far (Linux ``/proc``; 0 elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_wrk(
    wrk: str, pin: Pinning, args: argparse.Namespace, url: str, script: Path, duration: float
) -> WrkResult:
    command = [
        *pin.wrk,
        wrk,
        f"-t{args.threads}",
        f"-c{args.connections}",
        f"-d{duration:g}s",
        "--timeout",
        "5s",
        "-s",
        str(script),
        url,
    ]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=duration + 60)
    except subprocess.TimeoutExpired:
        raise BenchError(f"wrk did not finish within {duration + 60:g} s: {' '.join(command)}") from None
    if done.returncode != 0:
        raise BenchError(f"wrk failed ({done.returncode}): {done.stderr.strip() or done.stdout.strip()}")
    for line in done.stdout.splitlines():
        if line.startswith("WRK_RESULT "):
            data = json.loads(line.removeprefix("WRK_RESULT "))
            return WrkResult(
                requests=int(data["requests"]),
                seconds=data["duration_us"] / 1e6,
                errors=int(data["connect"] + data["read"] + data["write"] + data["timeout"]),
                non_2xx=int(data["status"]),
                p50_ms=data["p50_us"] / 1000,
                p99_ms=data["p99_us"] / 1000,
            )
    raise BenchError(f"no result line in wrk's output:\n{done.stdout}\n{done.stderr}")


# ---------------------------------------------------------------- scenarios


@dataclass
class Target:
    """One server's endpoint of a scenario."""

    server: str  # "sidecar" | "bare"
    url: str
    script: Path


@dataclass
class Scenario:
    name: str  # "intake" | "route"
    sidecar: Target
    bare: Target
    runs: dict[str, list[WrkResult]] = field(default_factory=lambda: {"sidecar": [], "bare": []})
    checks: list[Snapshot] = field(default_factory=list)


@dataclass
class Bench:
    args: argparse.Namespace
    wrk: str
    pin: Pinning
    metrics_url: str
    processes: Processes
    scenarios: list[Scenario]
    pids: dict[str, int]

    def drain(self) -> Snapshot:
        """Wait until the plugin queue is empty; returns the counters then."""
        # Two reads at least QUIET_SECONDS apart (more than the PointBuffer's 50 ms delay) that
        # agree, with nothing queued: the runtime's own buffered route points are out too.
        deadline = time.monotonic() + DRAIN_TIMEOUT
        last: Snapshot | None = None
        while True:
            snap = read_metrics(self.metrics_url)
            if snap.queue_depth == 0 and last is not None and snap == last:
                return snap
            if time.monotonic() > deadline:
                raise BenchError(f"the plugin queue did not drain within {DRAIN_TIMEOUT:g} s")
            last = snap
            time.sleep(QUIET_SECONDS)

    def run(self, scenario: Scenario, server: str, duration: float, record: bool) -> WrkResult:
        target = scenario.sidecar if server == "sidecar" else scenario.bare
        before = self.drain() if server == "sidecar" else None
        cpu_before = cpu_seconds(self.pids[server])
        result = run_wrk(self.wrk, self.pin, self.args, target.url, target.script, duration)
        self.processes.check_alive()
        if before is not None:
            # the CPU the sidecar spends on the backlog after wrk stops belongs to this run
            delta = self.drain().minus(before)
            if record:
                scenario.checks.append(delta)
        result.server_cpu = cpu_seconds(self.pids[server]) - cpu_before
        if record:
            scenario.runs[server].append(result)
        return result


def rotated(items: list[Any], shift: int) -> list[Any]:
    shift %= len(items)
    return items[shift:] + items[:shift]


def measure(bench: Bench) -> None:
    args = bench.args
    steps = [(scenario, server) for scenario in bench.scenarios for server in ("sidecar", "bare")]
    if args.warmup > 0:
        print(f"warm-up: {args.warmup:g} s per server and scenario", flush=True)
        for scenario, server in steps:
            bench.run(scenario, server, args.warmup, record=False)
    for number in range(args.rounds):
        # alternate servers within a scenario; rotate the order of the pairs every round
        order = rotated(bench.scenarios, number)
        cells = []
        for scenario in order:
            servers = ("sidecar", "bare") if number % 2 == 0 else ("bare", "sidecar")
            for server in servers:
                result = bench.run(scenario, server, args.duration, record=True)
                cells.append(f"{scenario.name}/{server} {result.rps:,.0f} req/s")
        print(f"round {number + 1}/{args.rounds}: " + "; ".join(cells), flush=True)


# ---------------------------------------------------------------- report


def summarize(bench: Bench) -> tuple[list[dict[str, Any]], bool]:
    """Per scenario: medians, paired ratios and the sidecar's own counters. The intake's score
    counts only points the plugin really handled (accepted points/s x handled/accepted per round),
    so a runtime dropping batches cannot look fast. Returns the rows and whether the counts agree
    (wrk saw no errors and every request wrk completed was counted by the sidecar)."""
    args = bench.args
    rows = []
    consistent = True
    for scenario in bench.scenarios:
        side_runs, bare_runs = scenario.runs["sidecar"], scenario.runs["bare"]
        side = [run.rps for run in side_runs]
        bare = [run.rps for run in bare_runs]
        total = Snapshot()
        for check in scenario.checks:
            total = Snapshot(**{name: getattr(total, name) + getattr(check, name) for name in vars(total)})
        if scenario.name == "intake":
            fractions = [
                min(1.0, check.handled / check.intake_ok) if check.intake_ok else 0.0
                for check in scenario.checks
            ]
            served = total.intake_ok
        else:
            fractions = [1.0 if not check.dropped else 0.0 for check in scenario.checks]
            served = total.route_requests
        delivered = [rps * fraction for rps, fraction in zip(side, fractions, strict=True)]
        pairs = [d / b for d, b in zip(delivered, bare, strict=True) if b]
        side_cpu = [run.per_cpu_second * f for run, f in zip(side_runs, fractions, strict=True)]
        bare_cpu = [run.per_cpu_second for run in bare_runs]
        cpu_pairs = [s / b for s, b in zip(side_cpu, bare_cpu, strict=True) if b and s]
        raw_pairs = [s / b for s, b in zip(side, bare, strict=True) if b]
        ratio = statistics.median(pairs) if pairs else 0.0
        errors = sum(run.errors + run.non_2xx for run in [*side_runs, *bare_runs])
        wrk_requests = sum(run.requests for run in side_runs)
        # wrk does not count the requests still in flight when it stops (at most -c per run)
        if errors or not 0 <= served - wrk_requests <= args.connections * len(side_runs):
            consistent = False
        scale = args.points if scenario.name == "intake" else 1
        row: dict[str, Any] = {
            "scenario": scenario.name,
            "unit": "points/s" if scenario.name == "intake" else "requests/s",
            "sidecar": statistics.median(delivered) * scale,
            "bare": statistics.median(bare) * scale,
            "ratio": ratio,
            "target": TARGETS[scenario.name],
            "passed": ratio >= TARGETS[scenario.name],
            "sidecar_rps": statistics.median(side),
            "bare_rps": statistics.median(bare),
            "accepted_ratio": statistics.median(raw_pairs) if raw_pairs else 0.0,
            "sidecar_per_cpu_s": statistics.median(side_cpu) * scale,
            "bare_per_cpu_s": statistics.median(bare_cpu) * scale,
            "cpu_ratio": statistics.median(cpu_pairs) if cpu_pairs else 0.0,
            "server_cpu_share": statistics.median(
                run.server_cpu / run.seconds for run in [*side_runs, *bare_runs] if run.seconds
            ),
            "sidecar_rps_rounds": side,
            "bare_rps_rounds": bare,
            "handled_fraction_rounds": fractions,
            "paired_ratios": pairs,
            "wrk_errors": errors,
            "sidecar_p50_ms": statistics.median(run.p50_ms for run in side_runs),
            "bare_p50_ms": statistics.median(run.p50_ms for run in bare_runs),
            "sidecar_p99_ms": statistics.median(run.p99_ms for run in side_runs),
            "bare_p99_ms": statistics.median(run.p99_ms for run in bare_runs),
            "wrk_sidecar_requests": wrk_requests,
            "counters": vars(total),
        }
        if scenario.name == "intake":
            row["points_accepted"] = total.intake_items
            row["points_handled"] = total.handled * args.points
            row["points_dropped"] = total.dropped * args.points
            row["points_failed"] = total.failed * args.points
        rows.append(row)
    return rows, consistent


def print_report(bench: Bench, rows: list[dict[str, Any]], consistent: bool) -> None:
    args = bench.args
    print()
    print(
        f"wrk -t{args.threads} -c{args.connections}, {args.rounds} rounds x {args.duration:g} s, "
        f"{args.points} points per intake batch; {bench.pin.note}"
    )
    header = f"{'scenario':<34}{'sidecar':>12}{'bare aiohttp':>14}{'ratio':>7}{'target':>8}  result"
    print(header)
    print("-" * len(header))
    for row in rows:
        result = "PASS" if row["passed"] else "MISS"
        if row["scenario"] == "intake":
            print(
                f"{'intake: points/s handled by plugin':<34}{row['sidecar']:>12,.0f}{row['bare']:>14,.0f}"
                f"{row['ratio']:>7.2f}{row['target']:>8.2f}  {result}"
            )
            print(
                f"{'  points/s answered 202':<34}{row['sidecar_rps'] * args.points:>12,.0f}"
                f"{row['bare']:>14,.0f}{row['accepted_ratio']:>7.2f}"
            )
            print(f"{'  requests/s':<34}{row['sidecar_rps']:>12,.0f}{row['bare_rps']:>14,.0f}")
            print(
                f"{'  handled points per server CPU-s':<34}{row['sidecar_per_cpu_s']:>12,.0f}"
                f"{row['bare_per_cpu_s']:>14,.0f}{row['cpu_ratio']:>7.2f}"
            )
        else:
            print(
                f"{'route GET /hello: requests/s':<34}{row['sidecar']:>12,.0f}{row['bare']:>14,.0f}"
                f"{row['ratio']:>7.2f}{row['target']:>8.2f}  {result}"
            )
            print(
                f"{'  requests per server CPU-s':<34}{row['sidecar_per_cpu_s']:>12,.0f}"
                f"{row['bare_per_cpu_s']:>14,.0f}{row['cpu_ratio']:>7.2f}"
            )
        print(
            f"{'  latency p50 / p99, ms':<34}{row['sidecar_p50_ms']:>5.1f} / {row['sidecar_p99_ms']:<4.1f}"
            f"{row['bare_p50_ms']:>7.1f} / {row['bare_p99_ms']:<4.1f}"
        )
    print(
        "columns: medians over rounds; ratio: median over rounds of sidecar/bare, each pair measured "
        "back to back;\nper CPU-s: work per CPU second the server process used (robust to other "
        "load); server CPU use during runs: "
        + ", ".join(f"{row['scenario']} {row['server_cpu_share']:.0%}" for row in rows)
    )
    print()
    for row in rows:
        ratios = ", ".join(f"{value:.2f}" for value in row["paired_ratios"])
        print(
            f"{row['scenario']}: per-round ratios {ratios}; wrk socket errors + non-2xx: {row['wrk_errors']}"
        )
        counters = row["counters"]
        if row["scenario"] == "intake":
            print(
                f"  sidecar counters: {row['wrk_sidecar_requests']:,} requests completed by wrk, "
                f"{counters['intake_ok']:,.0f} answered 202, {counters['intake_bad']:,.0f} refused;\n"
                f"  points accepted {row['points_accepted']:,.0f}, handled by the plugin "
                f"{row['points_handled']:,.0f}, dropped (queue full) {row['points_dropped']:,.0f}, "
                f"failed {row['points_failed']:,.0f}; "
                f"in luna_requests_total {counters['point_requests']:,.0f}"
            )
        else:
            print(
                f"  sidecar counters: {row['wrk_sidecar_requests']:,} requests completed by wrk, "
                f"{counters['route_requests']:,.0f} served by the plugin route;\n"
                f"  their points: {counters['point_requests']:,.0f} in luna_requests_total, "
                f"{counters['handled']:,.0f} batches handled by the plugin, "
                f"{counters['dropped']:,.0f} dropped"
            )
    print()
    if not consistent:
        print("check FAILED: wrk saw errors or its count disagrees with the sidecar's; do not trust these")
    elif any(row["counters"]["dropped"] or row["counters"]["failed"] for row in rows):
        print("check: the plugin dropped or failed batches; the intake score counts handled points only")
    else:
        print("check: every batch the sidecar accepted was handled by the plugin; no drops, no errors")


# ---------------------------------------------------------------- main


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])

    def bounded(kind: Callable[[str], Any], low: float, high: float) -> Callable[[str], Any]:
        def convert(text: str) -> Any:
            value = kind(text)
            if not low <= value <= high:
                raise argparse.ArgumentTypeError(f"must be between {low:g} and {high:g}")
            return value

        return convert

    parser.add_argument("--rounds", type=bounded(int, 1, 20), default=5, help="rounds (default 5)")
    parser.add_argument(
        "--duration", type=bounded(float, 1, 120), default=10.0, help="seconds per wrk run (default 10)"
    )
    parser.add_argument(
        "--warmup", type=bounded(float, 0, 60), default=3.0, help="warm-up seconds per run (default 3)"
    )
    parser.add_argument(
        "--connections", type=bounded(int, 1, 1000), default=32, help="wrk connections (default 32)"
    )
    parser.add_argument("--threads", type=bounded(int, 1, 64), default=1, help="wrk threads (default 1)")
    parser.add_argument(
        "--points", type=bounded(int, 1, 10_000), default=100, help="points per intake batch (default 100)"
    )
    parser.add_argument(
        "--scenarios", default="intake,route", help="comma-separated: intake, route (default both)"
    )
    parser.add_argument("--no-pin", action="store_true", help="do not pin wrk and the servers to CPUs")
    parser.add_argument(
        "--output",
        type=Path,
        default=BENCH / "results" / "latest.json",
        help="where to write the raw figures as JSON (default bench/results/latest.json)",
    )
    parser.add_argument(
        "--profile-sidecar", type=Path, help="run the sidecar under cProfile, write the profile here"
    )
    args = parser.parse_args(argv)
    names = [name.strip() for name in args.scenarios.split(",") if name.strip()]
    unknown = set(names) - set(TARGETS)
    if unknown or not names:
        parser.error(f"--scenarios: choose from {sorted(TARGETS)}")
    args.scenarios = names
    if args.connections < args.threads:
        parser.error("--connections must be at least --threads")
    return args


def sidecar_command(args: argparse.Namespace, ports: dict[str, int]) -> list[str]:
    settings = [
        "sidecar",
        "--plugins-dir",
        str(BENCH / "plugins"),
        "--active",
        ",".join(PLUGINS),
        "--host",
        "127.0.0.1",
        "--port",
        str(ports["public"]),
        "--admin-host",
        "127.0.0.1",
        "--admin-port",
        str(ports["admin"]),
        "--metrics-host",
        "127.0.0.1",
        "--metrics-port",
        str(ports["metrics"]),
        "--log-level",
        "WARNING",
    ]
    if args.profile_sidecar:
        profile = str(args.profile_sidecar.resolve())
        return [sys.executable, "-m", "cProfile", "-o", profile, "-m", "luna_cli.main", *settings]
    script = Path(sys.executable).parent / "luna-plugins"
    if script.exists():
        return [str(script), *settings]
    return [sys.executable, "-m", "luna_cli.main", *settings]


def machine_note() -> str:
    model = "unknown CPU"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    load = ", ".join(f"{value:.2f}" for value in os.getloadavg())
    return f"{os.cpu_count()} CPUs ({model}); load average {load}; Python {sys.version.split()[0]}"


@contextlib.contextmanager
def started(processes: Processes) -> Iterator[None]:
    def interrupted(signum: int, _: object) -> None:
        raise KeyboardInterrupt

    # Ctrl-C and SIGTERM both end in ``stop_all`` (SIGINT explicitly: a shell may start a
    # background job with SIGINT ignored)
    previous = {signum: signal.signal(signum, interrupted) for signum in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        processes.stop_all()
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        wrk = ensure_wrk()
    except BenchError as exc:
        print(f"bench: {exc}", file=sys.stderr)
        return 2
    pin = plan_pinning(not args.no_pin)
    total = (args.warmup + args.rounds * args.duration) * 2 * len(args.scenarios)
    print(f"machine: {machine_note()}")
    print(f"{pin.note}; about {total / 60:.1f} min of load to run", flush=True)
    if args.profile_sidecar:
        print("the sidecar runs under cProfile: its figures are NOT comparable", flush=True)
    processes = Processes()
    with tempfile.TemporaryDirectory(prefix="luna-bench-") as tmp, started(processes):
        workdir = Path(tmp)
        body = make_body(args.points)
        post, get = write_scripts(workdir, body)
        public, admin, metrics, bare = free_ports(4)
        ports = {"public": public, "admin": admin, "metrics": metrics}
        try:
            sidecar = processes.start(
                "sidecar", [*pin.server, *sidecar_command(args, ports)], workdir / "sidecar.log"
            )
            bare_app = processes.start(
                "bare aiohttp",
                [*pin.server, sys.executable, str(BENCH / "bare_app.py"), str(bare)],
                workdir / "bare.log",
            )
            sidecar_url = f"http://127.0.0.1:{public}"
            admin_url = f"http://127.0.0.1:{admin}"
            bare_url = f"http://127.0.0.1:{bare}"
            metrics_url = f"http://127.0.0.1:{metrics}/metrics"
            wait_until(
                "the sidecar's /readyz",
                lambda: http_get(f"http://127.0.0.1:{metrics}/readyz")[0] == 200,
                processes,
                READY_TIMEOUT,
            )
            wait_until(
                "the plugin route", lambda: http_get(sidecar_url + ROUTE_PATH)[0] == 200, processes, 30
            )
            wait_until("the bare app", lambda: http_get(bare_url + ROUTE_PATH)[0] == 200, processes, 30)
            states = {
                item["name"]: item["state"]
                for item in json.loads(http_get(admin_url + "/plugins")[1])["plugins"]
            }
            if any(states.get(name) != "running" for name in PLUGINS):
                raise BenchError(f"bench plugins are not all running: {states}")
            status, reply = http_post(admin_url + INTAKE_PATH, body)
            answer = json.loads(reply)
            if status != 202 or answer.get("accepted") != args.points or answer.get("queued") != 1:
                raise BenchError(f"the sidecar's intake answered {status} {answer}")
            status, _ = http_post(bare_url + INTAKE_PATH, body)
            if status != 202:
                raise BenchError(f"the bare app's intake answered {status}")
            scenarios = []
            for name in args.scenarios:
                if name == "intake":
                    side = Target("sidecar", admin_url + INTAKE_PATH, post)
                    base = Target("bare", bare_url + INTAKE_PATH, post)
                else:
                    side = Target("sidecar", sidecar_url + ROUTE_PATH, get)
                    base = Target("bare", bare_url + ROUTE_PATH, get)
                scenarios.append(Scenario(name, side, base))
            pids = {"sidecar": sidecar.pid, "bare": bare_app.pid}
            bench = Bench(args, wrk, pin, metrics_url, processes, scenarios, pids)
            measure(bench)
            rows, consistent = summarize(bench)
            print_report(bench, rows, consistent)
            args.output.parent.mkdir(parents=True, exist_ok=True)
            args.output.write_text(
                json.dumps(
                    {
                        "machine": machine_note(),
                        "pinning": pin.note,
                        "settings": {
                            name: str(value) if isinstance(value, Path) else value
                            for name, value in vars(args).items()
                        },
                        "consistent": consistent,
                        "scenarios": rows,
                    },
                    indent=2,
                )
                + "\n"
            )
            print(f"raw figures: {args.output}")
        except BenchError as exc:
            print(f"bench: {exc}", file=sys.stderr)
            for name, _, log in processes.children:
                print(f"--- last lines of the {name} log:\n{tail(log)}", file=sys.stderr)
            return 1
        except KeyboardInterrupt:
            print("bench: interrupted; stopping the servers", file=sys.stderr)
            return 130
    if args.profile_sidecar:
        print(f"sidecar profile: {args.profile_sidecar}")
    return 0 if consistent else 1


if __name__ == "__main__":
    sys.exit(main())
