"""The operator's view of the cluster: LunaPlugins and the ConfigMaps it manages, from kopf indexes.

kopf fills its indexes from its own LIST+WATCH before any handler runs; the two index functions
here say what is kept:

- :func:`index_plugins`: every LunaPlugin as a :class:`PluginRecord`, by (namespace, service);
- :func:`index_config_maps`: every ConfigMap a pass may read or write (named like a plugin's or
  an active list, or labelled ``luna.dev/role``), trimmed to what passes compare, by
  (namespace, name). Other ConfigMaps are not kept.

:class:`IndexView` reads them for a pass. A watch lags behind the writes of the pass that made
them, so the view also remembers what this process wrote last (:meth:`IndexView.wrote`) and
prefers it until the index has caught up; a LunaPlugin the API server says is gone
(:meth:`IndexView.forget`) is left out even while a stale index entry remains (kopf's re-list
after a watch gap does not remove objects deleted meanwhile).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable, Mapping
from typing import Any, Protocol

from luna_contract.names import (
    ACTIVE_LIST_PREFIX,
    LABEL_ROLE,
    LABEL_SERVICE,
    PLUGIN_CONFIGMAP_PREFIX,
    ROLE_ACTIVE_LIST,
)
from luna_operator.records import PluginRecord

ServiceKey = tuple[str, str]
ObjectKey = tuple[str, str]
"""(namespace, name)"""

PLUGINS_INDEX = "luna_plugins_by_service"
"""kopf handler id (and handler keyword) of :func:`index_plugins`"""
CONFIG_MAPS_INDEX = "luna_config_maps"
"""kopf handler id (and handler keyword) of :func:`index_config_maps`"""
MANAGED_PREFIXES = (PLUGIN_CONFIGMAP_PREFIX, ACTIVE_LIST_PREFIX)
"""names of plugin ConfigMaps and active lists: kept even when someone else's, so passes see them taken"""
#: at most this many deleted LunaPlugins are remembered (only stale index entries need them)
MAX_FORGOTTEN = 10_000


def index_plugins(body: Mapping[str, Any]) -> dict[ServiceKey, PluginRecord]:
    """kopf index function: the LunaPlugin under its (namespace, service)."""
    record = PluginRecord.from_body(body)
    return {(record.namespace, record.service): record}


def is_managed_name(name: str) -> bool:
    return name.startswith(MANAGED_PREFIXES)


def trimmed_config_map(body: Mapping[str, Any]) -> dict[str, Any]:
    """What a pass compares of a ConfigMap, as a plain dict in the API's shape."""
    meta = body.get("metadata") or {}
    return {
        "metadata": {
            "name": str(meta.get("name") or ""),
            "namespace": str(meta.get("namespace") or ""),
            "uid": str(meta.get("uid") or ""),
            "resourceVersion": str(meta.get("resourceVersion") or ""),
            "labels": dict(meta.get("labels") or {}),
            "annotations": dict(meta.get("annotations") or {}),
            "ownerReferences": [dict(ref) for ref in meta.get("ownerReferences") or []],
        },
        "data": dict(body.get("data") or {}),
    }


def index_config_maps(body: Mapping[str, Any]) -> dict[ObjectKey, dict[str, Any]]:
    """kopf index function: a ConfigMap a pass may touch, trimmed, under (namespace, name); {} for
    every other ConfigMap (kopf then keeps nothing of it)."""
    meta = body.get("metadata") or {}
    name = str(meta.get("name") or "")
    if not is_managed_name(name) and LABEL_ROLE not in (meta.get("labels") or {}):
        return {}
    return {(str(meta.get("namespace") or ""), name): trimmed_config_map(body)}


def config_map_service(body: Mapping[str, Any]) -> str | None:
    """The service a managed ConfigMap belongs to (its ``luna.dev/service`` label)."""
    labels = (body.get("metadata") or {}).get("labels") or {}
    service = labels.get(LABEL_SERVICE) if LABEL_ROLE in labels else None
    return str(service) if service else None


def code_from_services(namespace: str, name: str, plugins: Iterable[PluginRecord]) -> set[ServiceKey]:
    """Services with a plugin whose ``codeFrom`` names this ConfigMap."""
    found = set()
    for plugin in plugins:
        ref = plugin.fields.code_from
        if plugin.namespace == namespace and ref is not None and ref.name == name:
            found.add((namespace, plugin.service))
    return found


def managing_services(
    namespace: str, name: str, labelled_service: str | None, plugins: Iterable[PluginRecord]
) -> set[ServiceKey]:
    """Services whose pass writes this ConfigMap, or whose plugin's or active list's name it
    takes (or frees): its ``luna.dev/service`` label, the service of the plugin named
    ``lunaplugin-<plugin>``, the service of ``luna-plugins-<service>``."""
    found = {(namespace, labelled_service)} if labelled_service else set()
    if name.startswith(PLUGIN_CONFIGMAP_PREFIX):
        plugin_name = name[len(PLUGIN_CONFIGMAP_PREFIX) :]
        found |= {
            (namespace, p.service) for p in plugins if p.namespace == namespace and p.name == plugin_name
        }
    elif name.startswith(ACTIVE_LIST_PREFIX):
        found.add((namespace, name[len(ACTIVE_LIST_PREFIX) :]))
    return found


class ClusterView(Protocol):
    """What a pass reads of the cluster, without an API call, and how it tells the view about its
    own writes and about plugins the API server says are gone."""

    def plugins(self, key: ServiceKey) -> list[PluginRecord]:
        """The service's LunaPlugins, oldest first (the oldest wins a module-name clash)."""
        ...

    def config_map(self, namespace: str, name: str) -> dict[str, Any] | None:
        """A ConfigMap a pass may touch (see :func:`index_config_maps`), or None: there is none."""
        ...

    def wrote(self, namespace: str, stored: dict[str, Any], replaced: str | None) -> None:
        """This process wrote ``stored`` over resourceVersion ``replaced`` (None: created it)."""
        ...

    def forget(self, uid: str) -> None:
        """The API server says this LunaPlugin is gone."""
        ...


def _oldest_first(records: Iterable[PluginRecord]) -> list[PluginRecord]:
    return sorted(records, key=lambda p: (p.created, p.name))


class IndexView:
    """:class:`ClusterView` over kopf's indexes (bound once kopf hands them over), with this
    process's own writes laid over them until the watch catches up."""

    def __init__(self) -> None:
        self._plugins: Mapping[ServiceKey, Iterable[PluginRecord]] = {}
        self._config_maps: Mapping[ObjectKey, Iterable[dict[str, Any]]] = {}
        self._written: dict[ObjectKey, tuple[str | None, dict[str, Any]]] = {}
        self._echoes: OrderedDict[ObjectKey, str] = OrderedDict()
        self._forgotten: OrderedDict[str, None] = OrderedDict()

    def bind(
        self,
        plugins: Mapping[ServiceKey, Iterable[PluginRecord]],
        config_maps: Mapping[ObjectKey, Iterable[dict[str, Any]]],
    ) -> None:
        """Read these indexes from now on (kopf's, handed to a handler)."""
        self._plugins, self._config_maps = plugins, config_maps

    def plugins(self, key: ServiceKey) -> list[PluginRecord]:
        return _oldest_first(p for p in self._plugins.get(key, ()) if p.uid not in self._forgotten)

    def services(self) -> set[ServiceKey]:
        return set(self._plugins)

    def all_plugins(self) -> list[PluginRecord]:
        return [p for store in self._plugins.values() for p in store if p.uid not in self._forgotten]

    def config_map(self, namespace: str, name: str) -> dict[str, Any] | None:
        indexed = next(iter(self._config_maps.get((namespace, name), ())), None)
        written = self._written.get((namespace, name))
        if written is None:
            return indexed
        base, body = written
        if indexed is None and base is not None:  # we replaced it, and it is gone since
            del self._written[(namespace, name)]
            return None
        current = (indexed or {}).get("metadata", {}).get("resourceVersion")
        if indexed is None or current == base:
            return body  # the watch has not shown our write yet
        del self._written[(namespace, name)]  # caught up (or moved on): the index is the truth
        return indexed

    def deleted(self, namespace: str, name: str) -> None:
        """A ConfigMap was deleted: whatever this process wrote to it is gone too."""
        self._written.pop((namespace, name), None)

    def active_lists(self) -> list[dict[str, Any]]:
        """Every active list in the index (services whose plugins may all be gone)."""
        return [
            body
            for store in self._config_maps.values()
            for body in store
            if (body["metadata"].get("labels") or {}).get(LABEL_ROLE) == ROLE_ACTIVE_LIST
        ]

    def wrote(self, namespace: str, stored: dict[str, Any], replaced: str | None) -> None:
        """This process wrote ``stored`` (as the API returned it) over resourceVersion
        ``replaced`` (None: it created it)."""
        name = str(stored["metadata"]["name"])
        self._written[(namespace, name)] = (replaced, trimmed_config_map(stored))
        self._echoes[(namespace, name)] = str(stored["metadata"].get("resourceVersion") or "")
        self._echoes.move_to_end((namespace, name))
        while len(self._echoes) > MAX_FORGOTTEN:
            self._echoes.popitem(last=False)

    def is_echo(self, namespace: str, name: str, resource_version: str) -> bool:
        """Whether a ConfigMap event shows exactly what this process wrote last."""
        return self._echoes.get((namespace, name)) == resource_version

    def forget(self, uid: str) -> None:
        """The API server says this LunaPlugin is gone: leave it out from now on."""
        self._forgotten[uid] = None
        while len(self._forgotten) > MAX_FORGOTTEN:
            self._forgotten.popitem(last=False)
