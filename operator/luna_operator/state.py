"""What the operator's handlers share: the view on kopf's indexes, the sidecars' reports, the API
session, the passes and the metrics (:class:`OperatorState`), and the API client it opens."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from kubernetes_asyncio import client, config

from luna_operator.cluster_api import KubeClusterApi
from luna_operator.config import OperatorConfig
from luna_operator.events import EventRecorder
from luna_operator.injection import InjectionTemplate, load_template
from luna_operator.injection_audit import InjectionAudit
from luna_operator.metrics import OperatorMetrics, ServiceGauges
from luna_operator.peering import PeeringGate, replica_priority
from luna_operator.prometheus import PrometheusClient
from luna_operator.reconciler import PassRequest, ServiceReconciler
from luna_operator.render import active_list_code_hashes
from luna_operator.report_feed import ReportFeed
from luna_operator.reports import ReportBook, ReportChange
from luna_operator.scheduling import Coalescer, PassKind
from luna_operator.secret_feed import SecretBook, SecretChange, SecretFeed
from luna_operator.secret_settings import referenced_secrets
from luna_operator.sidecar_access import SidecarAccess
from luna_operator.validation import CodeChecker
from luna_operator.view import (
    IndexView,
    config_map_service,
)
from luna_operator.webhook_ca import CAKeeper
from luna_operator.webhook_tls import ReloadingTLS

log = logging.getLogger("luna.operator")

USER_AGENT = "luna-plugins-operator"
"""the User-Agent of the operator's own requests (kopf's say ``kopf/<version>``)"""
#: how soon a pass runs after what triggered it: a plugin change, a report that appeared or
#: went (pods come and go in bursts during a rollout of the service), a change of the reports
DELAY_CHANGE, DELAY_OWNERS, DELAY_STATUS = 0.05, 1.0, 0.5
#: how often reports that stopped counting (no heartbeat for --report-ttl) are looked for
EXPIRY_INTERVAL = 1.0


class OperatorState:
    """Everything the handlers share: the view, the reports, the API, passes and metrics.

    With ``options.inject`` the injection template is loaded here, once: a bad file raises
    ``injection.TemplateError`` (a ``ValueError`` naming the file) before anything starts."""

    def __init__(self, options: OperatorConfig, *, identity: str | None = None) -> None:
        self.options = options
        self.identity = identity
        self.priority = replica_priority(options.priority)
        """this replica's peering priority (random when --priority is unset), chosen once"""
        self.inject_template: InjectionTemplate | None = (
            load_template(options.inject_template) if options.inject and options.inject_template else None
        )
        self.sidecar_access: SidecarAccess | None = (
            SidecarAccess(options.sidecar_cluster_role, binding=options.sidecar_role_binding)
            if options.inject and options.sidecar_cluster_role
            else None
        )
        """binds injected Pods' own ServiceAccounts to the sidecar's ClusterRole (connected at start)"""
        self.metrics = OperatorMetrics()
        self.prometheus: PrometheusClient | None = (
            PrometheusClient(
                options.prometheus_url,
                timeout=options.prometheus_timeout,
                token_file=options.prometheus_token_file,
                ca_file=options.prometheus_ca_file,
            )
            if options.prometheus_url
            else None
        )
        """where rollout queries are asked (``--prometheus-url``)"""
        self.checker = CodeChecker(
            memory_bytes=options.code_check_memory * 1024 * 1024, timeout=options.code_check_timeout
        )
        self.view = IndexView()
        self.book = ReportBook(ttl=options.report_ttl)
        self.secrets = SecretBook()
        self.coalescer = Coalescer(self._pass, observer=self._observed)
        self.api: client.ApiClient | None = None
        self.reconciler: ServiceReconciler | None = None
        self.feed: ReportFeed | None = None
        self.secret_feed: SecretFeed | None = None
        self.gate: PeeringGate | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self.webhook_tls: ReloadingTLS | None = None
        """the webhook server's certificates (set by :func:`configure`), watched while running"""
        self.webhook_ca: CAKeeper | None = None
        """the operator's own webhook CA (``--webhook-ca-secret``), kept while running"""
        self.audit: InjectionAudit | None = None
        """the scan for Pods that asked for the sidecar and run without it (with --inject)"""
        sources = self.metrics.sources
        sources.pending = self.coalescer.pending
        sources.running = self.coalescer.running
        sources.phases = lambda: self.reconciler.phases() if self.reconciler else {}
        sources.plugins = lambda: self.reconciler.plugin_gauges() if self.reconciler else []
        sources.blocked_names = lambda: sorted(self.reconciler.blocked) if self.reconciler else []
        sources.services = self._service_gauges

    async def _pass(self, key: tuple[str, str], kind: PassKind) -> PassRequest | None:
        if self.reconciler is None:
            return None
        if self.gate is not None and not await self.gate.active():
            log.debug("%s pass of %s/%s skipped: another replica is active", kind, *key)
            return None
        return await self.reconciler.run(key, kind)

    def _observed(self, key: tuple[str, str], kind: PassKind, outcome: str, seconds: float) -> None:
        self.metrics.observe_pass(key[0], key[1], kind, outcome, seconds)

    def _service_gauges(self) -> list[ServiceGauges]:
        return [
            ServiceGauges(namespace, service, fresh, stale, age)
            for (namespace, service), (fresh, stale, age) in self.book.ages(time.time()).items()
        ]

    async def start(self, plugins_index: Any, config_maps_index: Any) -> None:
        """Connect, bind the view to kopf's indexes, and start following the reports."""
        self.view.bind(plugins_index, config_maps_index)
        self.api = await api_client()
        self.api.user_agent = USER_AGENT
        cluster = KubeClusterApi(self.api, self.metrics)
        if self.sidecar_access is not None:
            self.sidecar_access.api = cluster
        self.feed = ReportFeed(
            self.api,
            self.book,
            self.on_report_change,
            namespaces=self.options.namespaces,
            metrics=self.metrics,
        )
        self.secret_feed = SecretFeed(
            self.api, self.secrets, self.on_secret_change, namespaces=self.options.namespaces
        )
        self.reconciler = ServiceReconciler(
            cluster,
            self.view,
            self.book,
            checker=self.checker,
            events=EventRecorder(cluster, self.metrics),
            reports_known=self.feed.synced.is_set,
            secrets=self.secrets,
            secrets_known=self.secret_feed.synced.is_set,
            prometheus=self.prometheus,
        )
        if self.options.peering:
            self.gate = PeeringGate(
                self.api,
                self.options.peering,
                self.options.namespaces,
                identity=self.identity or "",
                priority=self.priority,
            )
        self._tasks = [
            asyncio.create_task(self.feed.run(), name="luna-report-feed"),
            asyncio.create_task(self.secret_feed.run(), name="luna-secret-feed"),
            asyncio.create_task(self._expire(), name="luna-report-expiry"),
            asyncio.create_task(self._resync(), name="luna-resync"),
        ]
        if self.inject_template is not None and self.options.injection_audit_interval > 0:
            self.audit = InjectionAudit(
                cluster,
                self.inject_template.name,
                self.metrics,
                EventRecorder(cluster, self.metrics),
                namespaces=self.options.namespaces,
                namespace_opt_in=not self.options.webhook_managed,
                interval=self.options.injection_audit_interval,
                active=self.gate.active if self.gate is not None else None,
            )
            self._tasks.append(asyncio.create_task(self.audit.run(), name="luna-injection-audit"))
        if self.webhook_tls is not None:
            self._tasks.append(asyncio.create_task(self.webhook_tls.watch(), name="luna-webhook-tls"))
        if self.webhook_ca is not None:
            self._tasks.append(asyncio.create_task(self.webhook_ca.run(), name="luna-webhook-ca"))

    def view_complete(self) -> None:
        """kopf ran a handler, so its indexes hold everything listed: passes may run. The first
        time, every service known is given a full pass."""
        if self.coalescer.is_open:
            return
        self.coalescer.open()
        self.resync_all()

    def on_report_change(self, change: ReportChange) -> None:
        if self.reconciler is None:
            return
        kind = self.reconciler.note(change)
        if kind is not None and self.coalescer.is_open:
            delay = DELAY_OWNERS if change.owners else DELAY_STATUS
            self.coalescer.trigger(change.service, kind, delay=delay)

    def learn_active_list(self, namespace: str, body: Any) -> None:
        """A ConfigMap arrived: when it is an active list, the reports naming its revision can
        be read in full (the operator's own writes come back this way, and every list on start)."""
        found = active_list_code_hashes(body)
        if found is None:
            return
        service, hashes = found
        for change in self.book.learn((namespace, service), hashes, now=time.time()):
            self.on_report_change(change)

    def on_secret_change(self, change: SecretChange) -> None:
        """A Secret offered to plugins changed: a full pass of every service with a plugin that
        reads it; a service's settings Secret changed other than by a pass: a full pass of it."""
        if not self.coalescer.is_open:
            return  # the first passes come when the view is complete, and read the book then
        namespace, name, service = change
        if service is not None:
            self.coalescer.trigger((namespace, service))
            return
        for plugin in self.view.all_plugins():
            if plugin.namespace == namespace and name in referenced_secrets(plugin.fields.settings_from):
                self.coalescer.trigger((namespace, plugin.service))

    def resync_all(self) -> None:
        """A full pass of every service with plugins, an active list or reports."""
        services = self.view.services() | self.book.services()
        for body in self.view.active_lists():
            service = config_map_service(body)
            if service:
                services.add((body["metadata"]["namespace"], service))
        for key in sorted(services):
            self.coalescer.trigger(key, "full")

    async def _expire(self) -> None:
        while True:
            await asyncio.sleep(EXPIRY_INTERVAL)
            for change in self.book.expire(time.time()):
                self.on_report_change(change)

    async def _resync(self) -> None:
        while True:
            await asyncio.sleep(self.options.resync_interval)
            if self.coalescer.is_open:
                self.resync_all()

    async def stop(self) -> None:
        """Stop passes and the report watch before the API session closes: otherwise queued
        passes retry on a closed session until kopf gives up, and every stop takes seconds."""
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.coalescer.stop()
        if self.api is not None:
            await self.api.close()
        if self.webhook_ca is not None:
            await self.webhook_ca.api.close()
        if self.prometheus is not None:
            await self.prometheus.close()

    def feed_healthy(self) -> bool:
        within = self.options.api_timeout
        return all(feed is None or feed.healthy(within) for feed in (self.feed, self.secret_feed))


async def api_client() -> client.ApiClient:
    """An API client with the pod's service account, else KUBECONFIG / ~/.kube/config."""
    try:
        config.load_incluster_config()
    except config.ConfigException:
        await config.load_kube_config()
    return client.ApiClient()
