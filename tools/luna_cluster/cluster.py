"""Start, inspect and stop the local control plane (etcd, kube-apiserver, kube-controller-manager).

Every process listens on 127.0.0.1 only, on ports the kernel hands out, runs in its own session (so
it outlives ``luna-plugins cluster up``) and writes its log to ``DIR/logs``. The state directory:

    DIR/cluster.json        ports, binaries, versions of the running cluster
    DIR/kubeconfig          admin credentials (client certificate in group system:masters)
    DIR/bin/                kubectl, helm (and the server binaries), symlinked from the build cache
    DIR/pki/                private CA, serving/client certificates, service-account key pair
    DIR/run/*.pid           one pid file per process
    DIR/logs/*.log          one log per process
    DIR/etcd-data/          etcd's data (wiped whenever the cluster starts afresh)
    DIR/kube-controller-manager.kubeconfig
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import json
import os
import shutil
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import yaml

from . import pki as pki_mod
from . import procs, tools

DEFAULT_STATE_DIR = Path(".luna/cluster")
SERVICE_CIDR = "10.0.0.0/24"
SERVICE_IP = "10.0.0.1"
ISSUER = "https://kubernetes.default.svc.cluster.local"
CLUSTER_NAME = "luna-local"

#: every default controller except those that only act on nodes, volumes attached to nodes or a cloud
#: (there is no kubelet, scheduler or cloud here); fewer controllers also start faster
CONTROLLERS = (
    "*",
    "-node-lifecycle-controller",
    "-node-ipam-controller",
    "-taint-eviction-controller",
    "-device-taint-eviction-controller",
    "-persistentvolume-attach-detach-controller",
    "-persistentvolume-expander-controller",
    "-ttl-controller",
    "-cloud-node-lifecycle-controller",
    "-service-lb-controller",
    "-node-route-controller",
)

#: start order; ``down`` stops them in reverse
COMPONENTS = ("etcd", "kube-apiserver", "kube-controller-manager")
#: what ``DIR/bin`` links to
LINKED_BINARIES = ("kubectl", "helm", "etcd", "kube-apiserver", "kube-controller-manager")


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

    def pid_file(self, component: str) -> Path:
        return self.run / f"{component}.pid"

    def log(self, component: str) -> Path:
        return self.logs / f"{component}.log"

    def load(self) -> dict[str, Any] | None:
        try:
            data: dict[str, Any] = json.loads(self.state_file.read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return None
        return data


@dataclass(frozen=True)
class ProcessStatus:
    component: str
    pid: int | None
    alive: bool
    binary: str | None


def component_status(state: StateDir, data: dict[str, Any] | None) -> list[ProcessStatus]:
    """The pid and liveness of each component (alive = the pid still runs our binary for this DIR)."""
    binaries: dict[str, str] = (data or {}).get("binaries", {})
    result = []
    for component in COMPONENTS:
        pid = procs.read_pid(state.pid_file(component))
        binary = binaries.get(component)
        # every argument that names our state directory is a path below it: "/x/a/" never matches "/x/ab/"
        alive = bool(pid and binary and procs.is_ours(pid, Path(binary), f"{state.root}{os.sep}"))
        result.append(ProcessStatus(component, pid, alive, binary))
    return result


# --- kubeconfig -----------------------------------------------------------------------------------


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


def _write_private(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    tmp.chmod(0o600)
    tmp.replace(path)


# --- health checks --------------------------------------------------------------------------------


def _get(url: str, context: ssl.SSLContext | None, timeout: float = 2.0) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=timeout, context=context) as response:
            return int(response.status), response.read().decode(errors="replace")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode(errors="replace")
    except (urllib.error.URLError, OSError):
        return 0, ""


def admin_tls(state: StateDir) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(state.pki.ca_cert))
    context.load_cert_chain(str(state.pki.path("admin.crt")), str(state.pki.path("admin.key")))
    return context


def _wait(
    what: str,
    check: Callable[[], bool],
    state: StateDir,
    component: str,
    process: subprocess.Popen[bytes] | None,
    timeout: float,
) -> None:
    """Poll ``check`` until it passes; fail early (with the log tail) if ``process`` exits."""
    deadline = time.monotonic() + timeout
    while True:
        if check():
            return
        if process is not None and process.poll() is not None:
            raise ClusterError(
                f"{component} exited with code {process.returncode} while waiting for {what}; "
                f"last lines of {state.log(component)}:\n{procs.log_tail(state.log(component))}"
            )
        if time.monotonic() > deadline:
            raise ClusterError(
                f"timed out after {timeout:.0f}s waiting for {what}; "
                f"last lines of {state.log(component)}:\n{procs.log_tail(state.log(component))}"
            )
        time.sleep(0.1)


# --- up / down / status ---------------------------------------------------------------------------


def _spawn(state: StateDir, component: str, argv: list[str]) -> subprocess.Popen[bytes]:
    state.logs.mkdir(parents=True, exist_ok=True)
    state.run.mkdir(parents=True, exist_ok=True)
    with state.log(component).open("ab") as log:
        log.write(f"\n=== {time.strftime('%Y-%m-%dT%H:%M:%S')} {' '.join(argv)}\n".encode())
        log.flush()
        process = subprocess.Popen(
            argv,
            cwd=state.root,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # own session: survives `up` exiting and its terminal's signals
            close_fds=True,
        )
    state.pid_file(component).write_text(f"{process.pid}\n")
    return process


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


def _apiserver_args(state: StateDir, binary: Path, etcd_client: int, port: int) -> list[str]:
    pki = state.pki
    return [
        str(binary),
        f"--etcd-servers=http://{procs.LOOPBACK}:{etcd_client}",
        f"--bind-address={procs.LOOPBACK}",
        f"--advertise-address={procs.LOOPBACK}",
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
        # the `kubernetes` Service may not point at a loopback address; nothing in-cluster needs it
        "--endpoint-reconciler-type=none",
        "--profiling=false",
        # on SIGTERM, give open watches 2 s instead of --request-timeout (60 s) to go away: a test
        # that restarts the API server, or `down`, should not wait a minute
        "--shutdown-send-retry-after=true",
    ]


def _kcm_args(state: StateDir, binary: Path, port: int) -> list[str]:
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
        f"--controllers={','.join(CONTROLLERS)}",
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
        ips=(procs.LOOPBACK, SERVICE_IP),
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
    for name in LINKED_BINARIES:
        link = state.bin / name
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to(binaries[name])


def _running(state: StateDir) -> bool:
    """Whether every component of ``state`` runs and the API server answers /readyz."""
    data = state.load()
    if data is None or not all(status.alive for status in component_status(state, data)):
        return False
    try:
        context = admin_tls(state)
    except (OSError, ssl.SSLError):
        return False
    code, _ = _get(f"{data['server']}/readyz", context)
    return code == 200


def up(
    state: StateDir,
    out: TextIO = sys.stderr,
    apiserver_port: int = 0,
    timeout: float = 90.0,
) -> dict[str, Any]:
    """Start the cluster of ``state`` (or reuse it when it already runs); returns cluster.json."""
    started = time.monotonic()
    state.root.mkdir(parents=True, exist_ok=True)
    if _running(state):
        binaries = tools.ensure_all(out)
        _link_binaries(state, binaries)
        existing = state.load()
        assert existing is not None
        print(f"cluster already running at {existing['server']} (kubeconfig: {state.kubeconfig})", file=out)
        return existing
    # leftovers of a cluster that partly died: stop what still runs, then start afresh
    _stop_all(state, out, quiet=True)

    binaries = tools.ensure_all(out)
    _link_binaries(state, binaries)
    _issue_certificates(state)
    for attempt in range(3):
        try:
            data = _start(state, binaries, apiserver_port, timeout, out)
            break
        except PortRaceError as exc:
            # a free port we picked was taken before the component bound it: pick others
            if attempt == 2 or apiserver_port:
                raise ClusterError(str(exc)) from None
            print(f"{exc.component} lost its port to another process; retrying with other ports", file=out)
    print(
        f"cluster up in {time.monotonic() - started:.1f}s: {data['server']}\n"
        f"  export KUBECONFIG={state.kubeconfig}\n"
        f"  {state.bin / 'kubectl'} get namespaces",
        file=out,
    )
    return data


class PortRaceError(ClusterError):
    def __init__(self, message: str, component: str) -> None:
        super().__init__(message)
        self.component = component


def _start(
    state: StateDir, binaries: dict[str, Path], apiserver_port: int, timeout: float, out: TextIO
) -> dict[str, Any]:
    """Start the three processes on fresh ports and wait until they are ready."""
    etcd_client, etcd_peer, apiserver, kcm = procs.pick_ports(4, {2: apiserver_port})
    server = f"https://{procs.LOOPBACK}:{apiserver}"
    pki = state.pki
    _write_private(
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
    data: dict[str, Any] = {
        "server": server,
        "ports": {
            "etcd-client": etcd_client,
            "etcd-peer": etcd_peer,
            "kube-apiserver": apiserver,
            "kube-controller-manager": kcm,
        },
        "binaries": {name: str(binaries[name]) for name in COMPONENTS},
        "versions": {module.name: tools.module_version(module) for module in tools.MODULES},
        "kubeconfig": str(state.kubeconfig),
        "started": time.time(),
    }
    state.state_file.write_text(json.dumps(data, indent=2) + "\n")
    shutil.rmtree(state.etcd_data, ignore_errors=True)
    context = admin_tls(state)
    try:
        etcd = _spawn(state, "etcd", _etcd_args(state, binaries["etcd"], etcd_client, etcd_peer))
        _wait(
            "etcd /health",
            lambda: _get(f"http://{procs.LOOPBACK}:{etcd_client}/health", None)[0] == 200,
            state,
            "etcd",
            etcd,
            timeout,
        )
        api = _spawn(
            state,
            "kube-apiserver",
            _apiserver_args(state, binaries["kube-apiserver"], etcd_client, apiserver),
        )
        _wait(
            "kube-apiserver /readyz",
            lambda: _get(f"{server}/readyz", context)[0] == 200,
            state,
            "kube-apiserver",
            api,
            timeout,
        )
        _write_private(state.kubeconfig, yaml.safe_dump(admin_config))
        manager = _spawn(
            state, "kube-controller-manager", _kcm_args(state, binaries["kube-controller-manager"], kcm)
        )
        _wait(
            "kube-controller-manager /healthz",
            lambda: _get(f"https://{procs.LOOPBACK}:{kcm}/healthz", context)[0] == 200,
            state,
            "kube-controller-manager",
            manager,
            timeout,
        )
        # the service-account controller makes `default` in every namespace: controllers are working
        _wait(
            "the default service account",
            lambda: _get(f"{server}/api/v1/namespaces/default/serviceaccounts/default", context)[0] == 200,
            state,
            "kube-controller-manager",
            manager,
            timeout,
        )
    except ClusterError as exc:
        _stop_all(state, out, quiet=True)
        component = next((c for c in COMPONENTS if str(exc).startswith(c)), "")
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
    """Stop every process of ``state`` that is still ours; True if all are gone."""
    data = state.load()
    ok = True
    for status in reversed(component_status(state, data)):
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
    return ok


def down(state: StateDir, out: TextIO = sys.stderr, purge: bool = False) -> bool:
    """Stop the cluster and delete its data; ``purge`` also removes the state directory."""
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
    statuses = component_status(state, data)
    print(f"state dir:  {state.root}", file=out)
    print(f"server:     {data.get('server')}", file=out)
    print(f"kubeconfig: {state.kubeconfig}", file=out)
    print(f"versions:   {', '.join(f'{k} {v}' for k, v in data.get('versions', {}).items())}", file=out)
    for entry in statuses:
        port = ports.get(entry.component) or ports.get("etcd-client")
        where = f"{procs.LOOPBACK}:{port}"
        if entry.component == "etcd":
            where += f" (peer {ports.get('etcd-peer')})"
        state_text = "running" if entry.alive else "NOT RUNNING"
        print(f"  {entry.component:<24} pid {entry.pid or '-':<8} {state_text:<12} {where}", file=out)
    return all(entry.alive for entry in statuses)


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
