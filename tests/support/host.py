"""What a node changes on this machine, read off the machine itself (to prove ``down`` undoes it)."""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

SYSCTLS = (
    "net/ipv4/ip_forward",
    "net/bridge/bridge-nf-call-iptables",
    "vm/overcommit_memory",
    "vm/panic_on_oom",
    "kernel/panic",
    "kernel/panic_on_oops",
    "kernel/keys/root_maxkeys",
    "kernel/keys/root_maxbytes",
    "net/ipv4/conf/all/route_localnet",
)
#: directories outside the state directory that a node's components may create
SHARED = ("/run/containerd", "/var/lib/cni", "/var/log/containers", "/var/log/pods", "/var/run/netns")


#: the chains each iptables table is born with: once the kernel loads a table (any program touching
#: it does, and nothing unloads it), ``iptables-save`` lists them with policy ACCEPT and no rules
BUILTIN_CHAINS = {
    "filter": frozenset({"INPUT", "FORWARD", "OUTPUT"}),
    "nat": frozenset({"PREROUTING", "INPUT", "OUTPUT", "POSTROUTING"}),
    "mangle": frozenset({"PREROUTING", "INPUT", "FORWARD", "OUTPUT", "POSTROUTING"}),
    "raw": frozenset({"PREROUTING", "OUTPUT"}),
    "security": frozenset({"INPUT", "FORWARD", "OUTPUT"}),
}


def firewall_lines(saved: str) -> tuple[str, ...]:
    """The rules and chains of an ``iptables-save`` listing, each prefixed with its table, packet
    counters removed; a built-in chain with its default policy (ACCEPT) is left out, so a table
    the kernel merely loaded compares equal to one it never had. Anything else stays: a rule in
    any chain, a chain of ours, a built-in chain whose policy was changed."""
    table = ""
    found: list[str] = []
    for raw in saved.splitlines():
        line = re.sub(r"\s*\[\d+:\d+\]", "", raw).strip()
        if not line or line.startswith("#") or line == "COMMIT":
            continue
        if line.startswith("*"):
            table = line[1:]
            continue
        if line.startswith(":"):
            chain, _, policy = line[1:].partition(" ")
            if chain in BUILTIN_CHAINS.get(table, ()) and policy == "ACCEPT":
                continue
        found.append(f"{table} {line}")
    return tuple(found)


def _lines(argv: list[str]) -> list[str]:
    result = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
    return [line for line in result.stdout.splitlines() if line.strip()]


@dataclass(frozen=True)
class HostSnapshot:
    """Network interfaces, routes, firewall rules, mounts, cgroups, sysctls, shared directories."""

    links: tuple[str, ...]
    routes: tuple[str, ...]
    netns: tuple[str, ...]
    firewall: tuple[str, ...]
    mounts: tuple[str, ...]
    cgroups: tuple[str, ...]
    sysctls: tuple[str, ...]
    shared: tuple[str, ...]

    def differences(self, other: HostSnapshot) -> dict[str, tuple[list[str], list[str]]]:
        """Per aspect, (only in self, only in other); empty when both are the same."""
        found: dict[str, tuple[list[str], list[str]]] = {}
        for name in self.__dataclass_fields__:
            mine, theirs = set(getattr(self, name)), set(getattr(other, name))
            if mine != theirs:
                found[name] = (sorted(mine - theirs), sorted(theirs - mine))
        return found


def snapshot(ignore_mounts_below: tuple[str, ...] = ()) -> HostSnapshot:
    """The machine as it is now. Mounts below ``ignore_mounts_below`` (other tests' state) and the
    interfaces of other tests' network namespaces do not count."""
    links = tuple(
        line.split()[0].split("@")[0] for line in _lines(["ip", "-br", "link"]) if not line.startswith("veth")
    )
    firewall = firewall_lines("\n".join(_lines(["iptables-save"])))
    mounts = tuple(
        point
        for point in (line.split()[4] for line in Path("/proc/self/mountinfo").read_text().splitlines())
        if not point.startswith(ignore_mounts_below)
    )
    cgroups = tuple(
        str(path)
        for path in Path("/sys/fs/cgroup").glob("*/*")
        if path.is_dir() and (path.name.startswith("luna") or path.name == "kubepods")
    )
    sysctls = tuple(f"{name}={_read(Path('/proc/sys') / name)}" for name in SYSCTLS)
    shared = tuple(path for path in SHARED if Path(path).exists())
    return HostSnapshot(
        links=links,
        routes=tuple(_lines(["ip", "-4", "route"])),
        netns=tuple(_lines(["ip", "netns", "list"])),
        firewall=firewall,
        mounts=mounts,
        cgroups=cgroups,
        sysctls=sysctls,
        shared=shared,
    )


def _read(path: Path) -> str:
    try:
        return path.read_text().strip()
    except OSError:
        return "-"
