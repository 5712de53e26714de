"""What the operator writes, as plain dicts: a ConfigMap per plugin and one active list per
service. Pure functions: the same plugins always render the same objects."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

MANAGED_BY = "luna-plugins-operator"
LABEL_SERVICE = "luna.dev/service"
LABEL_PLUGIN = "luna.dev/plugin"
LABEL_ROLE = "luna.dev/role"
ANNOTATION_HASH = "luna.dev/code-hash"
PLUGINS_KEY = "plugins.json"


def plugin_configmap_name(plugin: str) -> str:
    """The ConfigMap holding a plugin's code (``lunaplugin-<name>``)."""
    return f"lunaplugin-{plugin}"


def active_list_name(service: str) -> str:
    """The active-list ConfigMap of a service (``luna-plugins-<service>``)."""
    return f"luna-plugins-{service}"


def active_list_key(service: str) -> str:
    """The active-list key, as the original service's setting: ``LUNA_<SERVICE>_ACTIVE_PLUGINS``."""
    return f"LUNA_{service.upper().replace('-', '_')}_ACTIVE_PLUGINS"


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
            "ownerReferences": [
                {
                    "apiVersion": "luna.dev/v1alpha1",
                    "kind": "LunaPlugin",
                    "name": plugin,
                    "uid": uid,
                    "controller": True,
                    "blockOwnerDeletion": True,
                }
            ],
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


def active_list(service: str, entries: Iterable[ActiveEntry]) -> dict[str, Any]:
    """The active-list ConfigMap: modules in load order (``order``, then module name) under
    ``LUNA_<SERVICE>_ACTIVE_PLUGINS``, and ``plugins.json`` mapping each module to its code hash,
    ConfigMap and settings."""
    ordered = sorted(entries, key=lambda entry: (entry.order, entry.module))
    details = {
        entry.module: {
            "codeHash": entry.code_hash,
            "configMap": entry.config_map,
            "plugin": entry.plugin,
            "settings": dict(entry.settings),
        }
        for entry in ordered
    }
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
        },
        "data": {
            active_list_key(service): json.dumps([entry.module for entry in ordered]),
            PLUGINS_KEY: json.dumps(details, sort_keys=True),
        },
    }
