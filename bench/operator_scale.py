"""What the operator costs against N reporting sidecars, at rest and during rollouts.

    .venv/bin/python bench/operator_scale.py [--pods 50,200,500,1000] [--services 1,5] [--plugins 200]
        [--reports compact,full]

For each (pods, services) pair, in a namespace of its own on a local control plane started with
``cluster up --audit-log`` (or ``--kubeconfig`` with ``--audit-log FILE`` of that cluster):

1. ``--plugins`` LunaPlugins spread over the services, the operator started as a process (fresh
   for each pair), until all are Ready;
2. ``--pods`` simulated sidecars (``bench/sidecar_fleet.py``: the sidecar's own report writer and
   ConfigMap mirror, no pods; see that file for what is and is not real), spread over the
   services, until every plugin's ``status.loaded`` counts all pods of its service;
3. **at rest** for ``--rest`` seconds: operator CPU per second (``/proc/PID/stat``), the
   operator's API requests per second (the API server's audit log, requests whose user agent is
   the operator's: ``kopf/...`` or ``luna-plugins-operator``), every client's requests per
   second (``apiserver_request_total``), the operator's passes by kind (its own ``/metrics``),
   RSS;
4. **rollouts**: ``--rollouts`` times, a new version of one plugin (a merge patch of its
   ``spec.code``, round robin over the services), ``--rollout-interval`` seconds apart; for each,
   the time from the patch until every simulated sidecar of that service reported the new hash
   (the fleet stamps each report write once the API server answered it), and the operator's CPU
   and requests over the whole rollout phase; then the time until ``status.loaded`` counts every
   pod on the last version.

``--reports compact,full`` runs every pair twice in the same run: with the reports sidecars
write (the active list's revision and the differences) and with the full reports they wrote
before (every module in every report), the baseline.

Prints a table per pair and a summary against the targets at N = 500 (operator at rest < 5 % of
a core and < 5 API requests/s; apply -> all reports on the new hash p95 < 5 s; RSS < 250 MiB).
``--output FILE`` writes the raw figures as JSON. Every process it starts is stopped at the end,
also on an error, Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from operator_bench import (  # bench/ is not a package
    CLUSTER_CLI,
    GROUP,
    HOST,
    PLURAL,
    VERSION,
    BenchError,
    Kubectl,
    Processes,
    code_hash,
    free_port,
    install_crds,
    percentile,
    raise_on_sigterm,
    route_code,
    rss_mib,
    start_operator,
)

FLEET = Path(__file__).resolve().with_name("sidecar_fleet.py")
OPERATOR_AGENTS = ("kopf/", "luna-plugins-operator")
BENCH_AGENT = "luna-plugins-bench"
TARGET_PODS = 500
TARGETS = {"rest_cpu": 5.0, "rest_requests": 5.0, "p95": 5.0, "rss": 250.0}


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of ``pid`` so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def load_average() -> float:
    return float(Path("/proc/loadavg").read_text().split()[0])


class AuditLog:
    """Counts requests in the API server's audit log from a remembered offset on."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = path.stat().st_size if path.exists() else 0

    def mark(self) -> None:
        self.offset = self.path.stat().st_size if self.path.exists() else 0

    def count(self) -> dict[str, Any]:
        """Requests since the mark: the operator's by verb/resource, and every client's by user agent."""
        operator: dict[str, int] = defaultdict(int)
        agents: dict[str, int] = defaultdict(int)
        with self.path.open("rb") as log:
            log.seek(self.offset)
            data = log.read()
        self.offset += len(data)
        for line in data.splitlines():
            try:
                event = json.loads(line)
            except ValueError:
                continue
            watch = event.get("verb") == "watch"
            if event.get("stage") != ("ResponseStarted" if watch else "ResponseComplete"):
                continue
            agent = str(event.get("userAgent") or "")
            agents[agent.split(" ")[0][:40]] += 1
            if agent.startswith(OPERATOR_AGENTS):
                ref = event.get("objectRef") or {}
                resource = "/".join(filter(None, (ref.get("resource"), ref.get("subresource"))))
                operator[f"{event.get('verb')} {resource}"] += 1
        return {"operator": dict(operator), "agents": dict(agents)}


def metric_sum(text: str, name: str, **labels: str) -> float:
    """The sum of a metric's samples in Prometheus text whose labels include ``labels``."""
    from prometheus_client.parser import text_string_to_metric_families

    total = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                total += sample.value
    return total


@dataclass
class Phase:
    """Figures of one measured phase."""

    seconds: float = 0.0
    operator_cpu_percent: float = 0.0
    operator_requests_per_s: float = 0.0
    operator_requests: dict[str, int] = field(default_factory=dict)
    agents: dict[str, int] = field(default_factory=dict)
    """requests by user agent (first word), every client"""
    all_requests_per_s: float = 0.0
    apiserver_cpu_percent: float | None = None
    fleet_cpu_percent: float | None = None
    full_passes: float = 0.0
    status_passes: float = 0.0
    load: tuple[float, float] = (0.0, 0.0)


@dataclass
class Result:
    pods: int
    services: int
    plugins: int
    reports: str = "compact"
    """what the simulated sidecars write: ``compact`` or ``full``"""
    report_bytes: float = 0.0
    """the mean size of one report's spec as JSON, at rest"""
    watches: int = 0
    """ConfigMap watches of the simulated sidecars besides the shared one per service"""
    rest: Phase = field(default_factory=Phase)
    rollout: Phase = field(default_factory=Phase)
    all_reports_seconds: list[float] = field(default_factory=list)
    """per rollout: apply -> every simulated sidecar of the service reported the new hash"""
    report_seconds: list[float] = field(default_factory=list)
    """per report: apply -> that sidecar reported the new hash"""
    desired_seconds: list[float] = field(default_factory=list)
    """per rollout: apply -> the simulated sidecars saw the new desired state (the operator's
    part: check, render, active list, and the watch delivering it)"""
    loaded_seconds: list[float] = field(default_factory=list)
    """per rollout: apply -> status.loaded counts every pod of the service on the new version"""
    loaded_missed: list[str] = field(default_factory=list)
    """rollouts whose status.loaded never showed every pod on the new version in time"""
    reports_missed: list[str] = field(default_factory=list)
    """rollouts where not every simulated sidecar reported the new hash in time"""
    rss_mib: float = 0.0
    peak_rss_mib: float = 0.0


class Fleet:
    """The simulated sidecars (a subprocess) and the report writes they announce."""

    def __init__(
        self,
        processes: Processes,
        kubeconfig: str,
        namespace: str,
        services: list[str],
        pods: int,
        log: Path,
        reports: str,
        watches: str = "shared",
    ):
        env = {**os.environ, "KUBECONFIG": kubeconfig}
        argv = [sys.executable, str(FLEET), "--kubeconfig", kubeconfig, "--namespace", namespace]
        argv += ["--services", ",".join(services), "--pods", str(pods), "--reports", reports]
        argv += ["--watches", watches]
        with log.open("ab") as err:
            self.process = subprocess.Popen(
                argv, stdout=subprocess.PIPE, stderr=err, env=env, start_new_session=True
            )
        processes.started.append(("fleet", self.process))
        self.writes: list[dict[str, Any]] = []
        self.report_bytes = 0.0
        """the mean size of a report's spec (JSON) once all simulated sidecars reported"""
        self.watches = 0
        """per-pod ConfigMap watches open by then (``--watches per-pod``)"""
        self.applied: list[tuple[float, str]] = []
        self.ready = threading.Event()
        self._lock = threading.Lock()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            if "ready" in entry:
                self.report_bytes = float(entry.get("report_bytes") or 0)
                self.watches = int(entry.get("watches") or 0)
                self.ready.set()
            elif "applied" in entry:
                with self._lock:
                    self.applied.append((float(entry["t"]), str(entry["applied"])))
            else:
                with self._lock:
                    self.writes.append(entry)

    def first_applied(self, service: str, after: float) -> float | None:
        """When the sidecars of ``service`` first took a new desired state after ``after``."""
        with self._lock:
            return min((t for t, s in self.applied if s == service and t >= after), default=None)

    def reported(self, module: str, digest: str, after: float) -> dict[str, float]:
        """pod -> when it reported ``module`` on ``digest``, for writes after ``after``."""
        with self._lock:
            return {
                w["pod"]: w["t"]
                for w in self.writes
                if w["t"] >= after and w["changed"].get(module) == digest
            }


class Api:
    """The few reads and writes the benchmark itself makes (user agent ``luna-plugins-bench``)."""

    def __init__(self, kubeconfig: str) -> None:
        self.kubeconfig = kubeconfig
        self.loop = asyncio.new_event_loop()
        self.loop.run_until_complete(self._connect())

    async def _connect(self) -> None:
        from kubernetes_asyncio import client, config

        configuration = client.Configuration()
        await config.load_kube_config(config_file=self.kubeconfig, client_configuration=configuration)
        self.client = client.ApiClient(configuration)
        self.client.user_agent = BENCH_AGENT
        self.custom = client.CustomObjectsApi(self.client)
        self.configuration = configuration

    def run(self, coroutine: Any) -> Any:
        return self.loop.run_until_complete(coroutine)

    def create_plugins(self, namespace: str, bodies: list[dict[str, Any]]) -> None:
        async def create_all() -> None:
            semaphore = asyncio.Semaphore(16)

            async def create(body: dict[str, Any]) -> None:
                async with semaphore:
                    await self.custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, body)

            await asyncio.gather(*(create(body) for body in bodies))

        self.run(create_all())

    def patch_code(self, namespace: str, name: str, code: str) -> None:
        self.run(
            self.custom.patch_namespaced_custom_object(
                GROUP,
                VERSION,
                namespace,
                PLURAL,
                name,
                {"spec": {"code": code}},
                _content_type="application/merge-patch+json",
            )
        )

    def loaded(self, namespace: str, name: str, digest: str) -> str | None:
        """The plugin's ``status.loaded`` once its status names ``digest`` as in service."""
        found = self.run(self.custom.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name))
        status = found.get("status") or {}
        return status.get("loaded") if status.get("codeHash") == digest else None

    def statuses(self, namespace: str) -> dict[str, dict[str, Any]]:
        found = self.run(self.custom.list_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL))
        return {item["metadata"]["name"]: item.get("status") or {} for item in found["items"]}

    def apiserver_requests(self) -> float:
        """Every client's requests so far (``apiserver_request_total``)."""

        async def scrape() -> str:
            response = await self.client.call_api(
                "/metrics",
                "GET",
                auth_settings=["BearerToken"],
                _preload_content=False,
                response_types_map={},
            )
            return str((await response.read()).decode())

        return metric_sum(self.run(scrape()), "apiserver_request_total")

    def close(self) -> None:
        self.run(self.client.close())
        self.loop.close()


def wait(condition: Any, timeout: float, what: str, interval: float = 1.0) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if condition():
            return time.monotonic() - started
        time.sleep(interval)
    raise BenchError(f"timed out after {timeout:g} s waiting for {what}")


def operator_metrics(port: int) -> str:
    with urllib.request.urlopen(f"http://{HOST}:{port}/metrics", timeout=5) as reply:
        return str(reply.read().decode())


class Measure:
    """CPU, requests and passes over one phase."""

    def __init__(
        self,
        operator_pid: int,
        apiserver_pid: int | None,
        audit: AuditLog,
        api: Api,
        metrics_port: int,
        fleet_pid: int | None = None,
    ):
        self.operator_pid, self.apiserver_pid, self.fleet_pid = operator_pid, apiserver_pid, fleet_pid
        self.audit, self.api, self.metrics_port = audit, api, metrics_port

    def start(self) -> None:
        self.audit.mark()
        self.started = time.monotonic()
        self.cpu = cpu_seconds(self.operator_pid)
        self.api_cpu = cpu_seconds(self.apiserver_pid) if self.apiserver_pid else None
        self.fleet_cpu = cpu_seconds(self.fleet_pid) if self.fleet_pid else None
        self.requests = self.api.apiserver_requests()
        self.load = load_average()
        text = operator_metrics(self.metrics_port)
        self.passes = (
            metric_sum(text, "luna_operator_passes_total", kind="full"),
            metric_sum(text, "luna_operator_passes_total", kind="status"),
        )

    def stop(self) -> Phase:
        seconds = time.monotonic() - self.started
        cpu = cpu_seconds(self.operator_pid) - self.cpu
        counted = self.audit.count()
        requests = self.api.apiserver_requests() - self.requests
        text = operator_metrics(self.metrics_port)
        phase = Phase(
            seconds=seconds,
            operator_cpu_percent=100 * cpu / seconds,
            operator_requests_per_s=sum(counted["operator"].values()) / seconds,
            operator_requests=counted["operator"],
            agents=counted["agents"],
            all_requests_per_s=requests / seconds,
            full_passes=metric_sum(text, "luna_operator_passes_total", kind="full") - self.passes[0],
            status_passes=metric_sum(text, "luna_operator_passes_total", kind="status") - self.passes[1],
            load=(self.load, load_average()),
        )
        if self.apiserver_pid and self.api_cpu is not None:
            phase.apiserver_cpu_percent = 100 * (cpu_seconds(self.apiserver_pid) - self.api_cpu) / seconds
        if self.fleet_pid and self.fleet_cpu is not None:
            phase.fleet_cpu_percent = 100 * (cpu_seconds(self.fleet_pid) - self.fleet_cpu) / seconds
        return phase


def scenario(
    options: argparse.Namespace,
    kubectl: Kubectl,
    kubeconfig: str,
    audit_path: Path,
    apiserver_pid: int | None,
    pods: int,
    services: int,
    reports: str,
    workdir: Path,
) -> Result:
    namespace = f"scale-{pods}-{services}-{reports}-{os.getpid()}"
    kubectl("create", "namespace", namespace)
    processes = Processes()
    api = Api(kubeconfig)
    result = Result(pods, services, options.plugins, reports)
    names = [f"svc-{index}" for index in range(services)]
    per_service = {name: sum(1 for i in range(pods) if i % services == k) for k, name in enumerate(names)}
    try:
        plugins = {f"p-{index:03d}": names[index % services] for index in range(options.plugins)}
        bodies = [
            {
                "apiVersion": f"{GROUP}/{VERSION}",
                "kind": "LunaPlugin",
                "metadata": {"name": name},
                "spec": {"service": service, "code": route_code(f"/{name}", "v0")},
            }
            for name, service in plugins.items()
        ]
        api.create_plugins(namespace, bodies)
        metrics_port = free_port()
        log = workdir / f"operator-{pods}-{services}-{reports}.log"
        operator = start_operator(
            processes, kubeconfig, namespace, log, "--metrics", f"{HOST}:{metrics_port}"
        )
        wait(
            lambda: (
                sum(s.get("phase") == "Ready" for s in api.statuses(namespace).values()) == options.plugins
            ),
            180,
            f"{options.plugins} plugins to be Ready",
        )
        print(
            f"  {options.plugins} plugins Ready; starting {pods} simulated sidecars",
            file=sys.stderr,
            flush=True,
        )
        fleet_log = workdir / f"fleet-{pods}-{services}-{reports}.log"
        fleet = Fleet(processes, kubeconfig, namespace, names, pods, fleet_log, reports, options.watches)
        if not fleet.ready.wait(timeout=120):
            raise BenchError(f"the simulated sidecars did not all report within 120 s; see {workdir}")
        result.report_bytes = fleet.report_bytes
        result.watches = fleet.watches
        if options.watches == "per-pod" and fleet.watches < pods:
            raise BenchError(f"only {fleet.watches} of {pods} per-pod watches are open; see {workdir}")

        def all_loaded() -> bool:
            statuses = api.statuses(namespace)
            return all(
                statuses.get(name, {}).get("loaded") == f"{per_service[service]}/{per_service[service]}"
                for name, service in plugins.items()
            )

        converged = wait(all_loaded, 180, "status.loaded to count every pod", interval=2.0)
        print(
            f"  every status.loaded counts all pods after {converged:.1f} s "
            f"({result.watches} per-pod watches); settling",
            file=sys.stderr,
            flush=True,
        )
        time.sleep(options.settle)
        measure = Measure(
            operator.pid, apiserver_pid, AuditLog(audit_path), api, metrics_port, fleet.process.pid
        )
        measure.start()
        time.sleep(options.rest)
        result.rest = measure.stop()
        result.rss_mib, _ = rss_mib(operator.pid)
        print(
            f"  at rest: {result.rest.operator_cpu_percent:.1f} % CPU, "
            f"{result.rest.operator_requests_per_s:.2f} requests/s; rolling out",
            file=sys.stderr,
            flush=True,
        )

        measure.start()
        for index in range(options.rollouts):
            name = list(plugins)[
                (index * (options.plugins // max(1, options.rollouts)) + index) % options.plugins
            ]
            service = plugins[name]
            code = route_code(f"/{name}", f"v{index + 1}")
            digest = code_hash(code)
            module = name.replace("-", "_")
            expected = per_service[service]
            started = time.monotonic()
            api.patch_code(namespace, name, code)
            try:
                wait(
                    lambda module=module, digest=digest, started=started, expected=expected: (
                        len(fleet.reported(module, digest, started)) >= expected
                    ),
                    options.timeout,
                    f"all {expected} sidecars of {service} to report {name}'s new hash",
                    interval=0.05,
                )
            except BenchError:  # reported, and the next rollouts still run
                got = len(fleet.reported(module, digest, started))
                result.reports_missed.append(
                    f"rollout {index + 1}: {got} of {expected} reports on the new hash "
                    f"after {options.timeout:g} s"
                )
                continue
            times = [t - started for t in fleet.reported(module, digest, started).values()]
            applied = fleet.first_applied(service, started)
            if applied is not None:
                result.desired_seconds.append(applied - started)
            result.report_seconds += times
            result.all_reports_seconds.append(max(times))
            wanted = f"{expected}/{expected}"
            seen: list[str | None] = [None]

            def counted(
                name: str = name, digest: str = digest, wanted: str = wanted, seen: list[str | None] = seen
            ) -> bool:
                seen[0] = api.loaded(namespace, name, digest)
                return seen[0] == wanted

            try:
                wait(counted, options.timeout, f"status.loaded {wanted} of {name}", interval=0.1)
                result.loaded_seconds.append(time.monotonic() - started)
            except BenchError:  # reported, not fatal: e.g. a pod whose heartbeat came too late to count
                result.loaded_missed.append(f"{name}: {seen[0]} after {options.timeout:g} s")
            remaining = options.rollout_interval - (time.monotonic() - started)
            if remaining > 0:
                time.sleep(remaining)
        result.rollout = measure.stop()
        result.rss_mib = max(result.rss_mib, rss_mib(operator.pid)[0])
        result.peak_rss_mib = rss_mib(operator.pid)[1]
        return result
    finally:
        processes.stop_all()
        api.close()
        # waited for: the garbage collector's work must not weigh on the next pair's figures
        kubectl.run("delete", "namespace", namespace, "--timeout=300s", check=False, timeout=320)


def summary(values: list[float]) -> str:
    if not values:
        return "-"
    return f"{statistics.median(values):.2f} / {percentile(values, 0.95):.2f} / {max(values):.2f}"


def _percent(value: float | None) -> str:
    return f"{value:.0f} %" if value is not None else "-"


def _per_second(count: float, phase: Phase) -> str:
    return f"{count / phase.seconds:.2f}" if phase.seconds else "-"


def report(results: list[Result]) -> str:
    lines = [
        "At rest (operator CPU in % of one core; requests per second):",
        "",
        "| pods | services | reports | report bytes | operator CPU | operator requests | "
        "all clients' requests | API server CPU | full passes | status passes | RSS (peak) MiB |",
        "|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in results:
        rest = r.rest
        cells = [
            str(r.pods),
            str(r.services),
            r.reports,
            f"{r.report_bytes:.0f}",
            f"{rest.operator_cpu_percent:.1f} %",
            f"{rest.operator_requests_per_s:.2f}",
            f"{rest.all_requests_per_s:.1f}",
            _percent(rest.apiserver_cpu_percent),
            _per_second(rest.full_passes, rest),
            _per_second(rest.status_passes, rest),
            f"{r.rss_mib:.0f} ({r.peak_rss_mib:.0f})",
        ]
        lines.append(f"| {' | '.join(cells)} |")
    lines += [
        "",
        "Rollouts (seconds after the patch of spec.code; p50 / p95 / max):",
        "",
        "| pods | services | reports | operator CPU | operator requests/s | full, status passes/s | "
        "sidecars see the new desired state | every report on the new hash | one report | "
        "status.loaded N/N |",
        "|---:|---:|---|---:|---:|---|---|---|---|---|",
    ]
    for r in results:
        roll = r.rollout
        cells = [
            str(r.pods),
            str(r.services),
            r.reports,
            f"{roll.operator_cpu_percent:.1f} %",
            f"{roll.operator_requests_per_s:.2f}",
            f"{_per_second(roll.full_passes, roll)}, {_per_second(roll.status_passes, roll)}",
            summary(r.desired_seconds),
            summary(r.all_reports_seconds),
            summary(r.report_seconds),
            summary(r.loaded_seconds),
        ]
        lines.append(f"| {' | '.join(cells)} |")
    lines.append("")
    for r in results:
        for name, phase in (("rest", r.rest), ("rollouts", r.rollout)):
            api_cpu = (
                f", API server {phase.apiserver_cpu_percent:.0f} % CPU" if phase.apiserver_cpu_percent else ""
            )
            if phase.fleet_cpu_percent is not None:
                api_cpu += f", simulated sidecars {phase.fleet_cpu_percent:.0f} % CPU"
            top = sorted(phase.operator_requests.items(), key=lambda kv: -kv[1])[:6]
            agents = sorted(phase.agents.items(), key=lambda kv: -kv[1])[:4]
            lines.append(
                f"- N={r.pods}, {r.services} service(s), {r.reports} reports, {name} "
                f"({phase.seconds:.0f} s, load "
                f"{phase.load[0]:.1f} -> {phase.load[1]:.1f}{api_cpu}): operator requests "
                f"{', '.join(f'{k} {v}' for k, v in top) or 'none'}; all requests by user agent "
                f"{', '.join(f'{k} {v}' for k, v in agents) or 'none'}"
            )
    for r in results:
        for missed in r.reports_missed:
            lines.append(f"- N={r.pods}, {r.services} service(s), {r.reports} reports: {missed}")
        for missed in r.loaded_missed:
            lines.append(
                f"- N={r.pods}, {r.services} service(s), {r.reports} reports: "
                f"status.loaded not N/N in time: {missed}"
            )
    targets = [r for r in results if r.pods == TARGET_PODS]
    for r in targets:
        checks = [
            ("CPU at rest < 5 % of a core", r.rest.operator_cpu_percent < TARGETS["rest_cpu"]),
            ("< 5 API requests/s at rest", r.rest.operator_requests_per_s < TARGETS["rest_requests"]),
            (
                "apply -> all reports p95 < 5 s",
                bool(r.all_reports_seconds)
                and not r.reports_missed
                and percentile(r.all_reports_seconds, 0.95) < TARGETS["p95"],
            ),
            ("RSS < 250 MiB", max(r.rss_mib, r.peak_rss_mib) < TARGETS["rss"]),
        ]
        verdicts = ", ".join(f"{what}: {'PASS' if ok else 'MISS'}" for what, ok in checks)
        lines.append(
            f"\nTargets at N = {TARGET_PODS} with {r.services} service(s), {r.reports} reports: {verdicts}"
        )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--kubeconfig", help="use this cluster (with --audit-log) instead of starting one")
    parser.add_argument("--audit-log", help="the API server audit log of --kubeconfig's cluster")
    parser.add_argument("--pods", default="500", help="comma-separated numbers of simulated sidecars (500)")
    parser.add_argument("--services", default="1", help="comma-separated numbers of services (1)")
    parser.add_argument("--plugins", type=int, default=200, help="LunaPlugins (200)")
    parser.add_argument(
        "--reports",
        default="compact",
        help="comma-separated: compact (what sidecars write) and/or full (the old reports, a baseline)",
    )
    parser.add_argument("--settle", type=float, default=15.0, help="seconds before measuring at rest (15)")
    parser.add_argument("--rest", type=float, default=60.0, help="seconds measured at rest (60)")
    parser.add_argument("--rollouts", type=int, default=5, help="rollouts (5)")
    parser.add_argument("--rollout-interval", type=float, default=10.0, help="seconds between rollouts (10)")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds one rollout may take (60)")
    parser.add_argument(
        "--watches",
        choices=("shared", "per-pod"),
        default="shared",
        help="shared: the simulated sidecars of a service share one ConfigMap watch; per-pod: each "
        "also holds its own, as real sidecars do (see bench/sidecar_fleet.py) (shared)",
    )
    parser.add_argument("--output", help="write the raw figures as JSON")
    parser.add_argument("--keep-logs", action="store_true", help="keep the operator and fleet logs")
    options = parser.parse_args()
    if not set(options.reports.split(",")) <= {"compact", "full"}:
        parser.error("--reports takes compact and/or full, comma-separated")
    if options.kubeconfig and not options.audit_log:
        parser.error("--kubeconfig needs --audit-log: the operator's requests are counted from it")
    raise_on_sigterm()
    workdir = Path(tempfile.mkdtemp(prefix="luna-scale-"))
    state_dir = workdir / "cluster"
    failed = True
    results: list[Result] = []
    try:
        if options.kubeconfig:
            kubeconfig, audit, apiserver_pid = options.kubeconfig, Path(options.audit_log), None
            kubectl = Kubectl(os.environ.get("LUNA_TEST_KUBECTL", "kubectl"), kubeconfig)
        else:
            print("starting a local control plane (cluster up --audit-log) ...", file=sys.stderr, flush=True)
            up = subprocess.run(
                [CLUSTER_CLI, "up", "--audit-log", "--state-dir", str(state_dir)],
                capture_output=True,
                text=True,
                timeout=900,
            )
            if up.returncode:
                raise BenchError(f"cluster up failed:\n{up.stderr[-3000:]}")
            kubeconfig = str(state_dir / "kubeconfig")
            kubectl = Kubectl(str(state_dir / "bin" / "kubectl"), kubeconfig)
            audit = state_dir / "logs" / "kube-apiserver-audit.log"
            apiserver_pid = int((state_dir / "run" / "kube-apiserver.pid").read_text().split()[0])
        install_crds(kubectl)
        for services in (int(s) for s in options.services.split(",")):
            for pods in (int(p) for p in options.pods.split(",")):
                for reports in options.reports.split(","):
                    print(
                        f"N = {pods} simulated sidecars, {services} service(s), {reports} reports:",
                        file=sys.stderr,
                        flush=True,
                    )
                    results.append(
                        scenario(
                            options,
                            kubectl,
                            kubeconfig,
                            audit,
                            apiserver_pid,
                            pods,
                            services,
                            reports,
                            workdir,
                        )
                    )
        print(report(results))
        if options.output:
            Path(options.output).write_text(json.dumps([asdict(r) for r in results], indent=2))
        failed = False
        return 0
    except BenchError as exc:
        print(f"operator_scale: {exc}", file=sys.stderr)
        if results:
            print(report(results))
        return 1
    except KeyboardInterrupt:
        print("operator_scale: interrupted", file=sys.stderr)
        return 130
    finally:
        if not options.kubeconfig:
            subprocess.run(
                [CLUSTER_CLI, "down", "--state-dir", str(state_dir)],
                capture_output=True,
                timeout=120,
                check=False,
            )
        if failed or options.keep_logs:
            print(f"logs kept in {workdir}", file=sys.stderr)
        else:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
