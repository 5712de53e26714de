"""What the node changes on the host, and undoing exactly that: bridge, route, firewall, sysctls, cgroups.

``prepare`` records every change in ``DIR/node/host-changes.json`` *before* making it, so ``undo``
(called by ``cluster down``, also after a crash half-way) removes what this node made and nothing
else. A machine runs one node at a time: ``/run/luna-plugins/node.json``, a copy of that record,
names the state directory whose node owns the bridge, and lets a later ``up --node`` clean up
after a node whose state directory is gone.
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import shutil
import stat
import subprocess
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .node_config import BRIDGE, CGROUP_ROOT, NODE_IP, POD_CIDR, SERVICE_CIDR, NodeLayout

RECORD_FILE = Path("/run/luna-plugins/node.json")
#: our filter chain, jumped to from FORWARD: traffic from and to the bridge is accepted even where
#: a container engine set the FORWARD policy to DROP
FORWARD_CHAIN = "LUNA-NODE-FORWARD"
FORWARD_COMMENT = "luna-plugins node"

#: sysctls the node sets, and those the kubelet and kube-proxy may set (restored by ``undo``)
SYSCTLS_SET = {"net/ipv4/ip_forward": "1", "net/bridge/bridge-nf-call-iptables": "1"}
SYSCTLS_WATCHED = (
    "vm/overcommit_memory",
    "vm/panic_on_oom",
    "kernel/panic",
    "kernel/panic_on_oops",
    "kernel/keys/root_maxkeys",
    "kernel/keys/root_maxbytes",
    "net/ipv4/conf/all/route_localnet",
    "net/netfilter/nf_conntrack_max",
)

#: directories the node's components create outside the state directory when they are missing (the
#: shims' sockets, the CNI result cache, the kubelet's container log links); removed when empty
CNI_RESULTS = Path("/var/lib/cni/results")
SHARED_DIRECTORIES = (Path("/run/containerd/s"), CNI_RESULTS, Path("/var/log/containers"))

#: iptables chains the kubelet and kube-proxy create outside of ``kube-proxy --cleanup``'s reach
KUBELET_CHAINS = {
    "filter": ("KUBE-FIREWALL", "KUBE-KUBELET-CANARY"),
    "nat": ("KUBE-KUBELET-CANARY", "KUBE-MARK-DROP", "KUBE-MARK-MASQ", "KUBE-POSTROUTING"),
    "mangle": ("KUBE-IPTABLES-HINT", "KUBE-KUBELET-CANARY", "KUBE-PROXY-CANARY"),
}


class HostError(RuntimeError):
    """The host cannot carry the node, or a change to it failed; the message says which and why."""


@dataclass
class HostChanges:
    """What ``prepare`` changed; saved as JSON so that another process can undo it."""

    owner: str = ""
    sysctls: dict[str, str] = field(default_factory=dict)
    bridge: bool = False
    route: bool = False
    forward_chain: bool = False
    cgroups: list[str] = field(default_factory=list)
    #: directories (and their parents) that did not exist before the node started
    directories: list[str] = field(default_factory=list)
    #: files of the CNI result cache that existed before (the others are the node's pods')
    cni_results: list[str] = field(default_factory=list)

    @classmethod
    def load(cls, layout: NodeLayout) -> HostChanges:
        """The record of ``layout``'s node; the machine's copy when the state directory lost it."""
        for path in (layout.state_file, RECORD_FILE):
            try:
                data = json.loads(path.read_text())
            except (OSError, json.JSONDecodeError):
                continue
            if path == RECORD_FILE and data.get("owner") != str(layout.root.parent):
                continue
            known = {name: data[name] for name in cls.__dataclass_fields__ if name in data}
            return cls(**known)
        return cls()

    def save(self, layout: NodeLayout) -> None:
        """Write the record to the state directory and, with its owner, to the machine's copy."""
        text = json.dumps(asdict(self), indent=2) + "\n"
        targets = [layout.state_file, *([RECORD_FILE] if self.owner else [])]
        for path in targets:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".tmp")
            tmp.write_text(text)
            tmp.replace(path)


def run(argv: list[str], *, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run a host command; with ``check`` a failure raises :class:`HostError` with its stderr."""
    try:
        result = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=60)
    except FileNotFoundError as exc:
        raise HostError(f"`{argv[0]}` is not installed (needed for the node)") from exc
    if check and result.returncode != 0:
        raise HostError(f"`{' '.join(argv)}` failed: {(result.stderr or result.stdout).strip()}")
    return result


def _sysctl_path(name: str) -> Path:
    return Path("/proc/sys") / name


def read_sysctl(name: str) -> str | None:
    try:
        return _sysctl_path(name).read_text().strip()
    except OSError:
        return None


def write_sysctl(name: str, value: str) -> None:
    try:
        _sysctl_path(name).write_text(f"{value}\n")
    except OSError as exc:
        raise HostError(f"cannot set sysctl {name.replace('/', '.')}={value}: {exc}") from exc


# --- checks ---------------------------------------------------------------------------------------


def cgroup_mounts(kinds: tuple[str, ...] = ("cgroup", "cgroup2")) -> list[Path]:
    """Mount points of the cgroup hierarchies of ``kinds`` (v1: one per controller set; v2: unified)."""
    mounts: list[Path] = []
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/mountinfo").read_text().splitlines():
            fields = line.split(" - ", 1)
            if len(fields) == 2 and fields[1].split()[0] in kinds:
                mounts.append(Path(fields[0].split()[4]))
    return mounts


def cgroup_v1_mounts() -> list[Path]:
    return cgroup_mounts(("cgroup",))


def node_unavailable_reason() -> str | None:
    """Why this machine cannot run the node (one line), or ``None`` when it can."""
    if os.geteuid() != 0:
        return "needs root (it runs the kubelet and containerd, and creates a bridge and firewall rules)"
    if shutil.which("runc") is None:
        return "needs a container runtime: runc is not installed (e.g. apt-get install runc)"
    if shutil.which("catatonit") is None:
        return "needs catatonit for the pods' sandbox image (apt-get install catatonit)"
    if "overlay" not in Path("/proc/filesystems").read_text():
        return "needs the overlay filesystem, which this kernel does not offer"
    if not cgroup_v1_mounts() and not Path("/sys/fs/cgroup/cgroup.controllers").exists():
        return "needs cgroups mounted under /sys/fs/cgroup"
    for tool in ("ip", "iptables"):
        if shutil.which(tool) is None:
            return f"needs `{tool}` (apt-get install {'iproute2' if tool == 'ip' else 'iptables'})"
    return None


def owner() -> str | None:
    """The state directory whose node owns the bridge on this machine, if any."""
    try:
        found = json.loads(RECORD_FILE.read_text()).get("owner")
    except (OSError, json.JSONDecodeError, AttributeError):
        return None
    return str(found) if found else None


def _bridge_exists() -> bool:
    return run(["ip", "link", "show", BRIDGE], check=False).returncode == 0


def _overlapping_route(cidr: str) -> str | None:
    """A route of the host (not ours) that overlaps ``cidr``."""
    shown = run(["ip", "-4", "route", "show", "match", cidr.split("/")[0]], check=False).stdout
    for line in shown.splitlines():
        if line.startswith("default") or f"dev {BRIDGE}" in line:
            continue
        return line.strip()
    return None


def conflicts(state_root: Path) -> str | None:
    """Why the node of ``state_root`` would clash with something on this machine, or ``None``."""
    current = owner()
    if _bridge_exists() and current is None:
        return f"the network interface {BRIDGE} already exists and is not ours; remove it or stop its owner"
    for cidr in (POD_CIDR, SERVICE_CIDR):
        clash = _overlapping_route(cidr)
        if clash:
            return f"the node's range {cidr} overlaps a route of this machine ({clash})"
    chains = run(["iptables", "-t", "nat", "-S"], check=False).stdout
    if "-N KUBE-SERVICES" in chains and current is None:
        return "this machine already runs kube-proxy (iptables chain KUBE-SERVICES exists)"
    return None


# --- prepare / undo -------------------------------------------------------------------------------


def prepare(layout: NodeLayout, state_root: Path) -> HostChanges:
    """Make the host ready for the node: sysctls, bridge with the node address, Service route,
    forwarding rules, the kubelet's cgroup root. Each change is saved before it is made."""
    changes = HostChanges.load(layout)
    changes.owner = str(state_root)
    for name in (*SYSCTLS_SET, *SYSCTLS_WATCHED):
        value = read_sysctl(name)
        if value is not None and name not in changes.sysctls:
            changes.sysctls[name] = value
    changes.save(layout)
    for name, value in SYSCTLS_SET.items():
        write_sysctl(name, value)

    if not _bridge_exists():
        changes.bridge = True
        changes.save(layout)
        run(["ip", "link", "add", BRIDGE, "type", "bridge"])
        # A bridge whose address was never set takes the lowest address of its ports, so it
        # changes as pods come and go; pods' ARP entries for the gateway then point at an
        # address nobody has, and connections to them fail for a moment ("No route to host").
        # Setting its own random address pins it.
        mac = Path(f"/sys/class/net/{BRIDGE}/address").read_text().strip()
        run(["ip", "link", "set", "dev", BRIDGE, "address", mac])
    prefix = POD_CIDR.split("/")[1]
    addresses = run(["ip", "-4", "-o", "addr", "show", "dev", BRIDGE]).stdout
    if f"{NODE_IP}/{prefix}" not in addresses:
        run(["ip", "addr", "add", f"{NODE_IP}/{prefix}", "dev", BRIDGE])
    run(["ip", "link", "set", BRIDGE, "up"])

    changes.route = True
    changes.save(layout)
    run(["ip", "route", "replace", SERVICE_CIDR, "dev", BRIDGE, "src", NODE_IP])

    changes.forward_chain = True
    changes.save(layout)
    if run(["iptables", "-t", "filter", "-S", FORWARD_CHAIN], check=False).returncode != 0:
        run(["iptables", "-t", "filter", "-N", FORWARD_CHAIN])
    run(["iptables", "-t", "filter", "-F", FORWARD_CHAIN])
    run(["iptables", "-t", "filter", "-A", FORWARD_CHAIN, "-i", BRIDGE, "-j", "ACCEPT"])
    run(["iptables", "-t", "filter", "-A", FORWARD_CHAIN, "-o", BRIDGE, "-j", "ACCEPT"])
    jump = ["FORWARD", "-m", "comment", "--comment", FORWARD_COMMENT, "-j", FORWARD_CHAIN]
    if run(["iptables", "-t", "filter", "-C", *jump], check=False).returncode != 0:
        run(["iptables", "-t", "filter", "-I", *jump[:1], "1", *jump[1:]])

    # the kubelet makes its cgroup root in every hierarchy, the unified one of hybrid hosts included
    for mount in cgroup_mounts():
        directory = mount / CGROUP_ROOT.lstrip("/")
        if str(directory) not in changes.cgroups:
            changes.cgroups.append(str(directory))
            changes.save(layout)
        directory.mkdir(exist_ok=True)
    for directory in SHARED_DIRECTORIES:
        for path in (directory, *directory.parents):
            if not path.exists() and str(path) not in changes.directories:
                changes.directories.append(str(path))
    if not changes.cni_results and CNI_RESULTS.is_dir():
        changes.cni_results = sorted(entry.name for entry in CNI_RESULTS.iterdir())
    changes.save(layout)
    return changes


def _remove_cgroup_tree(top: Path) -> list[str]:
    """rmdir ``top`` and everything below it, deepest first; returns what could not be removed."""
    if not top.is_dir():
        return []
    left: list[str] = []
    directories = sorted((path for path in top.rglob("*") if path.is_dir()), key=lambda p: -len(p.parts))
    for directory in [*directories, top]:
        try:
            directory.rmdir()
        except FileNotFoundError:
            continue
        except OSError as exc:
            left.append(f"{directory}: {exc.strerror}")
    return left


def _remove_sockets(directory: Path) -> None:
    """Remove the unix sockets directly in ``directory`` (the shims' sockets of a node whose
    processes are gone), nothing else."""
    with contextlib.suppress(OSError):
        for entry in os.scandir(directory):
            with contextlib.suppress(OSError):
                if stat.S_ISSOCK(entry.stat(follow_symlinks=False).st_mode):
                    os.unlink(entry.path)


def _delete_chain(table: str, chain: str) -> list[str]:
    """Remove every jump to ``chain`` in ``table``, then the chain itself (if it exists); returns
    what could not be removed."""
    listing = run(["iptables", "-t", table, "-S"], check=False).stdout
    if f"-N {chain}" not in listing.splitlines():
        return []
    for rule in listing.splitlines():
        parts = shlex.split(rule)  # comments are quoted
        if parts[:1] == ["-A"] and "-j" in parts and parts[parts.index("-j") + 1] == chain:
            run(["iptables", "-t", table, "-D", *parts[1:]], check=False)
    run(["iptables", "-t", table, "-F", chain], check=False)
    removed = run(["iptables", "-t", table, "-X", chain], check=False)
    return [] if removed.returncode == 0 else [f"iptables chain {chain} ({table}): {removed.stderr.strip()}"]


def undo(layout: NodeLayout) -> list[str]:
    """Undo what :func:`prepare` and the node's components changed; returns what is left over."""
    changes = HostChanges.load(layout)
    left: list[str] = []
    for directory in reversed(changes.cgroups):
        left.extend(_remove_cgroup_tree(Path(directory)))
    if changes.forward_chain:
        left.extend(_delete_chain("filter", FORWARD_CHAIN))
    for table, chains in KUBELET_CHAINS.items():
        for chain in chains:
            left.extend(_delete_chain(table, chain))
    if changes.route:
        run(["ip", "route", "del", SERVICE_CIDR, "dev", BRIDGE], check=False)
    if changes.bridge and _bridge_exists():
        result = run(["ip", "link", "del", BRIDGE], check=False)
        if result.returncode != 0:
            left.append(f"bridge {BRIDGE}: {result.stderr.strip()}")
    # deepest first; only the sockets a killed shim leaves behind are removed from them, then only
    # empty ones: any other file in them is not ours to delete
    for directory in sorted(changes.directories, key=lambda path: -len(Path(path).parts)):
        _remove_sockets(Path(directory))
        with contextlib.suppress(OSError):
            Path(directory).rmdir()
    for name, value in changes.sysctls.items():
        if read_sysctl(name) != value:
            try:
                write_sysctl(name, value)
            except HostError as exc:
                left.append(str(exc))
    if not left:
        if owner() == changes.owner or not changes.owner:
            RECORD_FILE.unlink(missing_ok=True)
        layout.state_file.unlink(missing_ok=True)
    return left
