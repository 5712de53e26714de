"""Desired state: which plugin modules should run, in which order, with which code and settings.

``sources`` holds what the engine converges on (:class:`DesiredPlugin`, :class:`PluginSource`)
and the standalone source (a directory and an active list), which ``watcher`` follows;
``active_list`` reads and checks the operator's active list, ``secret_settings`` the plugins'
mounted secret settings. The cluster's copy of these comes through :mod:`luna_sidecar.kube`.
"""

from luna_sidecar.desired.active_list import (
    ActiveListError,
    active_list_key,
    active_list_name,
    code_of,
    parse_active_list,
)
from luna_sidecar.desired.secret_settings import SecretSettingsDir
from luna_sidecar.desired.sources import DesiredPlugin, DirectorySource, PluginSource
from luna_sidecar.desired.watcher import DirectoryWatcher

__all__ = [
    "ActiveListError",
    "DesiredPlugin",
    "DirectorySource",
    "DirectoryWatcher",
    "PluginSource",
    "SecretSettingsDir",
    "active_list_key",
    "active_list_name",
    "code_of",
    "parse_active_list",
]
