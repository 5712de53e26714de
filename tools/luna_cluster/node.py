"""The node of ``cluster up --node``: containerd, the kubelet, kube-proxy, kube-scheduler and CoreDNS.

They run as host processes beside the control plane (started by :mod:`.cluster`), so pods really
run: the kubelet starts them through containerd 2.x and runc on the CNI bridge of
:mod:`.hostnet`. Credentials: every component has a client certificate of the cluster CA; the
kubelet serves with a certificate of its own, accepts only client certificates and tokens the
API server vouches for (webhook authentication) and asks it what each caller may do (webhook
authorization). ``stop`` ends every pod and process and removes every mount the node made.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import Any, TextIO

import yaml

from . import hostnet, oci, procs, tools
from . import pki as pki_mod
from .launch import admin_tls, http_get, spawn, wait_until
from .node_config import (
    CNI_NETWORK,
    CONTAINERD_NAMESPACE,
    MAX_SOCKET_PATH,
    NODE_IP,
    NODE_NAME,
    PAUSE_IMAGE,
    NodeLayout,
    cni_config,
    containerd_config,
    corefile,
    kube_proxy_config,
    kubelet_config,
    resolv_conf,
)
from .state import ClusterError, StateDir, component_status, kubeconfig, write_private

#: start order; ``stop`` ends them in reverse, with the pods between the kubelet and containerd
NODE_COMPONENTS = ("containerd", "kubelet", "kube-proxy", "kube-scheduler", "coredns")
#: where the kubelet links container logs; it does not follow ``podLogsDir``
CONTAINER_LOG_LINKS = Path("/var/log/containers")

#: RBAC the node's components need beyond Kubernetes' bootstrap policy
BOOTSTRAP_RBAC = """
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata:
  name: luna:kube-apiserver-kubelet-client
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: system:kubelet-api-admin}
subjects:
- {apiGroup: rbac.authorization.k8s.io, kind: User, name: kube-apiserver-kubelet-client}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata:
  name: luna:coredns
rules:
- apiGroups: [""]
  resources: [services, namespaces]
  verbs: [list, watch]
- apiGroups: [discovery.k8s.io]
  resources: [endpointslices]
  verbs: [list, watch]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata:
  name: luna:coredns
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: luna:coredns}
subjects:
- {apiGroup: rbac.authorization.k8s.io, kind: User, name: luna:coredns}
"""


def unavailable_reason() -> str | None:
    """Why this machine cannot run a node (one line), or ``None``."""
    return hostnet.node_unavailable_reason()


def issue_certificates(state: StateDir) -> None:
    """Client certificates of the node's components and the kubelet's serving certificate."""
    pki = state.pki
    clients = {
        "kubelet": (f"system:node:{NODE_NAME}", "system:nodes"),
        "kube-apiserver-kubelet-client": ("kube-apiserver-kubelet-client", None),
        "kube-proxy": ("system:kube-proxy", None),
        "kube-scheduler": ("system:kube-scheduler", None),
        "coredns": ("luna:coredns", None),
    }
    for name, (common_name, organization) in clients.items():
        pki_mod.issue(pki, name, common_name, organization=organization, client=True)
    pki_mod.issue(
        pki, "kubelet-serving", NODE_NAME, server=True, dns=(NODE_NAME, "localhost"), ips=(NODE_IP,)
    )
    pki_mod.issue(
        pki,
        "kube-scheduler-serving",
        "kube-scheduler",
        server=True,
        dns=("localhost",),
        ips=(procs.LOOPBACK,),
    )


def apiserver_node_args(state: StateDir) -> list[str]:
    """What the API server needs to reach the kubelet as an authenticated client, and to admit nodes."""
    pki = state.pki
    return [
        f"--kubelet-client-certificate={pki.path('kube-apiserver-kubelet-client.crt')}",
        f"--kubelet-client-key={pki.path('kube-apiserver-kubelet-client.key')}",
        f"--kubelet-certificate-authority={pki.ca_cert}",
        "--kubelet-preferred-address-types=InternalIP",
        "--enable-admission-plugins=NodeRestriction",
    ]


def _image_cache() -> Path:
    return tools.cache_root() / "images"


def pause_image_archive() -> Path:
    """The sandbox image as an OCI archive, cached per content of the ``catatonit`` binary."""
    catatonit = shutil.which("catatonit")
    if catatonit is None:
        raise ClusterError("the node needs `catatonit` for its pod sandbox image (apt-get install catatonit)")
    binary = Path(catatonit)
    digest = hashlib.sha256(binary.read_bytes()).hexdigest()[:16]
    archive = _image_cache() / f"luna-pause-{digest}.tar"
    if not archive.is_file():
        archive.parent.mkdir(parents=True, exist_ok=True)
        staging = archive.with_suffix(".tmp")
        oci.write_single_binary_image(binary, PAUSE_IMAGE, ["/catatonit", "-P"], staging)
        staging.replace(archive)
    return archive


def ctr(
    layout: NodeLayout, binaries: dict[str, Path], *args: str, **kwargs: Any
) -> subprocess.CompletedProcess[str]:
    """Run ``ctr`` against the node's containerd in the Kubernetes namespace."""
    return subprocess.run(
        [
            str(binaries["ctr"]),
            "--address",
            str(layout.containerd_socket),
            "--namespace",
            CONTAINERD_NAMESPACE,
            *args,
        ],
        capture_output=True,
        text=True,
        check=False,
        **kwargs,
    )


def image_present(layout: NodeLayout, binaries: dict[str, Path], reference: str) -> bool:
    listed = ctr(layout, binaries, "images", "ls", "--quiet", timeout=60)
    return listed.returncode == 0 and _normalized(reference) in listed.stdout.split()


def _normalized(reference: str) -> str:
    """The name containerd (and the kubelet) give ``reference`` (``x:1`` -> ``docker.io/library/x:1``)."""
    first = reference.split("/", 1)[0]
    if "/" in reference and ("." in first or ":" in first or first == "localhost"):
        return reference
    return f"docker.io/{reference}" if "/" in reference else f"docker.io/library/{reference}"


def import_image(layout: NodeLayout, binaries: dict[str, Path], archive: Path) -> None:
    """Import an image archive (OCI layout or ``docker save``) into the node's containerd."""
    result = ctr(layout, binaries, "images", "import", "--no-unpack=false", str(archive), timeout=600)
    if result.returncode != 0:
        raise ClusterError(f"importing {archive.name} into the node failed: {result.stderr.strip()}")


def _write_kubeconfigs(state: StateDir, server: str) -> None:
    pki = state.pki
    layout = state.node
    for component, user in (
        ("kubelet", f"system:node:{NODE_NAME}"),
        ("kube-proxy", "system:kube-proxy"),
        ("kube-scheduler", "system:kube-scheduler"),
        ("coredns", "luna:coredns"),
    ):
        config = kubeconfig(
            server, pki.ca_cert, pki.path(f"{component}.crt"), pki.path(f"{component}.key"), user
        )
        write_private(layout.kubeconfig(component), yaml.safe_dump(config))


def _schedulable(state: StateDir, server: str) -> bool:
    """Whether the API server sees the node Ready, and the node lifecycle controller lifted its taints."""
    code, body = http_get(f"{server}/api/v1/nodes/{NODE_NAME}", admin_tls(state))
    if code != 200:
        return False
    node = json.loads(body)
    ready = any(
        condition.get("type") == "Ready" and condition.get("status") == "True"
        for condition in node.get("status", {}).get("conditions", [])
    )
    return ready and not node.get("spec", {}).get("taints")


def _environment(binaries: dict[str, Path]) -> dict[str, str]:
    """PATH with the shim next to containerd (containerd finds ``containerd-shim-runc-v2`` on PATH)."""
    env = dict(os.environ)
    env["PATH"] = os.pathsep.join([str(binaries["containerd-shim-runc-v2"].parent), env.get("PATH", "")])
    return env


def start(
    state: StateDir, binaries: dict[str, Path], server: str, timeout: float, out: TextIO
) -> dict[str, Any]:
    """Start the node's components (the control plane already answers); returns their ports."""
    layout = state.node
    if len(str(layout.containerd_socket)) > MAX_SOCKET_PATH:
        raise ClusterError(
            f"the state directory path is too long for containerd's socket: {layout.containerd_socket}"
        )
    started = time.monotonic()
    kubelet_healthz, proxy_healthz, proxy_metrics, scheduler, dns_health, dns_ready = procs.pick_ports(6)
    for directory in (
        layout.root,
        layout.cni_conf_dir,
        layout.cni_ipam_dir,
        layout.kubelet_dir,
        layout.pod_logs,
    ):
        directory.mkdir(parents=True, exist_ok=True)
    _write_kubeconfigs(state, server)
    kubectl = subprocess.run(
        [str(binaries["kubectl"]), "--kubeconfig", str(state.kubeconfig), "apply", "-f", "-"],
        input=BOOTSTRAP_RBAC,
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    if kubectl.returncode != 0:
        raise ClusterError(f"creating the node's RBAC failed: {kubectl.stderr.strip()}")

    runc = shutil.which("runc")
    assert runc is not None  # checked by unavailable_reason()
    layout.containerd_config.parent.mkdir(parents=True, exist_ok=True)
    layout.containerd_config.write_text(containerd_config(layout, binaries["bridge"].parent, Path(runc)))
    (layout.cni_conf_dir / "10-luna.conflist").write_text(cni_config(layout))
    layout.resolv_conf.write_text(resolv_conf())
    pki = state.pki
    layout.kubelet_config.write_text(
        yaml.safe_dump(
            kubelet_config(
                layout,
                ca=pki.ca_cert,
                serving_cert=pki.path("kubelet-serving.crt"),
                serving_key=pki.path("kubelet-serving.key"),
                healthz_port=kubelet_healthz,
            )
        )
    )
    layout.kube_proxy_config.write_text(
        yaml.safe_dump(kube_proxy_config(layout, healthz_port=proxy_healthz, metrics_port=proxy_metrics))
    )
    layout.corefile.write_text(
        corefile(layout.kubeconfig("coredns"), health_port=dns_health, ready_port=dns_ready)
    )

    env = _environment(binaries)
    containerd = spawn(
        state, "containerd", [str(binaries["containerd"]), "--config", str(layout.containerd_config)], env
    )
    wait_until(
        "containerd to answer",
        lambda: ctr(layout, binaries, "version", timeout=10).returncode == 0,
        state,
        "containerd",
        containerd,
        timeout,
    )
    if not image_present(layout, binaries, PAUSE_IMAGE):
        import_image(layout, binaries, pause_image_archive())
    print(f"  containerd ready ({time.monotonic() - started:.1f}s)", file=out, flush=True)

    kubelet = spawn(
        state,
        "kubelet",
        [
            str(binaries["kubelet"]),
            f"--config={layout.kubelet_config}",
            f"--kubeconfig={layout.kubeconfig('kubelet')}",
            f"--root-dir={layout.kubelet_dir}",
            f"--hostname-override={NODE_NAME}",
            f"--node-ip={NODE_IP}",
        ],
        env,
    )
    proxy = spawn(
        state, "kube-proxy", [str(binaries["kube-proxy"]), f"--config={layout.kube_proxy_config}"], env
    )
    scheduler_config = str(layout.kubeconfig("kube-scheduler"))
    scheduler_process = spawn(
        state,
        "kube-scheduler",
        [
            str(binaries["kube-scheduler"]),
            f"--kubeconfig={scheduler_config}",
            f"--authentication-kubeconfig={scheduler_config}",
            f"--authorization-kubeconfig={scheduler_config}",
            f"--bind-address={procs.LOOPBACK}",
            f"--secure-port={scheduler}",
            f"--tls-cert-file={pki.path('kube-scheduler-serving.crt')}",
            f"--tls-private-key-file={pki.path('kube-scheduler-serving.key')}",
            f"--client-ca-file={pki.ca_cert}",
            "--leader-elect=false",
            "--profiling=false",
        ],
    )
    coredns = spawn(state, "coredns", [str(binaries["coredns"]), "-conf", str(layout.corefile)])
    tls = admin_tls(state)
    wait_until(
        f"node {NODE_NAME} to be Ready without the not-ready taint",
        lambda: _schedulable(state, server),
        state,
        "kubelet",
        kubelet,
        timeout,
    )
    wait_until(
        "kube-proxy /healthz",
        lambda: http_get(f"http://{procs.LOOPBACK}:{proxy_healthz}/healthz", None)[0] == 200,
        state,
        "kube-proxy",
        proxy,
        timeout,
    )
    wait_until(
        "kube-scheduler /healthz",
        lambda: http_get(f"https://{procs.LOOPBACK}:{scheduler}/healthz", tls)[0] == 200,
        state,
        "kube-scheduler",
        scheduler_process,
        timeout,
    )
    wait_until(
        "CoreDNS /ready",
        lambda: http_get(f"http://{procs.LOOPBACK}:{dns_ready}/ready", None)[0] == 200,
        state,
        "coredns",
        coredns,
        timeout,
    )
    print(f"  node {NODE_NAME} Ready ({time.monotonic() - started:.1f}s)", file=out, flush=True)
    return {
        "name": NODE_NAME,
        "address": NODE_IP,
        "ports": {
            "kubelet-healthz": kubelet_healthz,
            "kube-proxy-healthz": proxy_healthz,
            "kube-proxy-metrics": proxy_metrics,
            "kube-scheduler": scheduler,
            "coredns-health": dns_health,
            "coredns-ready": dns_ready,
        },
    }


# --- stopping -------------------------------------------------------------------------------------


def _cached_binary(name: str) -> str | None:
    try:
        built = tools.cached_binaries(node=True)
    except tools.BuildError:
        return None
    return str(built[name]) if built and name in built else None


def _pids_in(cgroup: Path) -> set[int]:
    pids: set[int] = set()
    if not cgroup.is_dir():
        return pids
    for procs_file in cgroup.rglob("cgroup.procs"):
        with contextlib.suppress(OSError, ValueError):
            pids.update(int(line) for line in procs_file.read_text().split())
    return pids


def _kill_pods(layout: NodeLayout) -> None:
    """SIGKILL every process in the kubelet's cgroups (all containers and sandboxes), until none is left."""
    changes = hostnet.HostChanges.load(layout)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        pids: set[int] = set()
        for directory in changes.cgroups:
            pids |= _pids_in(Path(directory))
        if not pids:
            return
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.1)


def _shim_pids(layout: NodeLayout) -> list[int]:
    """The runc shims of this node's containerd (their arguments name its socket)."""
    socket = str(layout.containerd_socket)
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        argv = procs.cmdline(int(entry.name))
        if argv and Path(argv[0]).name == "containerd-shim-runc-v2" and socket in argv:
            found.append(int(entry.name))
    return found


def mounts_below(root: Path) -> list[Path]:
    """Mount points at or below ``root``, deepest first."""
    found: list[Path] = []
    prefix = f"{root}{os.sep}"
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/mountinfo").read_text().splitlines():
            point = line.split()[4].replace("\\040", " ")
            if point == str(root) or point.startswith(prefix):
                found.append(Path(point))
    return sorted(set(found), key=lambda path: -len(path.parts))


def _unmount_all(root: Path) -> list[str]:
    """Unmount everything below ``root`` (lazily when busy); returns what stays mounted."""
    for _ in range(3):
        points = mounts_below(root)
        if not points:
            return []
        for point in points:
            if subprocess.run(["umount", str(point)], capture_output=True, check=False).returncode != 0:
                subprocess.run(["umount", "--lazy", str(point)], capture_output=True, check=False)
    return [f"mount {point}" for point in mounts_below(root)]


def _remove_leftover_files(layout: NodeLayout, cni_results_before: set[str]) -> None:
    """Container log links and CNI results that belong to this node's pods."""
    if CONTAINER_LOG_LINKS.is_dir():
        for link in CONTAINER_LOG_LINKS.iterdir():
            with contextlib.suppress(OSError):
                if link.is_symlink() and os.readlink(link).startswith(f"{layout.pod_logs}{os.sep}"):
                    link.unlink()
    # the CNI library caches each attachment as <network>-<container>-<interface>: ours are the
    # bridge network's and the loopback's that appeared while the node ran
    for result in cni_results():
        if result.name not in cni_results_before and result.name.startswith(
            (f"{CNI_NETWORK}-", "cni-loopback-")
        ):
            result.unlink(missing_ok=True)


def cni_results() -> list[Path]:
    return sorted(hostnet.CNI_RESULTS.iterdir()) if hostnet.CNI_RESULTS.is_dir() else []


def stop(state: StateDir, data: dict[str, Any] | None, out: TextIO, quiet: bool = False) -> list[str]:
    """Stop the node's processes: its control loops, every pod, containerd and its shims; unmount
    what they mounted. The host changes stay until :func:`undo_host_changes` (the API server,
    which listens on the node address, goes first).

    Returns what could not be stopped or removed (empty when all of it is gone).
    """
    layout = state.node
    left: list[str] = []
    statuses = {status.component: status for status in component_status(state, data, NODE_COMPONENTS)}
    for component in ("kube-scheduler", "coredns", "kubelet", "kube-proxy"):
        left.extend(_stop_component(state, statuses[component], out, quiet))
    # removes kube-proxy's iptables chains and rules (with the cached binary when the state
    # directory that named it is gone)
    kube_proxy = (data or {}).get("binaries", {}).get("kube-proxy") or _cached_binary("kube-proxy")
    if kube_proxy:
        config = [f"--config={layout.kube_proxy_config}"] if layout.kube_proxy_config.is_file() else []
        subprocess.run([kube_proxy, "--cleanup", *config], capture_output=True, check=False, timeout=60)
    _kill_pods(layout)
    left.extend(_stop_component(state, statuses["containerd"], out, quiet))
    for pid in _shim_pids(layout):
        if not procs.stop(pid, timeout=5):
            left.append(f"containerd shim (pid {pid})")
    left.extend(_unmount_all(layout.root))
    _remove_leftover_files(layout, set(hostnet.HostChanges.load(layout).cni_results))
    # the pods' network namespaces and the containers' state: nothing of it survives a restart
    for directory in (layout.containerd_state, layout.runc_root, layout.cni_ipam_dir):
        if not mounts_below(directory):
            shutil.rmtree(directory, ignore_errors=True)
    return left


def undo_host_changes(state: StateDir) -> list[str]:
    """Remove the bridge, route, firewall rules, cgroups and sysctl changes of the node of ``state``."""
    return hostnet.undo(state.node)


def _stop_component(state: StateDir, status: Any, out: TextIO, quiet: bool) -> list[str]:
    if status.pid is None:
        return []
    if not status.alive:
        state.pid_file(status.component).unlink(missing_ok=True)
        return []
    gone = procs.stop(status.pid)
    if not quiet or not gone:
        print(f"{'stopped' if gone else 'could not stop'} {status.component} (pid {status.pid})", file=out)
    if gone:
        state.pid_file(status.component).unlink(missing_ok=True)
        return []
    return [f"{status.component} (pid {status.pid})"]


def running(state: StateDir, data: dict[str, Any] | None) -> bool:
    """Whether every node component of ``state`` still runs."""
    return all(status.alive for status in component_status(state, data, NODE_COMPONENTS))


def _processes_of(root: Path) -> list[int]:
    """Live processes whose arguments name a path below ``root`` (the cluster's and the node's
    components, pods' shims), found without the state directory's pid files. A private Docker
    daemon of the state directory does not count: it is not part of the node."""
    marker = f"{root}{os.sep}"
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            argv = procs.cmdline(int(entry.name))
            if argv and Path(argv[0]).name != "dockerd" and any(marker in arg for arg in argv[1:]):
                found.append(int(entry.name))
    return found


def prepare_host(state: StateDir, out: TextIO) -> None:
    """Refuse clearly when the host cannot carry the node, else make the host changes it needs.

    A node of another state directory that no longer runs (its processes gone, after a crash or
    a kill) is cleaned up first: its pods, mounts and host changes are removed."""
    previous = hostnet.owner()
    if previous and previous != str(state.root):
        other = StateDir.at(previous)
        if _processes_of(other.root):
            raise ClusterError(
                f"another node already runs on this machine (state directory {previous}); "
                f"stop it with `luna-cluster down --state-dir {previous}`"
            )
        print(f"the node of {previous} is not running: removing what it left on this machine", file=out)
        left = stop(other, other.load(), out, quiet=True) + hostnet.undo(other.node)
        if left:
            raise ClusterError(f"could not clean up after the node of {previous}: {'; '.join(left)}")
    clash = hostnet.conflicts(state.root)
    if clash:
        raise ClusterError(clash)
    try:
        hostnet.prepare(state.node, state.root)
    except hostnet.HostError as exc:
        raise ClusterError(str(exc)) from None
