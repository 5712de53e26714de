"""The sidecar's side of the Kubernetes API, used in cluster mode only.

``kube_source`` mirrors the service's ConfigMaps and turns them into the desired list;
``kube_report`` writes the per-pod ``LunaPluginRuntime`` report the operator reads. Importing
this package loads ``kubernetes_asyncio`` (a fifth of a second and some 35 MB), so only the
cluster feed imports it, when it connects: a sidecar that reads a directory never does.
"""

from luna_sidecar.kube.kube_report import RuntimeReporter
from luna_sidecar.kube.kube_source import ClusterWatcher, ConfigMapMirror

__all__ = ["ClusterWatcher", "ConfigMapMirror", "RuntimeReporter"]
