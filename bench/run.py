"""Throughput of the sidecar against a bare aiohttp app doing the same HTTP work, with ``wrk``.

Scenarios:

- ``intake``: ``POST /events/monitoring_event`` with a batch of ``--points`` ``requests`` points;
  the sidecar validates it, records it in the default metrics mapping and queues it to one no-op
  monitoring plugin (``bench/plugins/noop_monitoring.py``); the bare app (``bench/bare_app.py``)
  only parses the JSON. Score: points handled by the plugin per server CPU-second, against the
  bare app's points per CPU-second.
- ``intake10``: the same batches into a second sidecar with ten such plugins; every point reaches
  all ten. Score: its points per CPU-second against the one-plugin sidecar's in the same round.
- ``route``: ``GET /hello``; the sidecar serves it from a plugin route
  (``bench/plugins/hello_route.py``) and turns it into a ``requests`` point, the bare app answers
  from an aiohttp router. Score: requests per server CPU-second, against the bare app's.

All servers run side by side, pinned to one core (wrk to another); every round runs each
scenario against each of its servers, the order rotating from round to round, so load from other
processes hits them alike. The score of a scenario is the median over rounds of the per-round
ratio of work per CPU-second of the server process: a figure that hardly moves when other
processes take CPU away. After every sidecar run the script waits for the plugins' queues to
drain and reads the sidecar's ``/metrics``, so the figures count points really handled by every
plugin, and the run fails when the counters disagree with what wrk sent.

``--compare DIR`` also runs the sidecars from another source tree (e.g. ``git worktree add
/tmp/base main``) in the same rounds, so a change is measured side by side with what it changes.
``--profile DIR`` records the sidecars with py-spy during the measured runs and prints the top
entries of the profiles (such figures are not comparable). ``--smoke`` checks the benchmark
itself: one short round, counters checked, targets not judged.

Usage: ``python bench/run.py [--rounds 5] [--duration 10] [--scenarios intake,intake10,route]``
(``make bench``).
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

from decode_limit import decode_limit
from profiling import Recorder, find_py_spy, read_profiles, top_entries
from prometheus_client.parser import text_string_to_metric_families

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
MONITOR = "noop_monitoring"
ROUTE_PLUGIN = "hello_route"
#: monitoring plugins of the fan-out sidecar (scenario intake10)
FAN_OUT = 10
INTAKE_PATH = "/events/monitoring_event"
ROUTE_PATH = "/hello"
SCENARIOS = ("intake", "intake10", "route")
#: the target of each scenario's median per-CPU-second ratio (intake10: to the 1-plugin intake)
TARGETS = {"intake": 1.5, "intake10": 0.5, "route": 1.5}
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

    def start(
        self, name: str, command: list[str], log: Path, env: dict[str, str] | None = None
    ) -> subprocess.Popen[bytes]:
        with log.open("wb") as sink:
            child = subprocess.Popen(
                command,
                cwd=ROOT,
                env=env,
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
    """The sidecar counters the benchmark checks, read from ``/metrics``. Plugin counters are
    summed over the benchmark's monitoring plugins (in batches)."""

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

    def plus(self, other: Snapshot) -> Snapshot:
        return Snapshot(**{name: getattr(self, name) + getattr(other, name) for name in vars(self)})


def read_metrics(url: str) -> Snapshot:
    status, body = http_get(url)
    if status != 200:
        raise BenchError(f"{url} answered {status}")
    snap = Snapshot()
    for family in text_string_to_metric_families(body.decode()):
        for sample in family.samples:
            name, labels, value = sample.name, sample.labels, sample.value
            if name == "luna_plugin_events_total" and labels.get("plugin", "").startswith(MONITOR):
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
    """User + system CPU seconds of process ``pid`` so far, all its threads (Linux ``/proc``)."""
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


# ---------------------------------------------------------------- servers and scenarios


@dataclass(frozen=True)
class Server:
    """One server process under test."""

    name: str  # "sidecar", "sidecar10", "bare", "sidecar@LABEL"...
    pid: int
    public: str  # base URL of the plugin routes (the bare app: its only listener)
    admin: str  # base URL of the event intake
    metrics: str = ""  # the sidecar's /metrics URL ("" for the bare app)
    monitors: int = 0  # monitoring plugins subscribed (every point reaches each)

    @property
    def is_sidecar(self) -> bool:
        return bool(self.metrics)


@dataclass
class Scenario:
    name: str  # one of SCENARIOS
    script: Path
    servers: list[Server]  # the measured sidecar first, then the bare app and compared sidecars
    runs: dict[str, list[WrkResult]] = field(default_factory=dict)
    checks: dict[str, list[Snapshot]] = field(default_factory=dict)

    def url(self, server: Server) -> str:
        return server.public + ROUTE_PATH if self.name == "route" else server.admin + INTAKE_PATH


@dataclass
class Bench:
    args: argparse.Namespace
    wrk: str
    pin: Pinning
    processes: Processes
    scenarios: list[Scenario]
    profile_dir: Path | None = None
    py_spy: str | None = None

    def drain(self, server: Server) -> Snapshot:
        """Wait until the sidecar's plugin queues are empty; returns its counters then."""
        # Two reads at least QUIET_SECONDS apart (more than the PointBuffer's 50 ms delay) that
        # agree, with nothing queued: the runtime's own buffered route points are out too.
        deadline = time.monotonic() + DRAIN_TIMEOUT
        last: Snapshot | None = None
        while True:
            snap = read_metrics(server.metrics)
            if snap.queue_depth == 0 and last is not None and snap == last:
                return snap
            if time.monotonic() > deadline:
                raise BenchError(
                    f"the plugin queues of {server.name} did not drain within {DRAIN_TIMEOUT:g} s"
                )
            last = snap
            time.sleep(QUIET_SECONDS)

    def run(self, scenario: Scenario, server: Server, duration: float, round_number: int | None) -> WrkResult:
        """One wrk run; ``round_number`` None is a warm-up (nothing recorded)."""
        before = self.drain(server) if server.is_sidecar else None
        recorder = None
        if self.profile_dir is not None and self.py_spy and round_number is not None and server.is_sidecar:
            output = self.profile_dir / f"{scenario.name}-{server.name}-{round_number}.txt"
            recorder = Recorder(self.py_spy, server.pid, output)
        cpu_before = cpu_seconds(server.pid)
        result = run_wrk(self.wrk, self.pin, self.args, scenario.url(server), scenario.script, duration)
        self.processes.check_alive()
        if before is not None:
            # the CPU the sidecar spends on the backlog after wrk stops belongs to this run
            delta = self.drain(server).minus(before)
            if round_number is not None:
                scenario.checks.setdefault(server.name, []).append(delta)
        result.server_cpu = cpu_seconds(server.pid) - cpu_before
        if recorder is not None:
            try:
                recorder.stop()
            except RuntimeError as exc:
                raise BenchError(str(exc)) from None
        if round_number is not None:
            scenario.runs.setdefault(server.name, []).append(result)
        return result


def rotated(items: list[Any], shift: int) -> list[Any]:
    shift %= len(items)
    return items[shift:] + items[:shift]


def measure(bench: Bench) -> None:
    args = bench.args
    if args.warmup > 0:
        print(f"warm-up: {args.warmup:g} s per server and scenario", flush=True)
        for scenario in bench.scenarios:
            for server in scenario.servers:
                bench.run(scenario, server, args.warmup, None)
    for number in range(args.rounds):
        cells = []
        for scenario in rotated(bench.scenarios, number):
            for server in rotated(scenario.servers, number):
                result = bench.run(scenario, server, args.duration, number)
                cells.append(f"{scenario.name}/{server.name} {result.rps:,.0f} req/s")
        print(f"round {number + 1}/{args.rounds}: " + "; ".join(cells), flush=True)


# ---------------------------------------------------------------- report


def work_per_cpu_second(scenario: Scenario, server: Server, points: int) -> tuple[list[float], list[float]]:
    """Per round: the server's work per CPU-second, and the fraction of it that counts. Intake:
    points handled by every monitoring plugin (a sidecar that answers 202 and then drops gets no
    credit); route: requests."""
    runs = scenario.runs[server.name]
    if not server.is_sidecar:
        return [run.per_cpu_second * (points if scenario.name != "route" else 1) for run in runs], [
            1.0
        ] * len(runs)
    fractions = []
    for check in scenario.checks[server.name]:
        if scenario.name == "route":
            fractions.append(1.0 if not (check.dropped or check.failed) else 0.0)
        else:
            expected = check.intake_ok * server.monitors
            fractions.append(min(1.0, check.handled / expected) if expected else 0.0)
    scale = points if scenario.name != "route" else 1
    return [run.per_cpu_second * scale * f for run, f in zip(runs, fractions, strict=True)], fractions


def check_counts(scenario: Scenario, server: Server, args: argparse.Namespace) -> list[str]:
    """What disagrees between wrk and the sidecar's counters (empty: all agree). wrk does not count
    the requests still in flight when it stops, so the sidecar may have served up to ``-c`` more
    per run."""
    runs, checks = scenario.runs[server.name], scenario.checks[server.name]
    completed = sum(run.requests for run in runs)
    total = Snapshot()
    for check in checks:
        total = total.plus(check)
    problems = []
    errors = sum(run.errors + run.non_2xx for run in runs)
    if errors:
        problems.append(f"wrk saw {errors} socket errors or non-2xx answers")
    served = total.route_requests if scenario.name == "route" else total.intake_ok
    if not 0 <= served - completed <= args.connections * len(runs):
        problems.append(f"wrk completed {completed:,} requests, the sidecar counted {served:,.0f}")
    if scenario.name == "route":
        if total.point_requests != total.route_requests:
            problems.append(
                f"{total.route_requests:,.0f} route requests became {total.point_requests:,.0f} points"
            )
    else:
        if total.intake_bad:
            problems.append(f"the intake refused {total.intake_bad:,.0f} requests")
        if total.intake_items != total.intake_ok * args.points:
            problems.append(f"{total.intake_ok:,.0f} batches accepted but {total.intake_items:,.0f} points")
        if total.handled != total.intake_ok * server.monitors:
            problems.append(
                f"{total.intake_ok:,.0f} batches accepted x {server.monitors} plugins, "
                f"{total.handled:,.0f} handled"
            )
    if total.dropped or total.failed:
        problems.append(f"plugins dropped {total.dropped:,.0f} and failed {total.failed:,.0f} batches")
    return problems


def summarize(bench: Bench) -> tuple[list[dict[str, Any]], list[str]]:
    """One row per scenario and server, with per-round figures and ratios; and the problems
    found in the counters (empty when wrk and the sidecars agree)."""
    args = bench.args
    rows: list[dict[str, Any]] = []
    problems: list[str] = []
    figures: dict[tuple[str, str], list[float]] = {}
    for scenario in bench.scenarios:
        for server in scenario.servers:
            figures[(scenario.name, server.name)] = work_per_cpu_second(scenario, server, args.points)[0]
    for scenario in bench.scenarios:
        for server in scenario.servers:
            runs = scenario.runs[server.name]
            per_cpu, fractions = work_per_cpu_second(scenario, server, args.points)
            row: dict[str, Any] = {
                "scenario": scenario.name,
                "server": server.name,
                "unit": "requests" if scenario.name == "route" else "points",
                "per_cpu_second_rounds": per_cpu,
                "per_cpu_second": statistics.median(per_cpu),
                "per_second": statistics.median(run.rps for run in runs)
                * (1 if scenario.name == "route" else args.points),
                "server_cpu_share": statistics.median(run.server_cpu / run.seconds for run in runs),
                "p50_ms": statistics.median(run.p50_ms for run in runs),
                "p99_ms": statistics.median(run.p99_ms for run in runs),
                "wrk_requests": sum(run.requests for run in runs),
                "cpu_seconds": sum(run.server_cpu for run in runs),
            }
            if server.is_sidecar:
                # the reference: the bare app, or for intake10 the 1-plugin sidecar of the same tree
                suffix = server.name.partition("@")[2]
                if scenario.name == "intake10":
                    reference = ("intake", "sidecar" + (f"@{suffix}" if suffix else ""))
                else:
                    reference = (scenario.name, "bare")
                base = figures.get(reference)
                if base:
                    ratios = [mine / theirs for mine, theirs in zip(per_cpu, base, strict=True) if theirs]
                    row["reference"] = reference[1] if reference[0] == scenario.name else "/".join(reference)
                    row["ratio_rounds"] = ratios
                    row["ratio"] = statistics.median(ratios) if ratios else 0.0
                    row["target"] = TARGETS[scenario.name]
                total = Snapshot()
                for check in scenario.checks[server.name]:
                    total = total.plus(check)
                row["counters"] = vars(total)
                row["handled_fraction_rounds"] = fractions
                problems += [
                    f"{scenario.name}/{server.name}: {p}" for p in check_counts(scenario, server, args)
                ]
            rows.append(row)
    return rows, problems


def print_report(bench: Bench, rows: list[dict[str, Any]], problems: list[str], limit: float) -> None:
    args = bench.args
    print()
    print(f"machine: {machine_note()}")
    print(
        f"wrk -t{args.threads} -c{args.connections}, {args.rounds} round(s) x {args.duration:g} s, "
        f"{args.points} points per intake batch; {bench.pin.note}"
    )
    header = (
        f"{'scenario / server':<30}{'per CPU-s':>12}{'per s':>11}{'CPU':>6}{'ratio':>7}{'target':>8}  result"
    )
    print(header)
    print("-" * len(header))
    for row in rows:
        unit = "points" if row["unit"] == "points" else "req"
        name = f"{row['scenario']} / {row['server']}"
        line = (
            f"{name:<30}{row['per_cpu_second']:>12,.0f}{row['per_second']:>11,.0f}"
            f"{row['server_cpu_share']:>6.0%}"
        )
        if "ratio" in row:
            verdict = "" if args.smoke else ("PASS" if row["ratio"] >= row["target"] else "MISS")
            line += f"{row['ratio']:>7.2f}{row['target']:>8.2f}  {verdict} (to {row['reference']})"
        print(f"{line}  [{unit}]")
    print(
        "per CPU-s: work per CPU-second of the server process (intake: points handled by every plugin);\n"
        "ratio: median over rounds of the per-round ratio of per-CPU-s figures; CPU: the server's CPU share"
    )
    intake = next((row for row in rows if row["scenario"] == "intake" and row["server"] == "sidecar"), None)
    bare = next((row for row in rows if row["scenario"] == "intake" and row["server"] == "bare"), None)
    if limit:
        line = f"decode-only limit (one core, the sidecar's decoder alone): {limit:,.0f} points per CPU-s"
        if intake and bare:
            line += (
                f"; the sidecar intake reaches {intake['per_cpu_second'] / limit:.0%} of it, "
                f"the bare app {bare['per_cpu_second'] / limit:.0%}"
            )
        print(line)
    print()
    for row in rows:
        if "ratio_rounds" in row:
            ratios = ", ".join(f"{value:.2f}" for value in row["ratio_rounds"])
            print(f"{row['scenario']}/{row['server']}: per-round ratios to {row['reference']}: {ratios}")
    for row in rows:
        counters = row.get("counters")
        if counters is None:
            continue
        if row["scenario"] == "route":
            print(
                f"{row['scenario']}/{row['server']}: wrk completed {row['wrk_requests']:,}, the plugin route "
                f"served {counters['route_requests']:,.0f}, points in luna_requests_total "
                f"{counters['point_requests']:,.0f}; monitoring batches handled {counters['handled']:,.0f}, "
                f"dropped {counters['dropped']:,.0f}, failed {counters['failed']:,.0f}"
            )
        else:
            print(
                f"{row['scenario']}/{row['server']}: wrk completed {row['wrk_requests']:,}, answered 202 "
                f"{counters['intake_ok']:,.0f}, refused {counters['intake_bad']:,.0f}; points accepted "
                f"{counters['intake_items']:,.0f}; batches handled {counters['handled']:,.0f} "
                f"(all plugins), dropped {counters['dropped']:,.0f}, failed {counters['failed']:,.0f}"
            )
    print(f"CPU used by the servers during the measured runs: {cpu_note(rows)}")
    print()
    if problems:
        print("check FAILED: do not trust these figures")
        for problem in problems:
            print(f"  {problem}")
    else:
        print(
            "check: wrk and the sidecars' counters agree; every accepted point reached every plugin; no drops"
        )


def cpu_note(rows: list[dict[str, Any]]) -> str:
    return ", ".join(f"{row['scenario']}/{row['server']} {row['cpu_seconds']:.1f} s" for row in rows)


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
        "--scenarios",
        default=",".join(SCENARIOS),
        help=f"comma-separated, from {', '.join(SCENARIOS)} (default all; intake10 needs intake)",
    )
    parser.add_argument("--no-pin", action="store_true", help="do not pin wrk and the servers to CPUs")
    parser.add_argument(
        "--compare",
        type=Path,
        metavar="DIR",
        help="also run the sidecars from the source tree DIR (another revision), side by side",
    )
    parser.add_argument(
        "--profile",
        type=Path,
        metavar="DIR",
        help="record the measured sidecar runs with py-spy into DIR and print the top entries",
    )
    parser.add_argument(
        "--smoke",
        action="store_true",
        help="check the benchmark itself: judge the counters, not the targets (for the test suite)",
    )
    parser.add_argument(
        "--output",
        type=Path,
        default=BENCH / "results" / "latest.json",
        help="where to write the raw figures as JSON (default bench/results/latest.json)",
    )
    args = parser.parse_args(argv)
    names = [name.strip() for name in args.scenarios.split(",") if name.strip()]
    unknown = set(names) - set(SCENARIOS)
    if unknown or not names:
        parser.error(f"--scenarios: choose from {', '.join(SCENARIOS)}")
    if "intake10" in names and "intake" not in names:
        parser.error("--scenarios: intake10 is scored against intake; choose both")
    args.scenarios = [name for name in SCENARIOS if name in names]
    if args.connections < args.threads:
        parser.error("--connections must be at least --threads")
    if args.compare is not None and not (args.compare / "sidecar" / "luna_sidecar").is_dir():
        parser.error(f"--compare: {args.compare} is not a source tree of this project")
    return args


def sidecar_command(plugins_dir: Path, active: list[str], ports: dict[str, int]) -> list[str]:
    """The sidecar as users run it, on loopback, with default settings otherwise."""
    return [
        sys.executable,
        "-m",
        "luna_cli.main",
        "sidecar",
        "--plugins-dir",
        str(plugins_dir),
        "--active",
        ",".join(active),
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


def tree_environment(tree: Path | None) -> dict[str, str]:
    """The environment that makes Python import the project from ``tree`` (None: this one)."""
    env = dict(os.environ)
    if tree is not None:
        paths = [str(tree / part) for part in ("sidecar", "cli", "tools", "operator")]
        env["PYTHONPATH"] = os.pathsep.join([*paths, env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
        where = subprocess.run(
            [sys.executable, "-c", "import luna_sidecar; print(luna_sidecar.__file__)"],
            env=env,
            capture_output=True,
            text=True,
            check=False,
        ).stdout.strip()
        if not Path(where).resolve().is_relative_to(tree.resolve()):
            raise BenchError(f"--compare: the sidecar would not be imported from {tree} (got {where!r})")
    return env


def fan_out_plugins(workdir: Path) -> tuple[Path, list[str]]:
    """A plugins directory with FAN_OUT copies of the no-op monitoring plugin."""
    folder = workdir / "fan-out-plugins"
    folder.mkdir()
    code = (BENCH / "plugins" / f"{MONITOR}.py").read_text()
    names = [f"{MONITOR}_{index}" for index in range(FAN_OUT)]
    for name in names:
        (folder / f"{name}.py").write_text(code)
    return folder, names


def machine_note() -> str:
    model = "unknown CPU"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    versions = []
    for package in ("aiohttp", "msgspec", "uvloop", "httptools"):
        with contextlib.suppress(Exception):
            from importlib.metadata import version

            versions.append(f"{package} {version(package)}")
    load = ", ".join(f"{value:.2f}" for value in os.getloadavg())
    return (
        f"CPU {model}, {os.cpu_count()} CPUs; Python {sys.version.split()[0]} "
        f"({sys.implementation.name}); {', '.join(versions)}; load average {load}"
    )


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


def start_sidecar(
    processes: Processes,
    pin: Pinning,
    workdir: Path,
    name: str,
    plugins: tuple[Path, list[str]],
    tree: Path | None,
) -> Server:
    """Start one sidecar (from ``tree``, or this project) and wait until its plugins run."""
    public, admin, metrics = free_ports(3)
    ports = {"public": public, "admin": admin, "metrics": metrics}
    child = processes.start(
        name,
        [*pin.server, *sidecar_command(*plugins, ports)],
        workdir / f"{name.replace('@', '-at-')}.log",
        env=tree_environment(tree),
    )
    server = Server(
        name,
        child.pid,
        public=f"http://127.0.0.1:{public}",
        admin=f"http://127.0.0.1:{admin}",
        metrics=f"http://127.0.0.1:{metrics}/metrics",
        monitors=sum(1 for plugin in plugins[1] if plugin.startswith(MONITOR)),
    )
    wait_until(
        f"the readiness of {name}",
        lambda: http_get(f"http://127.0.0.1:{metrics}/readyz")[0] == 200,
        processes,
        READY_TIMEOUT,
    )
    states = {
        item["name"]: item["state"] for item in json.loads(http_get(server.admin + "/plugins")[1])["plugins"]
    }
    if any(states.get(plugin) != "running" for plugin in plugins[1]):
        raise BenchError(f"the plugins of {name} are not all running: {states}")
    return server


def check_servers(servers: list[Server], body: bytes, points: int) -> None:
    """One request of each kind, answered as the benchmark expects."""
    for server in servers:
        status, reply = http_post(server.admin + INTAKE_PATH, body)
        if status != 202:
            raise BenchError(f"the intake of {server.name} answered {status}: {reply[:200]!r}")
        if server.is_sidecar:
            answer = json.loads(reply)
            if answer.get("accepted") != points or answer.get("queued") != server.monitors:
                raise BenchError(f"the intake of {server.name} answered {answer}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        wrk = ensure_wrk()
    except BenchError as exc:
        print(f"bench: {exc}", file=sys.stderr)
        return 2
    py_spy = find_py_spy() if args.profile else None
    if args.profile and py_spy is None:
        print("bench: --profile needs py-spy (pip install py-spy; a dev dependency)", file=sys.stderr)
        return 2
    pin = plan_pinning(not args.no_pin)
    per_round = sum(2 if name == "intake10" else 3 for name in args.scenarios)  # servers per scenario
    if args.compare is None:
        per_round -= len(args.scenarios)
    total = (args.warmup + args.rounds * args.duration) * per_round
    print(f"machine: {machine_note()}")
    print(f"{pin.note}; about {total / 60:.1f} min of load to run", flush=True)
    if args.profile:
        args.profile.mkdir(parents=True, exist_ok=True)
        print(f"the sidecars run under py-spy ({args.profile}): their figures are NOT comparable", flush=True)
    body = make_body(args.points)
    limit = decode_limit(body)
    print(f"decode-only limit: {limit:,.0f} points per CPU-s", flush=True)
    processes = Processes()
    problems: list[str] = []
    with tempfile.TemporaryDirectory(prefix="luna-bench-") as tmp, started(processes):
        workdir = Path(tmp)
        post, get = write_scripts(workdir, body)
        try:
            trees: list[tuple[str, Path | None]] = [("", None)]
            if args.compare is not None:
                trees.append((f"@{args.compare.name}", args.compare))
            one = (BENCH / "plugins", [MONITOR, ROUTE_PLUGIN])
            ten = fan_out_plugins(workdir)
            singles, fans = [], []
            for suffix, tree in trees:
                singles.append(start_sidecar(processes, pin, workdir, f"sidecar{suffix}", one, tree))
                if "intake10" in args.scenarios:
                    fans.append(start_sidecar(processes, pin, workdir, f"sidecar10{suffix}", ten, tree))
            port = free_ports(1)[0]
            child = processes.start(
                "bare",
                [*pin.server, sys.executable, str(BENCH / "bare_app.py"), str(port)],
                workdir / "bare.log",
            )
            bare = Server(
                "bare", child.pid, public=f"http://127.0.0.1:{port}", admin=f"http://127.0.0.1:{port}"
            )
            wait_until("the bare app", lambda: http_get(bare.public + ROUTE_PATH)[0] == 200, processes, 30)
            for sidecar in singles:
                wait_until(
                    f"the plugin route of {sidecar.name}",
                    lambda sidecar=sidecar: http_get(sidecar.public + ROUTE_PATH)[0] == 200,  # type: ignore[misc]
                    processes,
                    30,
                )
            check_servers([*singles, *fans, bare], body, args.points)
            scenarios = []
            for name in args.scenarios:
                if name == "intake10":
                    scenarios.append(Scenario(name, post, fans))
                else:
                    main_one, *others = singles
                    scenarios.append(
                        Scenario(name, post if name == "intake" else get, [main_one, bare, *others])
                    )
            bench = Bench(args, wrk, pin, processes, scenarios, args.profile, py_spy)
            measure(bench)
            rows, problems = summarize(bench)
            print_report(bench, rows, problems, limit)
            if args.profile:
                for scenario in scenarios:
                    files = sorted(args.profile.glob(f"{scenario.name}-sidecar*-*.txt"))
                    main_files = [path for path in files if "@" not in path.name]
                    print(f"\nprofile of {scenario.name} ({scenario.servers[0].name}, py-spy):")
                    print(top_entries(read_profiles(main_files)))
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
                        "decode_limit_points_per_cpu_second": limit,
                        "problems": problems,
                        "rows": rows,
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
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
