"""The operator's Prometheus metrics, in a registry of their own (served by :mod:`metrics_http`).

Label names avoid those Prometheus' Kubernetes discovery and prometheus-operator put on every
target (``namespace``, ``service``, ``pod``): a LunaPlugin's namespace and service are
``luna_namespace`` and ``luna_service``, so they are never renamed to ``exported_*``.

Cardinality is bounded whatever the cluster holds: at most ``max_services`` (namespace, service)
pairs and ``max_plugins`` plugins get series of their own; the others are counted under
``_other``. Counters and histograms are updated where things happen; gauges are read at scrape
time from the :class:`GaugeSources` the operator hands in, so nothing is kept twice.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from luna_contract.build_info import register_build_info

OTHER = "_other"
"""label value standing for every service or plugin beyond the bound"""
PASS_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
WEBHOOK_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
DELAY_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
PHASES = ("Pending", "Ready", "Invalid", "Disabled")


class BoundedLabels:
    """The first ``limit`` distinct keys keep their own label values; later ones map to
    ``_other`` (for counters, whose series must keep their meaning once created)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._known: set[tuple[str, ...]] = set()

    def __call__(self, *values: str) -> tuple[str, ...]:
        if values in self._known:
            return values
        if len(self._known) < self.limit:
            self._known.add(values)
            return values
        return (OTHER,) * len(values)


@dataclass(frozen=True)
class ServiceGauges:
    """What a gauge collector reads for one service at scrape time."""

    namespace: str
    service: str
    fresh: int
    stale: int
    oldest_age: float


@dataclass(frozen=True)
class PluginGauges:
    """One LunaPlugin's pods, as its last status computation found them."""

    namespace: str
    service: str
    plugin: str
    outdated: int
    """pods counted in ``status.loaded``'s denominator that do not run the version in service"""
    failing: int
    """pods that report an error for it (its version failed to load, or it failed)"""


@dataclass
class GaugeSources:
    """Callables the gauge collector reads at scrape time (each must be cheap and not raise)."""

    pending: Callable[[], dict[str, int]] = dict
    """passes waiting to run, by kind"""
    running: Callable[[], int] = lambda: 0
    phases: Callable[[], dict[str, int]] = dict
    """LunaPlugins by the phase the last pass decided"""
    services: Callable[[], Iterable[ServiceGauges]] = list
    plugins: Callable[[], Iterable[PluginGauges]] = list
    blocked_names: Callable[[], Iterable[tuple[str, str, str]]] = list
    """(namespace, kind, name) of objects the operator must write but cannot: another object
    holds the name"""


class OperatorMetrics:
    """Every metric of the operator, registered in ``registry``."""

    def __init__(
        self,
        registry: CollectorRegistry | None = None,
        *,
        max_services: int = 200,
        max_plugins: int = 1000,
    ) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        self.service_labels = BoundedLabels(max_services)
        self.max_services = max_services
        self.max_plugins = max_plugins
        self.sources = GaugeSources()
        r = self.registry
        self.build_info = register_build_info(r, "operator")
        self.passes = Counter(
            "luna_operator_passes",
            "Passes over a service by kind (full: desired state and statuses; status: status.loaded "
            "and status.pods only) and outcome (ok; incomplete: retried with backoff; error: a bug).",
            ["luna_namespace", "luna_service", "kind", "outcome"],
            registry=r,
        )
        self.pass_seconds = Counter(
            "luna_operator_pass_seconds",
            "Time spent in passes over a service, by kind.",
            ["luna_namespace", "luna_service", "kind"],
            registry=r,
        )
        self.pass_duration = Histogram(
            "luna_operator_pass_duration_seconds",
            "Duration of one pass over a service, by kind.",
            ["kind"],
            buckets=PASS_BUCKETS,
            registry=r,
        )
        self.api_requests = Counter(
            "luna_operator_api_requests",
            "Kubernetes API requests the passes made, by verb and resource (kopf's own watches and "
            "the report watch are not counted here).",
            ["verb", "resource"],
            registry=r,
        )
        self.api_errors = Counter(
            "luna_operator_api_errors",
            "Kubernetes API requests of the passes that failed, by verb, resource and HTTP status "
            "(none: no answer).",
            ["verb", "resource", "code"],
            registry=r,
        )
        self.report_events = Counter(
            "luna_operator_report_events",
            "Sidecar reports (LunaPluginRuntime) received by the report watch, by watch event type.",
            ["type"],
            registry=r,
        )
        self.rejected_reports = Counter(
            "luna_operator_rejected_reports",
            "Sidecar reports ignored because they name no service or are not objects.",
            registry=r,
        )
        self.report_delay = Histogram(
            "luna_operator_report_delay_seconds",
            "Time from a sidecar's heartbeat to its report reaching the operator.",
            buckets=DELAY_BUCKETS,
            registry=r,
        )
        self.report_watch_restarts = Counter(
            "luna_operator_report_watch_restarts",
            "Restarts of the report watch after an error (410 Gone and scheduled ends not counted).",
            registry=r,
        )
        self.webhook_requests = Counter(
            "luna_operator_webhook_requests",
            "Admission requests by webhook (validate: LunaPlugins; inject: the sidecar into Pods) and "
            "outcome (allowed, denied, error).",
            ["webhook", "outcome"],
            registry=r,
        )
        self.sidecar_grants = Counter(
            "luna_operator_sidecar_grants",
            "Injections by what became of the Pod's ServiceAccount's access (--sidecar-cluster-role): "
            "granted (bound now), held (bound before), error (could not bind; logged).",
            ["outcome"],
            registry=r,
        )
        self.webhook_duration = Histogram(
            "luna_operator_webhook_duration_seconds",
            "Time the operator took to answer an admission request, by webhook.",
            ["webhook"],
            buckets=WEBHOOK_BUCKETS,
            registry=r,
        )
        self.webhook_certificate_expiry = Gauge(
            "luna_operator_webhook_certificate_expiry_timestamp_seconds",
            "When the certificate the admission webhook serves to new connections expires (Unix time).",
            registry=r,
        )
        self.webhook_ca_expiry = Gauge(
            "luna_operator_webhook_ca_expiry_timestamp_seconds",
            "When the operator's own webhook CA that signs now expires (Unix time; --webhook-ca-secret).",
            registry=r,
        )
        self.webhook_certificate_reloads = Counter(
            "luna_operator_webhook_certificate_reloads",
            "Renewed webhook certificates served without a restart (the mounted files changed).",
            registry=r,
        )
        self.kubernetes_events = Counter(
            "luna_operator_kubernetes_events",
            "Kubernetes Events posted on LunaPlugins (and SidecarMissing on Pods), by reason.",
            ["reason"],
            registry=r,
        )
        self.rollbacks = Counter(
            "luna_operator_rollbacks",
            "Staged rollouts rolled back (spec.rollout: the canary failed its analysis, or a user aborted).",
            ["luna_namespace"],
            registry=r,
        )
        self.injection_audits = Counter(
            "luna_operator_injection_audits",
            "Scans for Pods that asked for the sidecar and run without it, by outcome (ok, error).",
            ["outcome"],
            registry=r,
        )
        self._missing_keys: set[tuple[str, str]] = set()
        self.pods_missing_sidecar = Gauge(
            "luna_operator_pods_missing_sidecar",
            "Pods that asked for the sidecar and run without it, at the last scan, by namespace and "
            "reason (not-injected: created without it; annotation-only: asks by the annotation alone).",
            ["luna_namespace", "reason"],
            registry=r,
        )
        r.register(_GaugeCollector(self))

    def set_missing_sidecars(self, counts: Mapping[tuple[str, str], int]) -> None:
        """Replace the figures of ``luna_operator_pods_missing_sidecar`` with ``counts`` per
        (namespace, reason); a pair that has none any more is removed, not left at 0. A scrape
        in between sees either figure, never an empty family."""
        for namespace, reason in self._missing_keys - counts.keys():
            self.pods_missing_sidecar.remove(namespace, reason)
        for (namespace, reason), count in sorted(counts.items()):
            self.pods_missing_sidecar.labels(namespace, reason).set(count)
        self._missing_keys = set(counts)

    def observe_pass(self, namespace: str, service: str, kind: str, outcome: str, seconds: float) -> None:
        """Count one pass over (namespace, service)."""
        ns, svc = self.service_labels(namespace, service)
        self.passes.labels(ns, svc, kind, outcome).inc()
        self.pass_seconds.labels(ns, svc, kind).inc(seconds)
        self.pass_duration.labels(kind).observe(seconds)


def _bounded_services(entries: Iterable[ServiceGauges], limit: int) -> list[ServiceGauges]:
    ordered = sorted(entries, key=lambda e: (e.namespace, e.service))
    kept, rest = ordered[:limit], ordered[limit:]
    if rest:
        kept.append(
            ServiceGauges(
                OTHER,
                OTHER,
                sum(e.fresh for e in rest),
                sum(e.stale for e in rest),
                max(e.oldest_age for e in rest),
            )
        )
    return kept


def _bounded_plugins(entries: Iterable[PluginGauges], limit: int) -> list[PluginGauges]:
    ordered = sorted(entries, key=lambda e: (e.namespace, e.service, e.plugin))
    kept, rest = ordered[:limit], ordered[limit:]
    if rest:
        kept.append(
            PluginGauges(OTHER, OTHER, OTHER, sum(e.outdated for e in rest), sum(e.failing for e in rest))
        )
    return kept


class _GaugeCollector(Collector):
    """The gauges, read from :attr:`OperatorMetrics.sources` at scrape time."""

    def __init__(self, metrics: OperatorMetrics) -> None:
        self._metrics = metrics

    def collect(self) -> Iterator[Metric]:
        sources = self._metrics.sources
        pending = GaugeMetricFamily(
            "luna_operator_pending_passes", "Passes scheduled and not started yet, by kind.", labels=["kind"]
        )
        counts = sources.pending()
        for kind in ("full", "status"):
            pending.add_metric([kind], counts.get(kind, 0))
        yield pending
        yield GaugeMetricFamily("luna_operator_running_passes", "Passes under way.", value=sources.running())
        phases = GaugeMetricFamily(
            "luna_operator_lunaplugins", "LunaPlugins by the phase the last pass decided.", labels=["phase"]
        )
        found = sources.phases()
        for phase in PHASES:
            phases.add_metric([phase], found.get(phase, 0))
        yield phases
        labels = ["luna_namespace", "luna_service"]
        reporting = GaugeMetricFamily(
            "luna_operator_reporting_pods",
            "Pods of a service whose sidecar report is fresh (they count in status.loaded).",
            labels=labels,
        )
        stale = GaugeMetricFamily(
            "luna_operator_stale_reports",
            "Sidecar reports of a service older than --report-ttl (their pods stopped reporting).",
            labels=labels,
        )
        age = GaugeMetricFamily(
            "luna_operator_oldest_report_age_seconds",
            "Age of the oldest sidecar report of a service (since its last heartbeat).",
            labels=labels,
        )
        for entry in _bounded_services(sources.services(), self._metrics.max_services):
            values = [entry.namespace, entry.service]
            reporting.add_metric(values, entry.fresh)
            stale.add_metric(values, entry.stale)
            age.add_metric(values, entry.oldest_age)
        yield reporting
        yield stale
        yield age
        labels = ["luna_namespace", "luna_service", "plugin"]
        outdated = GaugeMetricFamily(
            "luna_operator_plugin_outdated_pods",
            "Reporting pods that do not run a LunaPlugin's version in service (an older version, a "
            "failed one, or none).",
            labels=labels,
        )
        failing = GaugeMetricFamily(
            "luna_operator_plugin_failing_pods",
            "Reporting pods that report an error for a LunaPlugin (it failed, or its version in "
            "service failed to load).",
            labels=labels,
        )
        for plugin in _bounded_plugins(sources.plugins(), self._metrics.max_plugins):
            values = [plugin.namespace, plugin.service, plugin.plugin]
            outdated.add_metric(values, plugin.outdated)
            failing.add_metric(values, plugin.failing)
        yield outdated
        yield failing
        blocked = GaugeMetricFamily(
            "luna_operator_blocked_names",
            "Objects the operator must write but cannot, because an object it did not write holds the "
            "name (1 while blocked): delete or rename that object.",
            labels=["luna_namespace", "kind", "name"],
        )
        for namespace, kind, name in list(sources.blocked_names())[: self._metrics.max_plugins]:
            blocked.add_metric([namespace, kind, name], 1)
        yield blocked

    def describe(self) -> Iterator[Metric]:
        return iter(())
