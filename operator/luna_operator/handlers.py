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

import logging
from typing import Any

import kopf

from luna_contract.names import GROUP, VERSION
from luna_contract.names import PLURAL_PLUGINS as PLURAL
from luna_operator.admission import register_injection, register_webhook
from luna_operator.config import OperatorConfig
from luna_operator.metrics import OperatorMetrics
from luna_operator.records import PluginRecord
from luna_operator.state import OperatorState, api_client
from luna_operator.view import (
    CONFIG_MAPS_INDEX,
    PLUGINS_INDEX,
    code_from_services,
    config_map_service,
    index_config_maps,
    index_plugins,
    managing_services,
)
from luna_operator.webhook_ca import ServingFiles
from luna_operator.webhook_serving import own_ca, webhook_server, webhook_tls
from luna_operator.webhook_tls import ReloadingTLS

__all__ = ["LEGACY_FINALIZER", "OperatorState", "api_client", "build_registry", "configure"]

log = logging.getLogger("luna.operator")

WEBHOOK_CONFIGURATION = "lunaplugins.luna.dev"
"""Name of the Validating- and MutatingWebhookConfiguration kopf manages (``--webhook-managed``)."""
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
            register_injection(
                registry,
                state.inject_template,
                state.options.namespaces,
                state.metrics,
                state.sidecar_access,
                namespace_opt_in=not state.options.webhook_managed,
            )
    return registry
