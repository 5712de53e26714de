"""Desired state: which plugin modules should run, in which order, with which code and settings.

``sources`` holds what the engine converges on (:class:`DesiredPlugin`, :class:`PluginSource`)
and the standalone source (a directory and an active list), which ``watcher`` follows;
``secret_settings`` reads the plugins' mounted secret settings. The operator's active list is
read with the contract's decoder (:mod:`luna_contract.active_list`). The cluster's copy of these
comes through :mod:`luna_sidecar.kube`.
"""

from luna_sidecar.desired.secret_settings import SecretSettingsDir
from luna_sidecar.desired.sources import DesiredPlugin, DirectorySource, PluginSource
from luna_sidecar.desired.watcher import DirectoryWatcher

__all__ = [
    "DesiredPlugin",
    "DirectorySource",
    "DirectoryWatcher",
    "PluginSource",
    "SecretSettingsDir",
]
