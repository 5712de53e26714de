"""The state directory of a local cluster, and which of its processes still run.

DIR/cluster.json        ports, binaries, versions and components of the running cluster
DIR/kubeconfig          admin credentials (client certificate in group system:masters)
DIR/bin/                kubectl, helm (and the server binaries), symlinked from the build cache
DIR/pki/                private CA, serving/client certificates, service-account key pair
DIR/run/*.pid           one pid file per process
DIR/logs/*.log          one log per process
DIR/etcd-data/          etcd's data (wiped whenever the cluster starts afresh)
DIR/node/               the node's configuration and data (``cluster up --node``)
DIR/*.kubeconfig        credentials of the other components
"""

from __future__ import annotations

import base64
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import pki as pki_mod
from . import procs
from .node_config import NodeLayout

CLUSTER_NAME = "luna-local"
#: the control plane's processes in start order; ``down`` stops them in reverse
CONTROL_PLANE = ("etcd", "kube-apiserver", "kube-controller-manager")


class ClusterError(RuntimeError):
    """The cluster could not be started or inspected; the message says why."""


@dataclass(frozen=True)
class StateDir:
    root: Path

    @classmethod
    def at(cls, path: Path | str) -> StateDir:
        return cls(Path(path).expanduser().resolve())

    @property
    def state_file(self) -> Path:
        return self.root / "cluster.json"

    @property
    def kubeconfig(self) -> Path:
        return self.root / "kubeconfig"

    @property
    def kcm_kubeconfig(self) -> Path:
        return self.root / "kube-controller-manager.kubeconfig"

    @property
    def bin(self) -> Path:
        return self.root / "bin"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def run(self) -> Path:
        return self.root / "run"

    @property
    def etcd_data(self) -> Path:
        return self.root / "etcd-data"

    @property
    def pki(self) -> pki_mod.Pki:
        return pki_mod.Pki(self.root / "pki")

    @property
    def node(self) -> NodeLayout:
        return NodeLayout(self.root / "node")

    def pid_file(self, component: str) -> Path:
        return self.run / f"{component}.pid"

    def log(self, component: str) -> Path:
        return self.logs / f"{component}.log"

    @property
    def audit_log(self) -> Path:
        """The API server's audit log (``up --audit-log``): one JSON line per request."""
        return self.logs / "kube-apiserver-audit.log"

    @property
    def audit_policy(self) -> Path:
        return self.run / "audit-policy.yaml"

    def load(self) -> dict[str, Any] | None:
        try:
            data: dict[str, Any] = json.loads(self.state_file.read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return None
        return data

    def save(self, data: dict[str, Any]) -> None:
        tmp = self.state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(data, indent=2) + "\n")
        tmp.replace(self.state_file)


@dataclass(frozen=True)
class ProcessStatus:
    component: str
    pid: int | None
    alive: bool
    binary: str | None


def components(data: dict[str, Any] | None) -> tuple[str, ...]:
    """The components a cluster.json names, in start order (the control plane when it names none)."""
    listed = (data or {}).get("components")
    return tuple(listed) if isinstance(listed, list) else CONTROL_PLANE


def component_status(
    state: StateDir, data: dict[str, Any] | None, only: tuple[str, ...] | None = None
) -> list[ProcessStatus]:
    """The pid and liveness of each component (alive = the pid still runs our binary for this DIR)."""
    binaries: dict[str, str] = (data or {}).get("binaries", {})
    result = []
    for component in only if only is not None else components(data):
        pid = procs.read_pid(state.pid_file(component))
        binary = binaries.get(component)
        # every argument that names our state directory is a path below it: "/x/a/" never matches "/x/ab/"
        alive = bool(pid and binary and procs.is_ours(pid, Path(binary), f"{state.root}{os.sep}"))
        result.append(ProcessStatus(component, pid, alive, binary))
    return result


def _b64(path: Path) -> str:
    return base64.b64encode(path.read_bytes()).decode()


def kubeconfig(server: str, ca: Path, cert: Path, key: Path, user: str) -> dict[str, Any]:
    """A kubeconfig with one cluster/user/context, certificates embedded (the file is portable)."""
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {"name": CLUSTER_NAME, "cluster": {"server": server, "certificate-authority-data": _b64(ca)}}
        ],
        "users": [
            {"name": user, "user": {"client-certificate-data": _b64(cert), "client-key-data": _b64(key)}}
        ],
        "contexts": [{"name": CLUSTER_NAME, "context": {"cluster": CLUSTER_NAME, "user": user}}],
        "current-context": CLUSTER_NAME,
        "preferences": {},
    }


def write_private(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically, readable by its owner only (credentials)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    tmp.chmod(0o600)
    tmp.replace(path)
