"""kopf wiring: watch events feed the store and trigger per-service reconciles.

- startup: one LIST of all LunaPlugins (so no reconcile ever sees half of a service) and of
  the existing active lists (services whose last plugin went away while we were down);
- ``on.event`` of LunaPlugins: update the store, trigger the plugin's service (and its old one);
  a deleted plugin leaves the store and its service's next pass drops it from the active list.

No finalizer: a LunaPlugin stays deletable while the operator is down or uninstalled. Its
ConfigMap is owned by it and garbage-collected; a sidecar keeps serving the version it loaded
until the active list stops naming it, which the next pass (on the delete event, or at start-up)
does. kopf adds a finalizer only for non-optional ``on.delete`` handlers and for daemons or
timers; there are none. kopf also *removes* its finalizer from objects whose handlers no longer
need one: ``settings.persistence.finalizer`` keeps the name earlier versions used
(``luna.dev/finalizer``), so their objects are released on their first event.
- ``on.event`` of ConfigMaps: re-render plugins whose ``codeFrom`` names the ConfigMap;
- ``on.validate``: the admission webhook, with the same checks as the reconcile;
- ``on.mutate`` of Pods (with ``--inject``): the sidecar injection (see ``injection``).
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

import aiohttp
import kopf
from kubernetes_asyncio import client, config
from kubernetes_asyncio.client.exceptions import ApiException

from luna_operator.certs import self_signed
from luna_operator.config import OperatorConfig
from luna_operator.injection import InjectionRefusedError, InjectionTemplate, load_template, plan
from luna_operator.peering import replica_priority
from luna_operator.reconciler import GROUP, PLURAL, VERSION, Coalescer, ServiceReconciler
from luna_operator.store import PluginRecord, PluginStore
from luna_operator.validation import (
    CheckUnavailableError,
    CodeChecker,
    module_name,
    validate_module,
    validate_name,
    validate_requirements,
    validate_settings,
)

log = logging.getLogger("luna.operator")

WEBHOOK_CONFIGURATION = "lunaplugins.luna.dev"
"""Name of the Validating- and MutatingWebhookConfiguration kopf manages (``--webhook-managed``)."""


class OperatorState:
    """The store, the API client and the reconciler, shared by the handlers.

    With ``options.inject`` the injection template is loaded here, once: a bad file raises
    ``injection.TemplateError`` (a ``ValueError`` naming the file) before anything starts."""

    def __init__(self, options: OperatorConfig) -> None:
        self.options = options
        self.inject_template: InjectionTemplate | None = (
            load_template(options.inject_template) if options.inject and options.inject_template else None
        )
        self.store = PluginStore()
        self.checker = CodeChecker(
            memory_bytes=options.code_check_memory * 1024 * 1024, timeout=options.code_check_timeout
        )
        self.api: client.ApiClient | None = None
        self.reconciler: ServiceReconciler | None = None
        self.coalescer = Coalescer(self._reconcile)
        self._known_services: set[tuple[str, str]] = set()
        self._resync: asyncio.Task[None] | None = None

    async def _reconcile(self, key: tuple[str, str]) -> None:
        assert self.reconciler is not None
        self._known_services.add(key)
        await self.reconciler.reconcile(key)

    async def connect(self) -> None:
        self.api = await api_client()
        self.reconciler = ServiceReconciler(
            self.api, self.store, checker=self.checker, stale_after=self.options.report_ttl
        )

    async def initial_sync(self, *, attempts: int = 30) -> None:
        """LIST every LunaPlugin and active list we can see, then reconcile every service.

        Transient API errors (a 429 while the CRD's storage initializes, 5xx, a refused
        connection) are retried with backoff; anything else stops the start-up."""
        delay = 0.5
        for attempt in range(1, attempts + 1):
            try:
                await self._list_everything()
                return
            except (ApiException, OSError, aiohttp.ClientError) as exc:
                status = getattr(exc, "status", None)
                if (status is not None and status != 429 and status < 500) or attempt == attempts:
                    raise
                log.warning("initial list failed (%s), retrying in %.1f s", status or exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)

    async def stop(self) -> None:
        """Stop reconciling before the API session closes: otherwise queued passes retry on a
        closed session until kopf gives up, and every stop takes seconds."""
        if self._resync is not None:
            self._resync.cancel()
        await self.coalescer.stop()

    def start_resync(self, interval: float | None = None) -> None:
        """Every ``interval`` seconds, reconcile every known service: a sidecar that vanished
        without a word stops counting within STALE_AFTER_SECONDS + interval."""

        period = interval if interval is not None else min(10.0, self.options.report_ttl / 3)

        async def resync() -> None:
            while True:
                await asyncio.sleep(period)
                for key in self.store.services() | self._known_services:
                    self.coalescer.trigger(key)

        self._resync = asyncio.create_task(resync(), name="luna-resync")

    async def _list_everything(self) -> None:
        assert self.api is not None
        custom, core = client.CustomObjectsApi(self.api), client.CoreV1Api(self.api)
        services: set[tuple[str, str]] = set()
        for namespace in self.options.namespaces or (None,):
            if namespace is None:
                plugins = await custom.list_cluster_custom_object(GROUP, VERSION, PLURAL)
                lists = await core.list_config_map_for_all_namespaces(
                    label_selector="luna.dev/role=active-list"
                )
            else:
                plugins = await custom.list_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL)
                lists = await core.list_namespaced_config_map(
                    namespace, label_selector="luna.dev/role=active-list"
                )
            for body in plugins.get("items", []):
                services |= self.store.put(PluginRecord.from_body(body))
            for item in lists.items:
                service = (item.metadata.labels or {}).get("luna.dev/service")
                if service:
                    services.add((item.metadata.namespace, service))
        log.info("initial sync: %d plugin(s) in %d service(s)", len(self.store), len(services))
        for key in sorted(services):
            self.coalescer.trigger(key)


async def api_client() -> client.ApiClient:
    """An API client with the pod's service account, else KUBECONFIG / ~/.kube/config."""
    try:
        config.load_incluster_config()
    except config.ConfigException:
        await config.load_kube_config()
    return client.ApiClient()


LEGACY_FINALIZER = "luna.dev/finalizer"
"""The finalizer earlier versions put on every LunaPlugin; kopf removes it (see the module doc)."""


def configure(settings: kopf.OperatorSettings, options: OperatorConfig) -> None:
    """kopf settings for production use."""
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
        settings.peering.priority = replica_priority(options.priority)
        settings.peering.lifetime = 30  # a replica that died is replaced after at most this long
    if options.webhook:
        cert, key = (
            (Path(options.webhook_cert), Path(options.webhook_key))
            if options.webhook_cert and options.webhook_key
            else self_signed(Path(options.webhook_certs_dir), options.webhook_host)
        )
        settings.admission.server = kopf.WebhookServer(
            addr=options.webhook_host,
            port=options.webhook_port,
            host=options.webhook_host,
            certfile=str(cert),
            pkeyfile=str(key),
            cafile=str(cert),
        )
        # unmanaged: the configurations (and their CA bundle) come from elsewhere, e.g. the chart
        settings.admission.managed = WEBHOOK_CONFIGURATION if options.webhook_managed else None


def build_registry(state: OperatorState) -> kopf.OperatorRegistry:
    """All handlers of the operator, in a registry of their own."""
    registry = kopf.OperatorRegistry()

    @kopf.on.startup(registry=registry)
    async def startup(settings: kopf.OperatorSettings, **_: Any) -> None:
        configure(settings, state.options)
        await state.connect()
        await state.initial_sync()
        state.start_resync()

    @kopf.on.login(registry=registry)
    def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
        # in a pod: the service account; elsewhere: KUBECONFIG / ~/.kube/config
        return kopf.login_with_service_account(**kwargs) or kopf.login_with_kubeconfig(**kwargs)

    @kopf.on.cleanup(registry=registry)
    async def cleanup(**_: Any) -> None:
        await state.stop()
        if state.api is not None:
            await state.api.close()

    @kopf.on.event(GROUP, VERSION, PLURAL, registry=registry)
    async def plugin_event(type: str | None, body: Any, **_: Any) -> None:
        record = PluginRecord.from_body(body)
        if type == "DELETED":
            services = state.store.remove(record.namespace, record.name)
            if state.reconciler is not None:
                state.reconciler.status.forget(record.uid)
        else:
            services = state.store.put(record)
        for key in services:
            state.coalescer.trigger(key)

    @kopf.on.event(GROUP, VERSION, "lunapluginruntimes", registry=registry)
    async def runtime_event(namespace: str | None, body: Any, **_: Any) -> None:
        service = ((body.get("spec") or {}).get("service")) or (body.get("metadata") or {}).get(
            "labels", {}
        ).get("luna.dev/service")
        if namespace and service:
            state.coalescer.trigger((namespace, str(service)))

    @kopf.on.event("", "v1", "configmaps", registry=registry)
    async def configmap_event(namespace: str | None, name: str | None, **_: Any) -> None:
        if namespace and name:
            for key in state.store.referencing(namespace, name):
                state.coalescer.trigger(key)

    if state.options.webhook:
        register_webhook(registry, state)
        if state.inject_template is not None:
            register_injection(registry, state.inject_template, state.options.namespaces)
    return registry


def register_injection(
    registry: kopf.OperatorRegistry, template: InjectionTemplate, namespaces: tuple[str, ...] = ()
) -> None:
    """The mutating webhook ``/inject-sidecar``: Pods created with ``luna.dev/inject: "true"``
    get the template's sidecar. Pods are not watched: kopf only needs to discover the resource
    (core v1, already scanned for ConfigMaps) to serve admission for it. The failure policy is
    Ignore: with the operator down, Pods are created without the sidecar. Pods outside
    ``namespaces`` (when set) are left alone."""

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
        log.info("injected sidecar %r into pod %s (service %s)", change.container_name, pod, change.service)
        for warning in change.warnings:
            log.warning("pod %s: %s", pod, warning)


def register_webhook(registry: kopf.OperatorRegistry, state: OperatorState) -> None:
    """The validating admission webhook: the reconcile's checks at `kubectl apply` time. Its
    failure policy is Ignore, so an operator that is down never blocks users; the reconcile
    still marks invalid plugins."""

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
        code = spec.get("code")
        if isinstance(code, str):
            try:
                checked = await state.checker.check(code, pinned_sha256=spec.get("sha256"))
            except CheckUnavailableError as exc:  # no verdict now: admit it, the reconcile decides
                log.warning("webhook: %s/%s: %s", namespace, name, exc)
                checked = []
            problems += [str(p) for p in checked]
        if spec.get("enabled", True):
            for other in state.store.of_service(namespace, str(spec.get("service") or "handlers")):
                same = module_name(other.name, other.spec.get("module")) == module
                if other.name != name and not other.deleting and other.spec.get("enabled", True) and same:
                    problems.append(f"module {module!r} is already provided by LunaPlugin {other.name!r}")
        if problems:
            raise kopf.AdmissionError("; ".join(problems), code=422)
