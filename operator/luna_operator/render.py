"""What the operator writes, as plain dicts: a ConfigMap per plugin and one active list per
service. Pure functions: the same plugins always render the same objects.

Ownership, so that nothing outlives its use (and no finalizer is needed): a plugin's ConfigMap is
controlled by its LunaPlugin; a service's active list is owned by every LunaPlugin of the service
and by a few sidecar reports (LunaPluginRuntime, each owned by its pod) of the service (the
reconciler keeps up to five that exist), so the garbage collector deletes it once the last of them
is gone. While a sidecar of the service runs, its list stays, and so the operator can empty it
when the service's last plugin is deleted."""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from luna_contract.secret_settings import ENTRY_FIELD, settings_key, settings_secret_name

MANAGED_BY = "luna-plugins-operator"
LABEL_SERVICE = "luna.dev/service"
LABEL_PLUGIN = "luna.dev/plugin"
LABEL_ROLE = "luna.dev/role"
ANNOTATION_HASH = "luna.dev/code-hash"
PLUGINS_KEY = "plugins.json"
PLUGIN_CONFIGMAP_PREFIX = "lunaplugin-"
ACTIVE_LIST_PREFIX = "luna-plugins-"


@dataclass(frozen=True)
class StoredVersion:
    """What a plugin's ConfigMap holds (or is to hold): one module's code, for one service."""

    module: str
    code: str
    code_hash: str
    service: str


@dataclass(frozen=True)
class ExistingConfigMap:
    """A ConfigMap named like a plugin's (``lunaplugin-<name>``), as found in the namespace.

    ``managed``: written by the operator (it carries ``luna.dev/role=plugin-code``); the operator
    never overwrites one that is not. ``owner_uid``: the LunaPlugin that owns it (a LunaPlugin of
    the same name deleted and created again owns it no more). ``version``: its content when it is
    one well-formed version (a single ``<module>.py`` key matching the hash annotation)."""

    managed: bool
    owner_uid: str | None
    version: StoredVersion | None


def plugin_configmap_name(plugin: str) -> str:
    """The ConfigMap holding a plugin's code (``lunaplugin-<name>``)."""
    return PLUGIN_CONFIGMAP_PREFIX + plugin


def active_list_name(service: str) -> str:
    """The active-list ConfigMap of a service (``luna-plugins-<service>``)."""
    return ACTIVE_LIST_PREFIX + service


def active_list_key(service: str) -> str:
    """The active-list key, as the original service's setting: ``LUNA_<SERVICE>_ACTIVE_PLUGINS``."""
    return f"LUNA_{service.upper().replace('-', '_')}_ACTIVE_PLUGINS"


Owner = tuple[str, str, str]
"""(kind, name, uid) of a luna.dev/v1alpha1 object: LunaPlugin or LunaPluginRuntime."""


def owner_reference(kind: str, name: str, uid: str, *, controller: bool = False) -> dict[str, Any]:
    """An ownerReference to a luna.dev/v1alpha1 object of ``kind``."""
    reference: dict[str, Any] = {"apiVersion": "luna.dev/v1alpha1", "kind": kind, "name": name, "uid": uid}
    if controller:
        # no blockOwnerDeletion: it only matters for foreground deletion, and where the API server
        # enforces owner-reference permissions it would need rights on lunaplugins/finalizers
        reference["controller"] = True
    return reference


def plugin_configmap(
    *, plugin: str, uid: str, service: str, module: str, code: str, code_hash: str
) -> dict[str, Any]:
    """The ConfigMap of one plugin version, owned by its LunaPlugin (garbage-collected with it)."""
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": plugin_configmap_name(plugin),
            "labels": {
                LABEL_SERVICE: service,
                LABEL_PLUGIN: plugin,
                LABEL_ROLE: "plugin-code",
                "app.kubernetes.io/managed-by": MANAGED_BY,
            },
            "annotations": {ANNOTATION_HASH: code_hash},
            "ownerReferences": [owner_reference("LunaPlugin", plugin, uid, controller=True)],
        },
        "data": {f"{module}.py": code},
    }


@dataclass(frozen=True)
class ActiveEntry:
    """A plugin in a service's active list."""

    module: str
    plugin: str
    code_hash: str
    config_map: str
    order: int = 0
    settings: Mapping[str, Any] = field(default_factory=dict)
    requirements: tuple[str, ...] = ()
    secret_settings_hash: str | None = None
    """the SHA-256 of the plugin's key in the service's settings Secret (``spec.settingsFrom``)"""


def entry_details(entry: ActiveEntry) -> dict[str, Any]:
    """``entry`` as ``plugins.json`` holds it (``requirements`` only when it has some)."""
    details: dict[str, Any] = {
        "codeHash": entry.code_hash,
        "configMap": entry.config_map,
        "plugin": entry.plugin,
        "settings": dict(entry.settings),
    }
    if entry.requirements:
        details["requirements"] = list(entry.requirements)
    if entry.secret_settings_hash is not None:
        details[ENTRY_FIELD] = entry.secret_settings_hash
    return details


def active_list(service: str, entries: Iterable[ActiveEntry], owners: Iterable[Owner] = ()) -> dict[str, Any]:
    """The active-list ConfigMap: modules in load order (``order``, then module name) under
    ``LUNA_<SERVICE>_ACTIVE_PLUGINS``, and ``plugins.json`` mapping each module to its code hash,
    ConfigMap and settings; owned by ``owners`` (the service's LunaPlugins and sidecar reports)."""
    ordered = sorted(entries, key=lambda entry: (entry.order, entry.module))
    details = {entry.module: entry_details(entry) for entry in ordered}
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": active_list_name(service),
            "labels": {
                LABEL_SERVICE: service,
                LABEL_ROLE: "active-list",
                "app.kubernetes.io/managed-by": MANAGED_BY,
            },
            "ownerReferences": [owner_reference(*owner) for owner in sorted(owners)],
        },
        "data": {
            active_list_key(service): json.dumps([entry.module for entry in ordered]),
            PLUGINS_KEY: json.dumps(details, sort_keys=True),
        },
    }


def settings_secret(
    service: str, values: Mapping[str, bytes], owners: Iterable[Owner] = ()
) -> dict[str, Any]:
    """The service's settings Secret: one key ``<module>.json`` per plugin with settings from
    Secrets (``values`` by module, as :func:`luna_contract.secret_settings.encode` made them),
    owned like the active list. Labelled so that the operator's Secret watch sees it, with a value
    that never offers it to plugins."""
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "Opaque",
        "metadata": {
            "name": settings_secret_name(service),
            "labels": {
                LABEL_SERVICE: service,
                LABEL_ROLE: "settings",
                "luna.dev/plugin-settings": "service",
                "app.kubernetes.io/managed-by": MANAGED_BY,
            },
            "ownerReferences": [owner_reference(*owner) for owner in sorted(owners)],
        },
        "data": {
            settings_key(module): base64.b64encode(data).decode() for module, data in sorted(values.items())
        },
    }


def already_holds(current: dict[str, Any], body: dict[str, Any]) -> bool:
    """Whether ``current`` already has ``body``'s data and our labels, annotations and owners."""
    meta, wanted = current.get("metadata") or {}, body["metadata"]
    labels, annotations = meta.get("labels") or {}, meta.get("annotations") or {}
    return (
        (current.get("data") or {}) == body["data"]
        and all(labels.get(k) == v for k, v in wanted["labels"].items())
        and all(annotations.get(k) == v for k, v in wanted.get("annotations", {}).items())
        and (meta.get("ownerReferences") or []) == wanted.get("ownerReferences", [])
    )


def active_list_code_hashes(body: Mapping[str, Any]) -> tuple[str, dict[str, str]] | None:
    """(service, module -> code hash) of an active-list ConfigMap the operator wrote (``body``
    as the API returns it): what the sidecars following it report against. None when ``body``
    is no such list or cannot be read; modules without a readable hash are left out."""
    meta = body.get("metadata") or {}
    labels = meta.get("labels") or {}
    service = labels.get(LABEL_SERVICE)
    if labels.get(LABEL_ROLE) != "active-list" or not isinstance(service, str) or not service:
        return None
    data = body.get("data") or {}
    try:
        modules = json.loads(data.get(active_list_key(service)) or "[]")
        details = json.loads(data.get(PLUGINS_KEY) or "{}")
    except (TypeError, ValueError):
        return None
    if not isinstance(modules, list) or not isinstance(details, dict):
        return None
    hashes: dict[str, str] = {}
    for module in modules:
        entry = details.get(module) if isinstance(module, str) else None
        if isinstance(entry, dict) and isinstance(entry.get("codeHash"), str):
            hashes[module] = entry["codeHash"]
    return service, hashes


def read_plugin_configmap(body: Mapping[str, Any]) -> ExistingConfigMap:
    """What a ConfigMap named like a plugin's holds (``body`` as the API returns it)."""
    meta = body.get("metadata") or {}
    labels = meta.get("labels") or {}
    managed = labels.get(LABEL_ROLE) == "plugin-code"
    owner_uid = next(
        (
            str(ref.get("uid"))
            for ref in meta.get("ownerReferences") or []
            if ref.get("kind") == "LunaPlugin" and ref.get("controller")
        ),
        None,
    )
    data = body.get("data") or {}
    digest = (meta.get("annotations") or {}).get(ANNOTATION_HASH)
    version = None
    if managed and len(data) == 1:
        ((key, code),) = data.items()
        matches = isinstance(code, str) and hashlib.sha256(code.encode()).hexdigest() == digest
        if key.endswith(".py") and matches:
            version = StoredVersion(
                key[: -len(".py")], code, str(digest), str(labels.get(LABEL_SERVICE) or "")
            )
    return ExistingConfigMap(managed, owner_uid, version)
