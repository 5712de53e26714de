"""The names both sides find each other's objects by: API group, kinds, labels, keys.

Everything here is part of the wire contract between the operator and the sidecar (and of what
users select on with ``kubectl -l``): changing a value is a breaking change for running clusters.
"""

from __future__ import annotations

__all__ = [
    "ACTIVE_LIST_PREFIX",
    "ANNOTATION_CODE_HASH",
    "ANNOTATION_ROLLOUT_COMMAND",
    "API_VERSION",
    "CANARY_CONFIGMAP_PREFIX",
    "GROUP",
    "KIND_PLUGIN",
    "KIND_RUNTIME",
    "LABEL_PLUGIN",
    "LABEL_ROLE",
    "LABEL_SERVICE",
    "MANAGED_BY_OPERATOR",
    "MANAGED_BY_SIDECAR",
    "PLUGINS_KEY",
    "PLUGIN_CONFIGMAP_PREFIX",
    "PLURAL_PLUGINS",
    "PLURAL_RUNTIMES",
    "ROLE_ACTIVE_LIST",
    "ROLE_PLUGIN_CODE",
    "ROLE_SETTINGS",
    "VERSION",
    "active_list_key",
    "active_list_name",
    "canary_configmap_name",
    "code_key",
    "plugin_configmap_name",
    "report_name",
]

GROUP = "luna.dev"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
KIND_PLUGIN = "LunaPlugin"
KIND_RUNTIME = "LunaPluginRuntime"
PLURAL_PLUGINS = "lunaplugins"
PLURAL_RUNTIMES = "lunapluginruntimes"

LABEL_SERVICE = f"{GROUP}/service"
"""the service an object belongs to: plugin ConfigMaps, active lists, settings Secrets, reports"""
LABEL_PLUGIN = f"{GROUP}/plugin"
"""the LunaPlugin a plugin ConfigMap holds the code of"""
LABEL_ROLE = f"{GROUP}/role"
"""what an object the operator writes is: one of the ``ROLE_*`` values"""
ROLE_PLUGIN_CODE = "plugin-code"
ROLE_ACTIVE_LIST = "active-list"
ROLE_SETTINGS = "settings"
ANNOTATION_CODE_HASH = f"{GROUP}/code-hash"
"""on a plugin ConfigMap: the code hash of the one version it holds"""
MANAGED_BY_OPERATOR = "luna-plugins-operator"
MANAGED_BY_SIDECAR = "luna-plugins-sidecar"

PLUGINS_KEY = "plugins.json"
"""the active list's key holding each module's entry (:mod:`luna_contract.active_list`)"""
PLUGIN_CONFIGMAP_PREFIX = "lunaplugin-"
ACTIVE_LIST_PREFIX = "luna-plugins-"


def plugin_configmap_name(plugin: str) -> str:
    """The ConfigMap holding a plugin's code: ``lunaplugin-<name>``."""
    return PLUGIN_CONFIGMAP_PREFIX + plugin


CANARY_CONFIGMAP_PREFIX = "lunacanary-"
ANNOTATION_ROLLOUT_COMMAND = "luna.dev/rollout-command"
"""on a LunaPlugin: ``promote``, ``abort`` or ``retry`` for its staged rollout, optionally followed
by ``/<anything>`` to give the same command again; the operator acts on each value once"""


def canary_configmap_name(plugin: str) -> str:
    """The ConfigMap holding the canary of a plugin's staged rollout: ``lunacanary-<name>``."""
    return CANARY_CONFIGMAP_PREFIX + plugin


def code_key(module: str) -> str:
    """The key of a module's code in its plugin ConfigMap: ``<module>.py``."""
    return f"{module}.py"


def active_list_name(service: str) -> str:
    """The active-list ConfigMap of a service: ``luna-plugins-<service>``."""
    return ACTIVE_LIST_PREFIX + service


def active_list_key(service: str) -> str:
    """The active list's key of module names, as the original service's setting:
    ``LUNA_<SERVICE>_ACTIVE_PLUGINS``."""
    return f"LUNA_{service.upper().replace('-', '_')}_ACTIVE_PLUGINS"


def report_name(pod: str, service: str) -> str:
    """The ``LunaPluginRuntime`` a sidecar writes: ``<pod>-<service>``, cut to a valid name."""
    return f"{pod}-{service}"[:253].rstrip("-.")
