"""Operator figures: time from `kubectl apply` to ``status.phase == Ready`` with the new code hash
(creates and updates), start-up convergence of many plugins across several services, and the
operator's memory.

    .venv/bin/python bench/operator_bench.py [--kubeconfig PATH] [--applies 20] [--plugins 200]

Without --kubeconfig it starts a local control plane (`luna-cluster up`) in a temporary
directory and stops it at the end (also on an error, Ctrl-C or SIGTERM). Traffic stays on
loopback. The status is followed through one long-lived watch per resource type
(kubernetes_asyncio, in a background thread); each event is stamped with ``time.monotonic()``
when it arrives, so the resolution is that of the watch (about a millisecond), not of a polling
loop. ``bench/apply_to_serve.py`` reuses the helpers of this file.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import math
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from luna_contract.names import GROUP, VERSION
from luna_contract.names import PLURAL_PLUGINS as PLURAL

ROOT = Path(__file__).resolve().parents[1]
CLI = str(Path(sys.executable).with_name("luna-plugins"))
#: the local-cluster harness's command (its own distribution, installed beside the product)
CLUSTER_CLI = str(Path(sys.executable).with_name("luna-cluster"))
HOST = "127.0.0.1"

CRDS = ("lunaplugins.luna.dev", "lunapluginruntimes.luna.dev")
CODE = (
    "from luna_plugins.base.plugins_meta.base_plugins import BaseBackgroundPlugin, pluginHTTPResponse\n\n"
    "class Routes(BaseBackgroundPlugin):\n"
    "    async def initialize(self):\n"
    "        self.addRoute({path!r}, lambda request: pluginHTTPResponse(body={answer!r}))\n"
)
BULK_TARGET_SECONDS = 30.0

State = dict[str, dict[str, dict[str, Any]]]
"""The watched objects: ``{"lp": {name: LunaPlugin}, "cm": {name: ConfigMap}}`` (plain dicts)."""


class BenchError(Exception):
    """The benchmark could not run (not a missed target)."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def route_code(path: str, answer: str) -> str:
    return CODE.format(path=path, answer=answer)


def code_hash(code: str) -> str:
    """The operator's identity of a plugin version: SHA-256 of the code as UTF-8."""
    return hashlib.sha256(code.encode()).hexdigest()


def manifest(name: str, namespace: str, code: str, service: str = "handlers") -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "LunaPlugin",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"service": service, "code": code},
    }


def percentile(values: list[float], fraction: float) -> float:
    """Nearest-rank percentile (p95 of 20 values is the 19th smallest)."""
    ordered = sorted(values)
    rank = math.ceil(fraction * len(ordered) - 1e-9)
    return ordered[min(len(ordered), max(1, rank)) - 1]


def summary(values: list[float]) -> tuple[int, float, float, float]:
    """(n, p50, p95, max) in milliseconds."""
    if not values:
        return 0, float("nan"), float("nan"), float("nan")
    return (
        len(values),
        statistics.median(values) * 1000,
        percentile(values, 0.95) * 1000,
        max(values) * 1000,
    )


def rss_mib(pid: int) -> tuple[float, float]:
    """(VmRSS, VmHWM) of ``pid`` in MiB."""
    found = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            found[key] = int(value.split()[0]) / 1024
    return found.get("VmRSS", 0.0), found.get("VmHWM", 0.0)


def raise_on_sigterm() -> None:
    """SIGTERM unwinds like Ctrl-C, so every ``finally`` stops what the benchmark started."""

    def handler(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, handler)


class Kubectl:
    def __init__(self, binary: str, kubeconfig: str) -> None:
        self.binary = binary
        self.env = {**os.environ, "KUBECONFIG": kubeconfig}

    def run(
        self, *args: str, input: str | None = None, check: bool = True, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [self.binary, *args], input=input, capture_output=True, text=True, env=self.env, timeout=timeout
        )
        if check and result.returncode:
            raise BenchError(f"kubectl {' '.join(args)} failed: {result.stderr.strip()}")
        return result

    def __call__(self, *args: str, input: str | None = None) -> str:
        return self.run(*args, input=input).stdout

    def apply(self, *bodies: dict[str, Any]) -> None:
        self("apply", "-f", "-", input="\n".join(json.dumps(body) for body in bodies))


class Processes:
    """Every process the benchmark started; ``stop_all`` ends them (SIGTERM, then SIGKILL)."""

    def __init__(self) -> None:
        self.started: list[tuple[str, subprocess.Popen[bytes]]] = []

    def start(self, name: str, argv: list[str], log: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
        with log.open("ab") as out:
            # a session of its own: Ctrl-C reaches only the benchmark, which stops it in order
            process = subprocess.Popen(
                argv, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True
            )
        self.started.append((name, process))
        return process

    @staticmethod
    def stop(process: subprocess.Popen[bytes], timeout: float = 30) -> int | None:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)
        return process.returncode

    def stop_all(self) -> None:
        for _, process in reversed(self.started):
            self.stop(process)
        self.started.clear()


@contextlib.contextmanager
def control_plane(kubeconfig: str | None, workdir: Path) -> Iterator[tuple[str, Kubectl, bool]]:
    """(kubeconfig, kubectl, ours): the given cluster, or a local control plane started now and
    stopped (and its state directory deleted) when the block ends, however it ends."""
    if kubeconfig is not None:
        yield kubeconfig, Kubectl(os.environ.get("LUNA_TEST_KUBECTL", "kubectl"), kubeconfig), False
        return
    state_dir = workdir / "cluster"
    try:
        print("starting a local control plane (luna-cluster up) ...", file=sys.stderr, flush=True)
        started = time.monotonic()
        up = subprocess.run(
            [CLUSTER_CLI, "up", "--state-dir", str(state_dir)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            timeout=900,
        )
        if up.returncode:
            raise BenchError(f"luna-cluster up failed:\n{up.stderr[-3000:]}")
        print(f"control plane up in {time.monotonic() - started:.1f} s", file=sys.stderr, flush=True)
        config = str(state_dir / "kubeconfig")
        yield config, Kubectl(str(state_dir / "bin" / "kubectl"), config), True
    finally:
        subprocess.run(
            [CLUSTER_CLI, "down", "--state-dir", str(state_dir), "--purge"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            timeout=120,
            check=False,
        )


def install_crds(kubectl: Kubectl) -> None:
    """Apply the whole ``crds/`` folder and wait until every CRD is Established."""
    kubectl("apply", "-f", str(ROOT / "crds"))
    kubectl("wait", "--for=condition=Established", *(f"crd/{name}" for name in CRDS), "--timeout=60s")


def start_operator(
    processes: Processes, kubeconfig: str, namespace: str, log: Path, *extra: str
) -> subprocess.Popen[bytes]:
    """`luna-plugins operator --namespace NS [extra...]`; returns once its liveness endpoint answers."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("LUNA_")} | {"KUBECONFIG": kubeconfig}
    argv = [CLI, "operator", "--namespace", namespace, "--liveness", f"{HOST}:{port}"]
    process = processes.start("operator", [*argv, "--metrics", f"{HOST}:{free_port()}", *extra], log, env)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise BenchError(f"the operator exited with {process.returncode}; see {log}")
        try:
            with urllib.request.urlopen(f"http://{HOST}:{port}/healthz", timeout=1):
                return process
        except OSError:
            time.sleep(0.05)
    raise BenchError(f"the operator did not become live within 60 s; see {log}")


def release_plugins(kubectl: Kubectl, namespace: str) -> None:
    """Delete the namespace of a benchmark on a cluster we did not start; LunaPlugins that still
    carry the finalizer of an earlier operator version lose it first."""
    found = json.loads(kubectl.run("get", PLURAL, "-n", namespace, "-o", "json", check=False).stdout or "{}")
    for item in found.get("items", []):
        if item["metadata"].get("finalizers"):
            patch = ["--type=merge", "-p", '{"metadata":{"finalizers":null}}']
            kubectl.run("patch", "lunaplugin", item["metadata"]["name"], "-n", namespace, *patch, check=False)
    kubectl.run("delete", "namespace", namespace, "--wait=false", check=False)


@dataclass
class Waiter:
    predicate: Callable[[State], bool]
    done: threading.Event = field(default_factory=threading.Event)
    at: float | None = None
    """monotonic time of the event after which ``predicate`` first held"""


class Watch:
    """One long-lived watch on the LunaPlugins and one on the ConfigMaps of a namespace, in a
    background thread. ``expect(predicate)`` returns a :class:`Waiter` whose ``at`` is the
    arrival time of the first event after which ``predicate(state)`` holds."""

    def __init__(self, kubeconfig: str, namespace: str) -> None:
        self.kubeconfig = kubeconfig
        self.namespace = namespace
        self.state: State = {"lp": {}, "cm": {}}
        self.events = 0
        self.restarts: list[str] = []
        self._lock = threading.Lock()
        self._waiters: list[Waiter] = []
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="bench-watch", daemon=True)
        self._tasks: list[asyncio.Task[None]] = []
        self._listed = threading.Event()

    def __enter__(self) -> Watch:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(timeout=60)
        if not self._listed.wait(timeout=60):
            raise BenchError("the watches did not list within 60 s")
        return self

    def __exit__(self, *exc: object) -> None:
        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(self._stop(), self._loop).result(timeout=15)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=15)

    async def _start(self) -> None:
        from kubernetes_asyncio import client, config

        configuration = client.Configuration()
        await config.load_kube_config(config_file=self.kubeconfig, client_configuration=configuration)
        self.api = client.ApiClient(configuration)
        custom, core = client.CustomObjectsApi(self.api), client.CoreV1Api(self.api)
        listed = [asyncio.Event(), asyncio.Event()]
        plugins = (GROUP, VERSION, self.namespace, PLURAL)
        self._tasks = [
            asyncio.create_task(self._follow("lp", custom.list_namespaced_custom_object, plugins, listed[0])),
            asyncio.create_task(
                self._follow("cm", core.list_namespaced_config_map, (self.namespace,), listed[1])
            ),
        ]

        async def both() -> None:
            await asyncio.gather(*(event.wait() for event in listed))
            self._listed.set()

        self._tasks.append(asyncio.create_task(both()))

    async def _stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.api.close()

    async def _follow(self, kind: str, lister: Any, args: tuple[Any, ...], listed: asyncio.Event) -> None:
        from kubernetes_asyncio import watch

        while True:
            try:
                found = await lister(*args, _preload_content=False)
                body = json.loads(await found.read())
                if found.status != 200:
                    raise BenchError(f"HTTP {found.status}: {body.get('message')}")
                with self._lock:
                    self.state[kind] = {item["metadata"]["name"]: item for item in body["items"]}
                    self._check(time.monotonic())
                listed.set()
                version = body["metadata"]["resourceVersion"]
                while True:
                    stream = watch.Watch().stream(
                        lister,
                        *args,
                        resource_version=version,
                        timeout_seconds=240,
                        allow_watch_bookmarks=True,
                        _request_timeout=260,
                    )
                    async with stream:
                        async for event in stream:
                            arrived = time.monotonic()
                            item = event["raw_object"]
                            version = item["metadata"]["resourceVersion"]
                            if event["type"] == "BOOKMARK":
                                continue
                            with self._lock:
                                self.events += 1
                                objects = self.state[kind]
                                if event["type"] == "DELETED":
                                    objects.pop(item["metadata"]["name"], None)
                                else:
                                    objects[item["metadata"]["name"]] = item
                                self._check(arrived)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # 410 Gone, a dropped connection: list again
                self.restarts.append(f"{kind}: {type(exc).__name__}: {exc}"[:200])
                await asyncio.sleep(0.2)

    def _check(self, arrived: float) -> None:
        for waiter in list(self._waiters):
            if waiter.predicate(self.state):
                waiter.at = arrived
                waiter.done.set()
                self._waiters.remove(waiter)

    def expect(self, predicate: Callable[[State], bool]) -> Waiter:
        """Register before acting; if ``predicate`` already holds, ``at`` is now."""
        waiter = Waiter(predicate)
        with self._lock:
            if predicate(self.state):
                waiter.at = time.monotonic()
                waiter.done.set()
            else:
                self._waiters.append(waiter)
        return waiter

    def wait(self, waiter: Waiter, timeout: float, what: str) -> float:
        if not waiter.done.wait(timeout):
            with self._lock:
                if waiter in self._waiters:
                    self._waiters.remove(waiter)
            raise BenchError(f"timed out after {timeout:g} s waiting for {what}")
        assert waiter.at is not None
        return waiter.at


def is_ready(name: str, digest: str, loaded: str | None = None) -> Callable[[State], bool]:
    """The LunaPlugin is Ready with the code ``digest`` (and, if given, ``status.loaded``)."""

    def check(state: State) -> bool:
        status = (state["lp"].get(name) or {}).get("status") or {}
        return (
            status.get("phase") == "Ready"
            and status.get("codeHash") == digest
            and (loaded is None or status.get("loaded") == loaded)
        )

    return check


def log_warnings(log: Path, shown: int = 5) -> str:
    """How many WARNING/ERROR lines the operator logged, with the first few."""
    lines = [
        line
        for line in log.read_text(errors="replace").splitlines()
        if " WARNING " in line or " ERROR " in line
    ]
    head = "".join(f"\n  {line[:300]}" for line in lines[:shown])
    return f"operator log: {len(lines)} warning/error line(s){head}"


def table(title: str, rows: list[tuple[str, list[float]]], targets: dict[str, tuple[float, float]]) -> str:
    """A Markdown table: n, p50, p95, max (ms) per row, with PASS/MISS where a row has targets."""
    lines = [
        f"| {title} | n | p50 ms | p95 ms | max ms | target p50 / p95 | result |",
        "|---|---:|---:|---:|---:|---|---|",
    ]
    for name, values in rows:
        n, p50, p95, worst = summary(values)
        goal = targets.get(name)
        if goal is None:
            aim, verdict = "", ""
        else:
            aim = f"≤ {goal[0] * 1000:.0f} / ≤ {goal[1] * 1000:.0f} ms"
            verdict = "PASS" if n and p50 <= goal[0] * 1000 and p95 <= goal[1] * 1000 else "MISS"
        lines.append(f"| {name} | {n} | {p50:.0f} | {p95:.0f} | {worst:.0f} | {aim} | {verdict} |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--kubeconfig", help="use this cluster instead of starting a local control plane")
    parser.add_argument("--keep-logs", action="store_true", help="keep the operator and sidecar logs")
    parser.add_argument("--applies", type=int, default=20, help="creates and as many updates (20)")
    parser.add_argument("--plugins", type=int, default=200, help="plugins for the start-up run (200)")
    parser.add_argument("--services", type=int, default=5, help="services they are spread over (5)")
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for one apply (30)")
    options = parser.parse_args()
    return bench_main("operator_bench", "bench-op", options, run)


@dataclass(frozen=True)
class BenchRun:
    """What a benchmark body gets from :func:`bench_main`."""

    options: argparse.Namespace
    kubeconfig: str
    kubectl: Kubectl
    namespace: str
    watch: Watch
    processes: Processes
    workdir: Path


def bench_main(
    name: str, prefix: str, options: argparse.Namespace, body: Callable[[BenchRun], object]
) -> int:
    """The frame both Kubernetes benchmarks share: a control plane (ours or --kubeconfig), the
    CRDs, a namespace and a status watch, handed to ``body`` as a :class:`BenchRun`; every
    process stopped and the workdir removed at the end, also on errors and SIGTERM/Ctrl-C.
    Returns the exit code."""
    raise_on_sigterm()
    workdir = Path(tempfile.mkdtemp(prefix=f"luna-{prefix}-"))
    processes = Processes()
    failed = True
    try:
        with control_plane(options.kubeconfig, workdir) as (kubeconfig, kubectl, ours):
            install_crds(kubectl)
            namespace = f"{prefix}-{os.getpid()}"
            kubectl("create", "namespace", namespace)
            try:
                with Watch(kubeconfig, namespace) as watch:
                    body(BenchRun(options, kubeconfig, kubectl, namespace, watch, processes, workdir))
            finally:
                processes.stop_all()
                if not ours:
                    release_plugins(kubectl, namespace)
        failed = False
        return 0
    except BenchError as exc:
        print(f"{name}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"{name}: interrupted", file=sys.stderr)
        return 130
    finally:
        processes.stop_all()
        if failed or options.keep_logs:
            print(f"logs kept in {workdir}", file=sys.stderr)
        else:
            shutil.rmtree(workdir, ignore_errors=True)


def run(bench: BenchRun) -> None:
    options, kubeconfig, kubectl, namespace = bench.options, bench.kubeconfig, bench.kubectl, bench.namespace
    watch, processes, workdir = bench.watch, bench.processes, bench.workdir
    log = workdir / "operator.log"
    warm_up: list[float] = []

    # 1. kubectl apply -> Ready with the new hash, one plugin at a time: a create, then an update of it
    operator = start_operator(processes, kubeconfig, namespace, log)
    # warm-up, not counted: the service's first reconcile; the first `kubectl apply` of an existing
    # object makes the API server build its OpenAPI v2 document (once, ~0.5 s)
    for answer in ("w1", "w2"):
        warm = manifest("warm-up", namespace, route_code("/warm-up", answer), "latency")
        waiter = watch.expect(is_ready("warm-up", code_hash(warm["spec"]["code"])))
        started = time.monotonic()
        kubectl.apply(warm)
        warm_up.append(time.monotonic() - started)
        watch.wait(waiter, options.timeout, "the warm-up plugin")
    latencies: dict[str, list[float]] = {"create": [], "update": []}
    kubectl_seconds: list[float] = []
    for index in range(options.applies):
        name = f"lat-{index}"
        for kind, answer in (("create", f"v1-{index}"), ("update", f"v2-{index}")):
            body = manifest(name, namespace, route_code(f"/{name}", answer), "latency")
            waiter = watch.expect(is_ready(name, code_hash(body["spec"]["code"])))
            started = time.monotonic()
            kubectl.apply(body)
            kubectl_seconds.append(time.monotonic() - started)
            latencies[kind].append(
                watch.wait(waiter, options.timeout, f"{name} ({kind}) to be Ready") - started
            )
    started = time.monotonic()
    code = Processes.stop(operator)
    stops = [(time.monotonic() - started, code)]

    # 2. N plugins across S services, created while the operator is down; time to all Ready after its start
    bulk = [
        manifest(f"bulk-{i}", namespace, route_code(f"/bulk-{i}", str(i)), f"svc-{i % options.services}")
        for i in range(options.plugins)
    ]
    kubectl.apply(*bulk)
    wanted = {body["metadata"]["name"]: code_hash(body["spec"]["code"]) for body in bulk}

    def all_ready(state: State) -> bool:
        return all(is_ready(name, digest)(state) for name, digest in wanted.items())

    waiter = watch.expect(all_ready)
    started = time.monotonic()
    operator = start_operator(processes, kubeconfig, namespace, log)
    live = time.monotonic() - started
    try:
        at = watch.wait(waiter, 300, f"{options.plugins} plugins to be Ready")
    except BenchError:
        ready = sum(is_ready(name, digest)(watch.state) for name, digest in wanted.items())
        raise BenchError(f"only {ready} of {options.plugins} plugins Ready after 300 s") from None
    bulk_seconds = at - started
    rss, peak = rss_mib(operator.pid)
    time.sleep(3)  # settle: statuses written, nothing queued
    rss_after, peak_after = rss_mib(operator.pid)
    started = time.monotonic()
    code = Processes.stop(operator)
    stops.append((time.monotonic() - started, code))

    print()
    rows = [("create", latencies["create"]), ("update", latencies["update"])]
    print(table("kubectl apply → Ready (new hash)", rows, {}))
    n, p50, p95, _ = summary(kubectl_seconds)
    print(f"\nkubectl apply itself (process start to exit), all {n}: p50 {p50:.0f} ms, p95 {p95:.0f} ms")
    print(f"(uncounted warm-up: create {warm_up[0] * 1000:.0f} ms, first update {warm_up[1] * 1000:.0f} ms)")
    verdict = "PASS" if bulk_seconds < BULK_TARGET_SECONDS else "MISS"
    print(
        f"\n{options.plugins} plugins across {options.services} services all Ready {bulk_seconds:.2f} s "
        f"after the operator process was started (liveness after {live:.2f} s); "
        f"target < {BULK_TARGET_SECONDS:.0f} s: {verdict}"
    )
    total = options.plugins + options.applies + 1
    print(
        f"operator memory with {total} plugins in {options.services + 1} services: RSS {rss:.0f} MiB "
        f"when all were Ready, {rss_after:.0f} MiB 3 s later; peak (VmHWM) {max(peak, peak_after):.0f} MiB"
    )
    shown = ", ".join(f"{seconds:.1f} s (exit {code})" for seconds, code in stops)
    print(f"operator stopped after SIGTERM in: {shown}")
    print(f"watch: {watch.events} events, {len(watch.restarts)} restart(s) {watch.restarts}")
    print(log_warnings(log))


if __name__ == "__main__":
    sys.exit(main())
