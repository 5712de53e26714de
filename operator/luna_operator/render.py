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
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from luna_contract.active_list import ActiveEntry, code_hashes_of, encode_active_list
from luna_contract.code import code_hash
from luna_contract.names import (
    ANNOTATION_CODE_HASH,
    API_VERSION,
    KIND_PLUGIN,
    LABEL_PLUGIN,
    LABEL_ROLE,
    LABEL_SERVICE,
    MANAGED_BY_OPERATOR,
    ROLE_ACTIVE_LIST,
    ROLE_PLUGIN_CODE,
    ROLE_SETTINGS,
    active_list_name,
    code_key,
    plugin_configmap_name,
)
from luna_contract.secret_settings import settings_key, settings_secret_name

__all__ = [
    "ExistingConfigMap",
    "Owner",
    "StoredVersion",
    "active_list",
    "active_list_code_hashes",
    "already_holds",
    "owner_reference",
    "plugin_configmap",
    "read_plugin_configmap",
    "settings_secret",
]


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


Owner = tuple[str, str, str]
"""(kind, name, uid) of a luna.dev/v1alpha1 object: LunaPlugin or LunaPluginRuntime."""


def owner_reference(kind: str, name: str, uid: str, *, controller: bool = False) -> dict[str, Any]:
    """An ownerReference to a luna.dev/v1alpha1 object of ``kind``."""
    reference: dict[str, Any] = {"apiVersion": API_VERSION, "kind": kind, "name": name, "uid": uid}
    if controller:
        # no blockOwnerDeletion: it only matters for foreground deletion, and where the API server
        # enforces owner-reference permissions it would need rights on lunaplugins/finalizers
        reference["controller"] = True
    return reference


def plugin_configmap(
    *, plugin: str, uid: str, service: str, module: str, code: str, code_hash: str, name: str | None = None
) -> dict[str, Any]:
    """The ConfigMap of one plugin version, owned by its LunaPlugin (garbage-collected with it);
    ``name`` (default ``lunaplugin-<plugin>``): a staged rollout's canary has its own."""
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": name or plugin_configmap_name(plugin),
            "labels": {
                LABEL_SERVICE: service,
                LABEL_PLUGIN: plugin,
                LABEL_ROLE: ROLE_PLUGIN_CODE,
                "app.kubernetes.io/managed-by": MANAGED_BY_OPERATOR,
            },
            "annotations": {ANNOTATION_CODE_HASH: code_hash},
            "ownerReferences": [owner_reference(KIND_PLUGIN, plugin, uid, controller=True)],
        },
        "data": {code_key(module): code},
    }


def active_list(service: str, entries: Iterable[ActiveEntry], owners: Iterable[Owner] = ()) -> dict[str, Any]:
    """The active-list ConfigMap: modules in load order (``order``, then module name) under
    ``LUNA_<SERVICE>_ACTIVE_PLUGINS``, and ``plugins.json`` mapping each module to its code hash,
    ConfigMap and settings; owned by ``owners`` (the service's LunaPlugins and sidecar reports)."""
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": active_list_name(service),
            "labels": {
                LABEL_SERVICE: service,
                LABEL_ROLE: ROLE_ACTIVE_LIST,
                "app.kubernetes.io/managed-by": MANAGED_BY_OPERATOR,
            },
            "ownerReferences": [owner_reference(*owner) for owner in sorted(owners)],
        },
        "data": encode_active_list(service, entries),
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
                LABEL_ROLE: ROLE_SETTINGS,
                "luna.dev/plugin-settings": "service",
                "app.kubernetes.io/managed-by": MANAGED_BY_OPERATOR,
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
    if labels.get(LABEL_ROLE) != ROLE_ACTIVE_LIST or not isinstance(service, str) or not service:
        return None
    return service, code_hashes_of(body.get("data") or {}, service)


def read_plugin_configmap(body: Mapping[str, Any]) -> ExistingConfigMap:
    """What a ConfigMap named like a plugin's holds (``body`` as the API returns it)."""
    meta = body.get("metadata") or {}
    labels = meta.get("labels") or {}
    managed = labels.get(LABEL_ROLE) == ROLE_PLUGIN_CODE
    owner_uid = next(
        (
            str(ref.get("uid"))
            for ref in meta.get("ownerReferences") or []
            if ref.get("kind") == KIND_PLUGIN and ref.get("controller")
        ),
        None,
    )
    data = body.get("data") or {}
    digest = (meta.get("annotations") or {}).get(ANNOTATION_CODE_HASH)
    version = None
    if managed and len(data) == 1:
        ((key, code),) = data.items()
        matches = isinstance(code, str) and code_hash(code) == digest
        if key.endswith(".py") and matches:
            version = StoredVersion(
                key[: -len(".py")], code, str(digest), str(labels.get(LABEL_SERVICE) or "")
            )
    return ExistingConfigMap(managed, owner_uid, version)
