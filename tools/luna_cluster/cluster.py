"""Start, inspect and stop the local cluster: etcd, kube-apiserver, kube-controller-manager, and a node.

Without a node every process listens on 127.0.0.1 only, on ports the kernel hands out. With
``--node`` (:mod:`.node`) the API server listens on the node's bridge address instead, so that
pods reach it through the ``kubernetes`` Service, and the kubelet, kube-proxy, kube-scheduler,
containerd and CoreDNS join it. Every process runs in its own session (so it outlives
``luna-cluster up``) and writes its log to ``DIR/logs``; :mod:`.state` describes the
state directory.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import ssl
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TextIO

import yaml

from . import image, procs, tools
from . import node as node_mod
from . import pki as pki_mod
from .launch import admin_tls, http_get, spawn, wait_until
from .node_config import NODE_IP, SERVICE_CIDR, SERVICE_IP
from .state import (
    CLUSTER_NAME,
    CONTROL_PLANE,
    ClusterError,
    ProcessStatus,
    StateDir,
    component_status,
    components,
    kubeconfig,
    write_private,
)

__all__ = [
    "CLUSTER_NAME",
    "COMPONENTS",
    "DEFAULT_STATE_DIR",
    "ClusterError",
    "ProcessStatus",
    "StateDir",
    "component_status",
    "down",
    "status",
    "up",
]

DEFAULT_STATE_DIR = Path(".luna/cluster")
ISSUER = "https://kubernetes.default.svc.cluster.local"

#: every default controller except those that need a cloud; without a node also those that only act
#: on nodes or volumes attached to nodes (fewer controllers also start faster)
CLOUD_CONTROLLERS = (
    "-node-ipam-controller",
    "-cloud-node-lifecycle-controller",
    "-service-lb-controller",
    "-node-route-controller",
)
NODE_CONTROLLERS = (
    "-node-lifecycle-controller",
    "-taint-eviction-controller",
    "-device-taint-eviction-controller",
    "-persistentvolume-attach-detach-controller",
    "-persistentvolume-expander-controller",
    "-ttl-controller",
)
#: controllers younger than the oldest control plane here (``up --kube-version``) -> the minor that
#: brought them: kube-controller-manager refuses a name it does not know, even one to turn off
CONTROLLERS_SINCE = {"device-taint-eviction-controller": (1, 33)}

#: the control plane's components (``down`` stops them in reverse)
COMPONENTS = CONTROL_PLANE
#: what ``DIR/bin`` links to
LINKED_BINARIES = ("kubectl", "helm", "etcd", "kube-apiserver", "kube-controller-manager")
NODE_LINKED_BINARIES = ("ctr",)


def controllers(*, node: bool, kube_version: str | None = None) -> tuple[str, ...]:
    """The ``--controllers`` list of kube-controller-manager (of ``kube_version``, ``1.30``; by
    default today's)."""
    wanted = ("*", *CLOUD_CONTROLLERS, *(() if node else NODE_CONTROLLERS))
    if kube_version is None:
        return wanted
    major, minor = (int(part) for part in tools.minor_version(kube_version).split("."))
    return tuple(name for name in wanted if CONTROLLERS_SINCE.get(name.lstrip("-"), (0, 0)) <= (major, minor))


# --- arguments -----------------------------------------------------------------------------------


def _etcd_args(state: StateDir, binary: Path, client: int, peer: int) -> list[str]:
    client_url, peer_url = f"http://{procs.LOOPBACK}:{client}", f"http://{procs.LOOPBACK}:{peer}"
    return [
        str(binary),
        "--name=luna",
        f"--data-dir={state.etcd_data}",
        f"--listen-client-urls={client_url}",
        f"--advertise-client-urls={client_url}",
        f"--listen-peer-urls={peer_url}",
        f"--initial-advertise-peer-urls={peer_url}",
        f"--initial-cluster=luna={peer_url}",
        "--initial-cluster-state=new",
        "--unsafe-no-fsync",
        "--log-level=warn",
    ]


AUDIT_POLICY = """\
apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: [RequestReceived]
rules:
  - level: Metadata
"""
"""``up --audit-log``: who asked what (user, user agent, verb, resource), never bodies"""


def _audit_args(state: StateDir) -> list[str]:
    state.run.mkdir(parents=True, exist_ok=True)
    state.audit_policy.write_text(AUDIT_POLICY)
    return [
        f"--audit-policy-file={state.audit_policy}",
        f"--audit-log-path={state.audit_log}",
        "--audit-log-format=json",
        "--audit-log-mode=batch",  # written from a buffer: requests do not wait for the file
        "--audit-log-maxsize=500",
        "--audit-log-maxbackup=1",
    ]


def _apiserver_args(
    state: StateDir, binary: Path, etcd_client: int, port: int, *, node: bool = False, audit: bool = False
) -> list[str]:
    pki = state.pki
    # with a node, pods reach the API server through the `kubernetes` Service, whose endpoint is the
    # advertised address: it must be one they can route to (the node's bridge), not loopback
    address = NODE_IP if node else procs.LOOPBACK
    return [
        str(binary),
        f"--etcd-servers=http://{procs.LOOPBACK}:{etcd_client}",
        f"--bind-address={address}",
        f"--advertise-address={address}",
        f"--secure-port={port}",
        f"--tls-cert-file={pki.path('kube-apiserver.crt')}",
        f"--tls-private-key-file={pki.path('kube-apiserver.key')}",
        f"--client-ca-file={pki.ca_cert}",
        f"--cert-dir={state.run / 'kube-apiserver-certs'}",
        "--authorization-mode=Node,RBAC",
        f"--service-account-issuer={ISSUER}",
        f"--service-account-key-file={pki.sa_pub}",
        f"--service-account-signing-key-file={pki.sa_key}",
        f"--service-cluster-ip-range={SERVICE_CIDR}",
        "--allow-privileged=true",
        # front-proxy settings: delegated authentication (controller-manager, aggregated API servers)
        # reads this CA from kube-system/extension-apiserver-authentication
        f"--requestheader-client-ca-file={pki.ca_cert}",
        "--requestheader-allowed-names=front-proxy-client",
        "--requestheader-username-headers=X-Remote-User",
        "--requestheader-group-headers=X-Remote-Group",
        "--requestheader-extra-headers-prefix=X-Remote-Extra-",
        f"--proxy-client-cert-file={pki.path('front-proxy-client.crt')}",
        f"--proxy-client-key-file={pki.path('front-proxy-client.key')}",
        # without a node the `kubernetes` Service would point at loopback, which it may not; nothing
        # in-cluster needs it then. With a node the lease reconciler keeps it at the node address.
        *(node_mod.apiserver_node_args(state) if node else ["--endpoint-reconciler-type=none"]),
        "--profiling=false",
        # on SIGTERM, give open watches 2 s instead of --request-timeout (60 s) to go away: a test
        # that restarts the API server, or `down`, should not wait a minute
        "--shutdown-send-retry-after=true",
        *(_audit_args(state) if audit else []),
    ]


def _kcm_args(
    state: StateDir, binary: Path, port: int, *, node: bool = False, kube_version: str | None = None
) -> list[str]:
    pki = state.pki
    kubeconfig_path = str(state.kcm_kubeconfig)
    return [
        str(binary),
        f"--kubeconfig={kubeconfig_path}",
        f"--authentication-kubeconfig={kubeconfig_path}",
        f"--authorization-kubeconfig={kubeconfig_path}",
        f"--bind-address={procs.LOOPBACK}",
        f"--secure-port={port}",
        f"--tls-cert-file={pki.path('kube-controller-manager-serving.crt')}",
        f"--tls-private-key-file={pki.path('kube-controller-manager-serving.key')}",
        f"--client-ca-file={pki.ca_cert}",
        f"--root-ca-file={pki.ca_cert}",
        f"--service-account-private-key-file={pki.sa_key}",
        f"--cluster-signing-cert-file={pki.ca_cert}",
        f"--cluster-signing-key-file={pki.ca_key}",
        f"--cluster-name={CLUSTER_NAME}",
        f"--service-cluster-ip-range={SERVICE_CIDR}",
        f"--controllers={','.join(controllers(node=node, kube_version=kube_version))}",
        "--use-service-account-credentials=true",
        "--leader-elect=false",
        "--profiling=false",
    ]


def _issue_certificates(state: StateDir) -> None:
    pki = state.pki
    pki_mod.ensure_ca(pki)
    pki_mod.issue(
        pki,
        "kube-apiserver",
        "kube-apiserver",
        server=True,
        dns=(
            "localhost",
            "kubernetes",
            "kubernetes.default",
            "kubernetes.default.svc",
            "kubernetes.default.svc.cluster.local",
        ),
        # one certificate serves both modes: loopback without a node, the node address with one
        ips=(procs.LOOPBACK, NODE_IP, SERVICE_IP),
    )
    pki_mod.issue(pki, "admin", "luna-admin", organization="system:masters", client=True)
    pki_mod.issue(pki, "front-proxy-client", "front-proxy-client", client=True)
    pki_mod.issue(pki, "kube-controller-manager", "system:kube-controller-manager", client=True)
    pki_mod.issue(
        pki,
        "kube-controller-manager-serving",
        "kube-controller-manager",
        server=True,
        dns=("localhost",),
        ips=(procs.LOOPBACK,),
    )


def _link_binaries(state: StateDir, binaries: dict[str, Path]) -> None:
    state.bin.mkdir(parents=True, exist_ok=True)
    for name in (*LINKED_BINARIES, *NODE_LINKED_BINARIES):
        link = state.bin / name
        if link.is_symlink() or link.exists():
            link.unlink()
        if name in binaries:
            link.symlink_to(binaries[name])


# --- up / down / status ---------------------------------------------------------------------------


def _running(state: StateDir, *, node: bool, audit: bool = False, kube_version: str | None = None) -> bool:
    """Whether every component of ``state`` runs (with ``node``, the node's too; with ``audit``,
    the API server writes its audit log; the control plane of ``kube_version``, by default today's)
    and /readyz answers."""
    data = state.load()
    if data is None or not all(status.alive for status in component_status(state, data)):
        return False
    if (node and not data.get("node")) or (audit and not data.get("auditLog")):
        return False
    today = tools.default_kube_version()
    if data.get("kubeVersion", today) != (kube_version or today):
        return False
    try:
        context = admin_tls(state)
    except (OSError, ssl.SSLError):
        return False
    code, _ = http_get(f"{data['server']}/readyz", context)
    return code == 200


def _ensure_binaries(out: TextIO, node: bool, kube_version: str | None = None) -> dict[str, Path]:
    return tools.ensure_all(out, node=node, kube_version=kube_version)


def up(
    state: StateDir,
    out: TextIO = sys.stderr,
    apiserver_port: int = 0,
    timeout: float = 90.0,
    *,
    node: bool = False,
    audit: bool = False,
    kube_version: str | None = None,
) -> dict[str, Any]:
    """Start the cluster of ``state`` (or reuse it when it already runs); returns cluster.json.

    With ``node`` the cluster also gets a node that runs pods (see :mod:`.node`); a cluster that
    runs without one is restarted with one. With ``audit`` the API server logs every request
    (user, user agent, verb, resource; no bodies) to ``StateDir.audit_log``; a cluster that runs
    without it is restarted. With ``kube_version`` (``1.30``, see :data:`tools.KUBE_COMPAT`) the
    API server and controller manager are of that minor, without a node; a cluster that runs
    another minor is restarted. Raises :class:`ClusterError` (or :class:`tools.BuildError`) with
    the reason.
    """
    started = time.monotonic()
    kube_version = tools.older_minor(kube_version)
    if node and kube_version:
        raise ClusterError(
            f"up --node with --kube-version {kube_version}: the node's kubelet is today's, and a "
            "kubelet may not be newer than its API server; the older minors run without a node"
        )
    state.root.mkdir(parents=True, exist_ok=True)
    existing = state.load()
    if _running(state, node=node, audit=audit, kube_version=kube_version):
        binaries = _ensure_binaries(out, bool(existing and existing.get("node")), kube_version)
        _link_binaries(state, binaries)
        assert existing is not None
        kind = "cluster with its node" if existing.get("node") else "cluster"
        print(f"{kind} already running at {existing['server']} (kubeconfig: {state.kubeconfig})", file=out)
        return existing
    if node:
        reason = node_mod.unavailable_reason()
        if reason:
            raise NodeUnavailableError(f"up --node {reason}")
    # leftovers of a cluster that partly died (or runs without the node asked for): stop, start afresh
    _stop_all(state, out, quiet=True)

    binaries = _ensure_binaries(out, node, kube_version)
    _link_binaries(state, binaries)
    _issue_certificates(state)
    if node:
        node_mod.issue_certificates(state)
        node_mod.prepare_host(state, out)
    for attempt in range(3):
        try:
            data = _start(
                state,
                binaries,
                apiserver_port,
                timeout,
                out,
                node=node,
                audit=audit,
                kube_version=kube_version,
            )
            break
        except PortRaceError as exc:
            # a free port we picked was taken before the component bound it: pick others
            if attempt == 2 or apiserver_port:
                _stop_all(state, out, quiet=True)
                raise ClusterError(str(exc)) from None
            print(f"{exc.component} lost its port to another process; retrying with other ports", file=out)
    print(
        f"cluster (Kubernetes {data['kubeVersion']}) up in {time.monotonic() - started:.1f}s: "
        f"{data['server']}"
        f"{' with node ' + data['node']['name'] if node else ''}\n"
        f"  export KUBECONFIG={state.kubeconfig}\n"
        f"  {state.bin / 'kubectl'} get {'nodes' if node else 'namespaces'}",
        file=out,
    )
    return data


class NodeUnavailableError(ClusterError):
    """This machine cannot run a node (no root, no container runtime...); the CLI exits 2."""


class PortRaceError(ClusterError):
    def __init__(self, message: str, component: str) -> None:
        super().__init__(message)
        self.component = component


def _start(
    state: StateDir,
    binaries: dict[str, Path],
    apiserver_port: int,
    timeout: float,
    out: TextIO,
    *,
    node: bool,
    audit: bool = False,
    kube_version: str | None = None,
) -> dict[str, Any]:
    """Start the processes on fresh ports and wait until they are ready."""
    etcd_client, etcd_peer, apiserver, kcm = procs.pick_ports(4, {2: apiserver_port})
    server = f"https://{NODE_IP if node else procs.LOOPBACK}:{apiserver}"
    pki = state.pki
    write_private(
        state.kcm_kubeconfig,
        yaml.safe_dump(
            kubeconfig(
                server,
                pki.ca_cert,
                pki.path("kube-controller-manager.crt"),
                pki.path("kube-controller-manager.key"),
                "system:kube-controller-manager",
            )
        ),
    )
    admin_config = kubeconfig(server, pki.ca_cert, pki.path("admin.crt"), pki.path("admin.key"), "luna-admin")
    all_components = (*CONTROL_PLANE, *(node_mod.NODE_COMPONENTS if node else ()))
    data: dict[str, Any] = {
        "server": server,
        "ports": {
            "etcd-client": etcd_client,
            "etcd-peer": etcd_peer,
            "kube-apiserver": apiserver,
            "kube-controller-manager": kcm,
        },
        "components": list(all_components),
        "binaries": {name: str(binaries[name]) for name in (*all_components, *(("ctr",) if node else ()))},
        "versions": {
            module.name: tools.module_version(module)
            for module in (*tools.control_plane_modules(kube_version), *(tools.NODE_MODULES if node else ()))
        },
        # the minor of the API server and the controller manager
        "kubeVersion": kube_version or tools.default_kube_version(),
        "kubeconfig": str(state.kubeconfig),
        "started": time.time(),
        **({"auditLog": str(state.audit_log)} if audit else {}),
    }
    state.save(data)
    shutil.rmtree(state.etcd_data, ignore_errors=True)
    context = admin_tls(state)
    try:
        etcd = spawn(state, "etcd", _etcd_args(state, binaries["etcd"], etcd_client, etcd_peer))
        wait_until(
            "etcd /health",
            lambda: http_get(f"http://{procs.LOOPBACK}:{etcd_client}/health", None)[0] == 200,
            state,
            "etcd",
            etcd,
            timeout,
        )
        api = spawn(
            state,
            "kube-apiserver",
            _apiserver_args(
                state, binaries["kube-apiserver"], etcd_client, apiserver, node=node, audit=audit
            ),
        )
        wait_until(
            "kube-apiserver /readyz",
            lambda: http_get(f"{server}/readyz", context)[0] == 200,
            state,
            "kube-apiserver",
            api,
            timeout,
        )
        write_private(state.kubeconfig, yaml.safe_dump(admin_config))
        manager = spawn(
            state,
            "kube-controller-manager",
            _kcm_args(state, binaries["kube-controller-manager"], kcm, node=node, kube_version=kube_version),
        )
        wait_until(
            "kube-controller-manager /healthz",
            lambda: http_get(f"https://{procs.LOOPBACK}:{kcm}/healthz", context)[0] == 200,
            state,
            "kube-controller-manager",
            manager,
            timeout,
        )
        # the service-account controller makes `default` in every namespace: controllers are working
        wait_until(
            "the default service account",
            lambda: (
                http_get(f"{server}/api/v1/namespaces/default/serviceaccounts/default", context)[0] == 200
            ),
            state,
            "kube-controller-manager",
            manager,
            timeout,
        )
        if node:
            print(f"  control plane ready; starting the node on {NODE_IP}", file=out, flush=True)
            data["node"] = node_mod.start(state, binaries, server, timeout, out)
            state.save(data)
    except ClusterError as exc:
        _stop_all(state, out, quiet=True)
        component = next((c for c in CONTROL_PLANE if str(exc).startswith(c)), "")
        if component and "address already in use" in procs.log_tail(state.log(component), 200):
            raise PortRaceError(str(exc), component) from None
        raise
    except BaseException:
        _stop_all(state, out, quiet=True)
        raise
    return data


@contextlib.contextmanager
def locked(state: StateDir) -> Iterator[None]:
    """Serialize ``up`` and ``down`` of one state directory (the lock file lives next to it)."""
    lock = state.root.parent / f".{state.root.name}.lock"
    lock.parent.mkdir(parents=True, exist_ok=True)
    with lock.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _stop_all(state: StateDir, out: TextIO, quiet: bool = False) -> bool:
    """Stop every process of ``state`` that is still ours (the node first) and undo the node's host
    changes; True if nothing is left."""
    data = state.load()
    ok = True
    with_node = bool(
        (data or {}).get("node") or state.node.state_file.exists() or "kubelet" in components(data)
    )
    left = node_mod.stop(state, data, out, quiet) if with_node else []
    for status in reversed(component_status(state, data, CONTROL_PLANE)):
        if status.pid is None:
            continue
        gone = True
        if status.alive:
            gone = procs.stop(status.pid)
            ok = ok and gone
            if not quiet or not gone:
                print(
                    f"{'stopped' if gone else 'could not stop'} {status.component} (pid {status.pid})",
                    file=out,
                )
        elif not quiet:
            print(f"{status.component} (pid {status.pid}) was not running", file=out)
        if gone:
            state.pid_file(status.component).unlink(missing_ok=True)
    if with_node:
        # after the API server: on its way out it deletes its lease through the node address
        left.extend(node_mod.undo_host_changes(state))
    for item in left:
        print(f"could not remove {item}", file=out)
    return image.stop_private_engine(state, out) and ok and not left


def down(state: StateDir, out: TextIO = sys.stderr, purge: bool = False) -> bool:
    """Stop the cluster (and its node) and delete its data; ``purge`` also removes the state directory.

    The node's image store is kept for the next ``up --node`` unless ``purge``.
    """
    if not state.root.exists():
        print(f"no cluster state in {state.root}", file=out)
        return True
    ok = _stop_all(state, out)
    if not ok:
        return False
    shutil.rmtree(state.etcd_data, ignore_errors=True)
    shutil.rmtree(state.run, ignore_errors=True)
    for path in (state.state_file, state.kubeconfig, state.kcm_kubeconfig):
        path.unlink(missing_ok=True)
    if purge:
        if node_mod.mounts_below(state.root):
            print(f"not purging {state.root}: something is still mounted below it", file=out)
            return False
        shutil.rmtree(state.root, ignore_errors=True)
    print(f"cluster in {state.root} is down{' and purged' if purge else ''}", file=out)
    return True


def status(state: StateDir, out: TextIO = sys.stdout) -> bool:
    """Print what runs where; True when every component is alive."""
    data = state.load()
    if data is None:
        print(f"no cluster in {state.root}", file=out)
        return False
    ports: dict[str, int] = data.get("ports", {})
    node_ports: dict[str, int] = (data.get("node") or {}).get("ports", {})
    statuses = component_status(state, data)
    print(f"state dir:  {state.root}", file=out)
    print(f"server:     {data.get('server')}", file=out)
    print(f"kubeconfig: {state.kubeconfig}", file=out)
    print(f"versions:   {', '.join(f'{k} {v}' for k, v in data.get('versions', {}).items())}", file=out)
    if data.get("node"):
        print(f"node:       {data['node']['name']} at {data['node']['address']}", file=out)
    for entry in statuses:
        where = _where(entry.component, ports, node_ports)
        state_text = "running" if entry.alive else "NOT RUNNING"
        print(f"  {entry.component:<24} pid {entry.pid or '-':<8} {state_text:<12} {where}", file=out)
    return all(entry.alive for entry in statuses)


def _where(component: str, ports: dict[str, int], node_ports: dict[str, int]) -> str:
    """Where ``component`` listens, for ``status``."""
    if component == "etcd":
        return f"{procs.LOOPBACK}:{ports.get('etcd-client')} (peer {ports.get('etcd-peer')})"
    if component == "kube-apiserver":
        return f"{NODE_IP if node_ports else procs.LOOPBACK}:{ports.get(component)}"
    if component in ports:
        return f"{procs.LOOPBACK}:{ports[component]}"
    listening = {
        "kubelet": f"{NODE_IP}:10250 (healthz {procs.LOOPBACK}:{node_ports.get('kubelet-healthz')})",
        "kube-proxy": f"{procs.LOOPBACK}:{node_ports.get('kube-proxy-healthz')}",
        "kube-scheduler": f"{procs.LOOPBACK}:{node_ports.get('kube-scheduler')}",
        "coredns": f"{NODE_IP}:53 (ready {procs.LOOPBACK}:{node_ports.get('coredns-ready')})",
        "containerd": "unix socket in DIR/node/containerd",
    }
    return listening.get(component, "")


def resident_memory_kib(pids: list[int]) -> int:
    """Sum of VmRSS of ``pids`` (KiB), for reporting."""
    total = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except FileNotFoundError:
            continue
    return total


def running_pids(state: StateDir) -> list[int]:
    return [s.pid for s in component_status(state, state.load()) if s.alive and s.pid]


def env_with_kubeconfig(state: StateDir) -> dict[str, str]:
    env = dict(os.environ)
    env["KUBECONFIG"] = str(state.kubeconfig)
    env["PATH"] = f"{state.bin}{os.pathsep}{env.get('PATH', '')}"
    return env
