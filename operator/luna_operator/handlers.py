"""kopf wiring: indexes hold the operator's view, handlers and the report watch trigger passes.

- ``@kopf.index``: every LunaPlugin by (namespace, service), and every ConfigMap a pass may
  touch (:mod:`luna_operator.view`). kopf lists both before any handler runs, so the first
  handler call opens the :class:`~luna_operator.scheduling.Coalescer`: no pass ever sees half a
  service. There is no start-up LIST and no store of our own.
- ``on.event`` of LunaPlugins: a full pass of the plugin's service (and of the one it left) when
  what it asks for changed (kopf's per-object ``memo`` remembers the last intent); status-only
  changes, such as our own status writes coming back, cause nothing.
- ``on.event`` of ConfigMaps: a full pass when a ConfigMap the operator manages changed other
  than by its own write (drift, or deletion), and for plugins whose ``codeFrom`` names it.
- the sidecars' reports (:mod:`luna_operator.report_feed`, outside kopf: their rate grows with
  pods): a report that appears or goes is a full pass (it owns the active list); one whose
  plugins changed, or that starts or stops counting, is a status pass; a heartbeat is nothing.
- every ``--resync-interval`` seconds a full pass over every service, from the indexes (no API
  call unless something drifted).
- ``on.validate``: the admission webhook, with the same checks as the pass; ``on.mutate`` of
  Pods (with ``--inject``): the sidecar injection (see ``injection``); both counted in the
  metrics.
- ``on.probe``: liveness fails when the report watch has not reached the API for too long.

No finalizer: a LunaPlugin stays deletable while the operator is down or uninstalled. Its
ConfigMap is owned by it and garbage-collected; a sidecar keeps serving the version it loaded
until the active list stops naming it, which the next pass (on the delete event, or at start-up)
does. kopf adds a finalizer only for non-optional ``on.delete`` handlers and for daemons or
timers; there are none. kopf also *removes* its finalizer from objects whose handlers no longer
need one: ``settings.persistence.finalizer`` keeps the name earlier versions used
(``luna.dev/finalizer``), so their objects are released on their first event.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import logging
import time
from pathlib import Path
from typing import Any

import kopf
from kubernetes_asyncio import client, config

from luna_operator.certs import self_signed
from luna_operator.cluster_api import KubeClusterApi
from luna_operator.config import OperatorConfig
from luna_operator.events import EventRecorder
from luna_operator.injection import InjectionRefusedError, InjectionTemplate, load_template, plan
from luna_operator.metrics import OperatorMetrics, ServiceGauges
from luna_operator.peering import PeeringGate, replica_priority
from luna_operator.reconciler import PassRequest, ServiceReconciler
from luna_operator.records import PluginRecord
from luna_operator.render import active_list_code_hashes
from luna_operator.report_feed import ReportFeed
from luna_operator.reports import ReportBook, ReportChange
from luna_operator.scheduling import Coalescer, PassKind
from luna_operator.secret_feed import SecretBook, SecretChange, SecretFeed
from luna_operator.secret_settings import check_shape, referenced_secrets
from luna_operator.validation import (
    CheckUnavailableError,
    CodeChecker,
    module_name,
    validate_module,
    validate_name,
    validate_requirements,
    validate_settings,
)
from luna_operator.view import (
    CONFIG_MAPS_INDEX,
    PLUGINS_INDEX,
    IndexView,
    code_from_services,
    config_map_service,
    index_config_maps,
    index_plugins,
    managing_services,
)
from luna_operator.webhook_ca import CAApi, CAKeeper, CAPolicy, CAState, ServingFiles
from luna_operator.webhook_tls import ReloadingTLS, ServedCertificate

log = logging.getLogger("luna.operator")

GROUP, VERSION, PLURAL = "luna.dev", "v1alpha1", "lunaplugins"
WEBHOOK_CONFIGURATION = "lunaplugins.luna.dev"
"""Name of the Validating- and MutatingWebhookConfiguration kopf manages (``--webhook-managed``)."""
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
        self.metrics = OperatorMetrics()
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
            if plugin.namespace == namespace and name in referenced_secrets(plugin.spec.get("settingsFrom")):
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


LEGACY_FINALIZER = "luna.dev/finalizer"
"""The finalizer earlier versions put on every LunaPlugin; kopf removes it (see the module doc)."""


def configure(
    settings: kopf.OperatorSettings,
    options: OperatorConfig,
    *,
    priority: int,
    metrics: OperatorMetrics,
    serving: ServingFiles | None = None,
) -> ReloadingTLS | None:
    """kopf settings for production use; ``priority``: this replica's peering priority;
    ``serving``: the certificate files the operator's own CA keeps. Returns the webhook
    server's certificates (None without ``--webhook``), to be watched."""
    settings.persistence.finalizer = LEGACY_FINALIZER
    # no changing handlers (on.create/update/delete/resume): kopf keeps no diff-base or progress
    # annotations on our objects, so a plugin of any size never meets the 256 KiB annotation cap
    # paired watch timeouts: the server ends a quiet watch first, the client gives up soon after
    settings.watching.server_timeout = 60
    settings.watching.client_timeout = 66
    settings.watching.connect_timeout = 10
    settings.posting.level = logging.INFO
    settings.peering.standalone = options.peering is None
    if options.peering:
        settings.peering.name = options.peering
        settings.peering.mandatory = True
        settings.peering.priority = priority
        settings.peering.lifetime = 30  # a replica that died is replaced after at most this long
    if not options.webhook:
        return None
    tls = webhook_tls(options, metrics, serving)
    settings.admission.server = webhook_server(options, tls)
    # unmanaged: the configurations (and their CA bundle) come from elsewhere, e.g. the chart
    settings.admission.managed = WEBHOOK_CONFIGURATION if options.webhook_managed else None
    return tls


WEBHOOK_RESTART_INTERVAL = 10.0**9
"""kopf restarts its webhook listener when the certificate files change; ours never needs to"""


def webhook_tls(
    options: OperatorConfig, metrics: OperatorMetrics, serving: ServingFiles | None = None
) -> ReloadingTLS:
    """The webhook's certificate files (``serving``, else ``--webhook-cert``/``--webhook-key``,
    else a self-signed pair), served as they change (see :mod:`luna_operator.webhook_tls`) and
    in the metrics."""
    if serving is not None:
        cert, key = serving.certfile, serving.keyfile
    elif options.webhook_cert and options.webhook_key:
        cert, key = Path(options.webhook_cert), Path(options.webhook_key)
    else:
        cert, key = self_signed(Path(options.webhook_certs_dir), options.webhook_host)

    def renewed(certificate: ServedCertificate) -> None:
        metrics.webhook_certificate_reloads.inc()
        metrics.webhook_certificate_expiry.set(certificate.not_after)

    tls = ReloadingTLS(cert, key, check_interval=options.webhook_cert_check_interval, on_change=renewed)
    metrics.webhook_certificate_expiry.set(tls.served.not_after)
    return tls


def webhook_server(options: OperatorConfig, tls: ReloadingTLS) -> kopf.WebhookServer:
    """The admission webhook's server: one listener for the operator's whole life, whatever
    the certificate files do."""
    return kopf.WebhookServer(
        addr=options.webhook_host,
        port=options.webhook_port,
        host=options.webhook_host,
        context=tls.context,
        certfile=str(tls.certfile),
        pkeyfile=str(tls.keyfile),
        cafile=str(tls.certfile),
        file_check_interval=WEBHOOK_RESTART_INTERVAL,
    )


async def own_ca(options: OperatorConfig, metrics: OperatorMetrics) -> CAKeeper:
    """The keeper of the operator's own webhook CA (``--webhook-ca-secret``), after a first
    successful check: the serving certificate exists when this returns."""
    assert options.webhook_ca_secret is not None
    namespace, name = options.webhook_ca_secret.split("/", 1)
    api = await api_client()
    api.user_agent = USER_AGENT

    def trusted(state: CAState) -> None:
        if state.signer is not None:
            metrics.webhook_ca_expiry.set(state.signer.not_after.timestamp())

    keeper = CAKeeper(
        CAApi(api),
        namespace,
        name,
        tuple(tuple(entry.split("/", 1)) for entry in options.webhook_configurations),  # type: ignore[misc]
        list(options.webhook_dns_names),
        ServingFiles(Path(options.webhook_certs_dir)),
        CAPolicy(
            ca_validity=datetime.timedelta(seconds=options.webhook_ca_validity),
            serving_validity=datetime.timedelta(seconds=options.webhook_serving_validity),
            overlap=datetime.timedelta(seconds=options.webhook_ca_overlap),
        ),
        interval=options.webhook_ca_check_interval,
        on_ca=trusted,
    )
    await keeper.bootstrap()
    return keeper


def build_registry(state: OperatorState) -> kopf.OperatorRegistry:
    """All handlers of the operator, in a registry of their own."""
    registry = kopf.OperatorRegistry()

    @kopf.index(GROUP, VERSION, PLURAL, id=PLUGINS_INDEX, registry=registry)
    async def plugins_by_service(body: Any, **_: Any) -> Any:
        return index_plugins(body)

    @kopf.index("", "v1", "configmaps", id=CONFIG_MAPS_INDEX, registry=registry)
    async def config_maps(body: Any, **_: Any) -> Any:
        return index_config_maps(body)

    @kopf.on.startup(registry=registry)
    async def startup(settings: kopf.OperatorSettings, **kwargs: Any) -> None:
        if state.options.webhook_ca_secret:
            state.webhook_ca = await own_ca(state.options, state.metrics)
        state.webhook_tls = configure(
            settings,
            state.options,
            priority=state.priority,
            metrics=state.metrics,
            serving=state.webhook_ca.files if state.webhook_ca else None,
        )
        if state.webhook_ca is not None and state.webhook_tls is not None:
            state.webhook_ca.served = state.webhook_tls.refresh
        await state.start(kwargs[PLUGINS_INDEX], kwargs[CONFIG_MAPS_INDEX])

    @kopf.on.login(registry=registry)
    def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
        # in a pod: the service account; elsewhere: KUBECONFIG / ~/.kube/config
        return kopf.login_with_service_account(**kwargs) or kopf.login_with_kubeconfig(**kwargs)

    @kopf.on.cleanup(registry=registry)
    async def cleanup(**_: Any) -> None:
        await state.stop()

    @kopf.on.probe(id="reports", registry=registry)
    async def reports_probe(**_: Any) -> str:
        if not state.feed_healthy():
            raise kopf.PermanentError(
                "the sidecar reports or the plugin-settings Secrets could not be read for more than "
                f"{state.options.api_timeout:g} s"
            )
        return "ok"

    @kopf.on.event(GROUP, VERSION, PLURAL, registry=registry)
    async def plugin_event(type: str | None, body: Any, memo: Any, **_: Any) -> None:
        state.view_complete()
        record = PluginRecord.from_body(body)
        previous = memo.get("luna_intent")
        if type == "DELETED":
            if state.reconciler is not None:
                state.reconciler.forget(record.uid)
            state.coalescer.trigger((record.namespace, record.service))
            return
        intent = record.intent()
        memo["luna_intent"] = intent
        if previous == intent:
            return
        state.coalescer.trigger((record.namespace, record.service))
        if previous is not None and previous[0] != record.service:
            state.coalescer.trigger((record.namespace, previous[0]))

    @kopf.on.event("", "v1", "configmaps", registry=registry)
    async def configmap_event(
        type: str | None, body: Any, namespace: str | None, name: str | None, **_: Any
    ) -> None:
        state.view_complete()
        if not namespace or not name:
            return
        plugins = state.view.all_plugins()
        for key in code_from_services(namespace, name, plugins):
            state.coalescer.trigger(key)
        version = str((body.get("metadata") or {}).get("resourceVersion") or "")
        if type == "DELETED":
            state.view.deleted(namespace, name)
        else:
            state.learn_active_list(namespace, body)  # also from our own writes
            if state.view.is_echo(namespace, name, version):
                return  # our own write coming back
        for key in managing_services(namespace, name, config_map_service(body), plugins):
            state.coalescer.trigger(key)

    if state.options.webhook:
        register_webhook(registry, state)
        if state.inject_template is not None:
            register_injection(registry, state.inject_template, state.options.namespaces, state.metrics)
    return registry


@contextlib.contextmanager
def _timed(metrics: OperatorMetrics, webhook: str) -> Any:
    """Count one admission request: allowed unless it raises AdmissionError (denied) or else (error)."""
    started = time.monotonic()
    outcome = "allowed"
    try:
        yield
    except kopf.AdmissionError:
        outcome = "denied"
        raise
    except Exception:
        outcome = "error"
        raise
    finally:
        metrics.webhook_requests.labels(webhook, outcome).inc()
        metrics.webhook_duration.labels(webhook).observe(time.monotonic() - started)


def register_injection(
    registry: kopf.OperatorRegistry,
    template: InjectionTemplate,
    namespaces: tuple[str, ...] = (),
    metrics: OperatorMetrics | None = None,
) -> None:
    """The mutating webhook ``/inject-sidecar``: Pods created with ``luna.dev/inject: "true"``
    get the template's sidecar. Pods are not watched: kopf only needs to discover the resource
    (core v1, already scanned for ConfigMaps) to serve admission for it. The failure policy is
    Ignore: with the operator down, Pods are created without the sidecar. Pods outside
    ``namespaces`` (when set) are left alone."""
    counted = metrics or OperatorMetrics()

    @kopf.on.mutate(
        "",
        "v1",
        "pods",
        id="inject-sidecar",
        operations=["CREATE"],
        ignore_failures=True,
        registry=registry,
    )
    async def inject_sidecar(body: Any, patch: kopf.Patch, **_: Any) -> None:
        with _timed(counted, "inject"):
            meta = body.get("metadata") or {}
            namespace = str(meta.get("namespace") or "")
            if namespaces and namespace and namespace not in namespaces:
                return
            try:
                change = plan(body, template)
            except InjectionRefusedError as exc:
                raise kopf.AdmissionError(str(exc), code=422) from None
            except Exception:  # a Pod shaped as we did not expect: created as without the webhook
                log.exception("sidecar injection failed; the pod is created without it")
                return
            if change is None:
                return
            patch.spec["containers"] = change.containers
            if change.volumes_added:
                patch.spec["volumes"] = change.volumes
            for key, value in change.annotations.items():
                patch.meta.annotations[key] = value
            for key, value in change.labels.items():
                patch.meta.labels[key] = value
            pod = f"{namespace}/{meta.get('name') or str(meta.get('generateName') or '') + '*'}"
            log.info(
                "injected sidecar %r into pod %s (service %s)", change.container_name, pod, change.service
            )
            for warning in change.warnings:
                log.warning("pod %s: %s", pod, warning)


def register_webhook(registry: kopf.OperatorRegistry, state: OperatorState) -> None:
    """The validating admission webhook: the pass's checks at `kubectl apply` time. Its failure
    policy is Ignore, so an operator that is down never blocks users; the pass still marks
    invalid plugins."""

    @kopf.on.validate(
        GROUP,
        VERSION,
        PLURAL,
        registry=registry,
        id="lunaplugin",
        operations=["CREATE", "UPDATE"],
        ignore_failures=True,
    )
    async def validate(spec: Any, body: Any, old: Any = None, **_: Any) -> None:
        with _timed(state.metrics, "validate"):
            await _validate(state, spec, body, old)


async def _validate(state: OperatorState, spec: Any, body: Any, old: Any) -> None:
    meta = body.get("metadata") or {}
    if meta.get("deletionTimestamp") or (old is not None and old.get("spec") == body.get("spec")):
        return  # metadata or status only (finalizers, labels): an invalid plugin must stay deletable
    name = str(meta.get("name") or meta.get("generateName") or "")
    namespace = str(meta.get("namespace") or "")
    module = module_name(name, spec.get("module"))
    problems = [
        str(p)
        for p in validate_name(name)
        + validate_module(module)
        + validate_settings(spec.get("settings"))
        + validate_requirements(spec.get("requirements"))[1]
    ]
    problems += check_shape(spec.get("settingsFrom"), spec.get("settings"))
    code = spec.get("code")
    if isinstance(code, str):
        try:
            checked = await state.checker.check(code, pinned_sha256=spec.get("sha256"))
        except CheckUnavailableError as exc:  # no verdict now: admit it, the pass decides
            log.warning("webhook: %s/%s: %s", namespace, name, exc)
            checked = []
        problems += [str(p) for p in checked]
    if spec.get("enabled", True):
        for other in state.view.plugins((namespace, str(spec.get("service") or "handlers"))):
            same = module_name(other.name, other.spec.get("module")) == module
            if other.name != name and not other.deleting and other.spec.get("enabled", True) and same:
                problems.append(f"module {module!r} is already provided by LunaPlugin {other.name!r}")
    if problems:
        raise kopf.AdmissionError("; ".join(problems), code=422)
