"""A real local Kubernetes control plane (etcd, kube-apiserver, kube-controller-manager) on loopback.

Built from Go modules under ``tools/`` and driven by ``luna-cluster up|down|status|build|image``.
"""

from __future__ import annotations

from .cluster import DEFAULT_STATE_DIR, ClusterError, StateDir, down, status, up
from .tools import BuildError, ensure_all

__all__ = [
    "DEFAULT_STATE_DIR",
    "BuildError",
    "ClusterError",
    "StateDir",
    "down",
    "ensure_all",
    "status",
    "up",
]
