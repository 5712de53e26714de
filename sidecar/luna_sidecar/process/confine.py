"""Confining an isolated plugin's process, applied by the child itself before any plugin code
runs: resource limits, the out-of-memory killer's first choice, death with its parent, an
unprivileged user when the sidecar runs as root, and a file-system view reduced by Landlock to
the Python installation, the plugin's packages and its own working directory (so it cannot read
the sidecar's token, settings or other plugins' files, nor signal the sidecar).

Every step that the kernel or the container's seccomp profile refuses is skipped and named in
the description returned: the sidecar shows it in ``GET /plugins`` and logs it.
"""

from __future__ import annotations

import ctypes
import os
import resource
import signal
from collections.abc import Iterable

from luna_sidecar.process.limits import ADDRESS_HEADROOM, ProcessLimits

__all__ = ["confine", "landlock_abi", "unprivileged_user"]

_PR_SET_PDEATHSIG = 1
_PR_SET_NO_NEW_PRIVS = 38
_PR_SET_KEEPCAPS = 8
_CAPABILITY_VERSION_3 = 0x20080522
_CAP_DAC_READ_SEARCH = 2
#: the first of the users a root sidecar's isolated plugins run as: 1024 per sidecar process,
#: one per isolated plugin version, so that limits counted per user (processes) and file
#: ownership (working directories) are each plugin's own
UNPRIVILEGED_BASE = 1 << 30
_SYS_CREATE_RULESET, _SYS_ADD_RULE, _SYS_RESTRICT_SELF = 444, 445, 446
_CREATE_RULESET_VERSION = 1
_RULE_PATH_BENEATH = 1
_EXECUTE, _WRITE_FILE, _READ_FILE, _READ_DIR = 1 << 0, 1 << 1, 1 << 2, 1 << 3
_TRUNCATE, _IOCTL_DEV = 1 << 14, 1 << 15
_FILE_RIGHTS = _EXECUTE | _WRITE_FILE | _READ_FILE | _TRUNCATE | _IOCTL_DEV
_SCOPE_ABSTRACT_UNIX_SOCKET, _SCOPE_SIGNAL = 1 << 0, 1 << 1

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long


def landlock_abi() -> int:
    """The kernel's Landlock ABI version; 0 when Landlock is unavailable (or refused)."""
    version = _libc.syscall(
        _SYS_CREATE_RULESET, None, ctypes.c_size_t(0), ctypes.c_uint32(_CREATE_RULESET_VERSION)
    )
    return max(0, int(version))


def _handled_fs(abi: int) -> int:
    if abi >= 5:
        return (1 << 16) - 1
    if abi >= 3:
        return (1 << 15) - 1
    if abi >= 2:
        return (1 << 14) - 1
    return (1 << 13) - 1


class _RulesetAttr(ctypes.Structure):
    _fields_ = [
        ("handled_access_fs", ctypes.c_uint64),
        ("handled_access_net", ctypes.c_uint64),
        ("scoped", ctypes.c_uint64),
    ]


class _PathBeneathAttr(ctypes.Structure):
    _pack_ = 1
    _fields_ = [("allowed_access", ctypes.c_uint64), ("parent_fd", ctypes.c_int32)]


def _errno_text() -> str:
    return os.strerror(ctypes.get_errno())


def _landlock(read_only: Iterable[str], read_write: Iterable[str]) -> str:
    abi = landlock_abi()
    if abi <= 0:
        return f"no landlock ({_errno_text()}): the process sees the sidecar's files"
    handled = _handled_fs(abi)
    attr = _RulesetAttr(handled, 0, (_SCOPE_ABSTRACT_UNIX_SOCKET | _SCOPE_SIGNAL) if abi >= 6 else 0)
    size = 24 if abi >= 6 else 8
    ruleset = _libc.syscall(
        _SYS_CREATE_RULESET, ctypes.byref(attr), ctypes.c_size_t(size), ctypes.c_uint32(0)
    )
    if ruleset < 0:
        return f"no landlock (create_ruleset: {_errno_text()}): the process sees the sidecar's files"
    try:
        read = _EXECUTE | _READ_FILE | _READ_DIR
        for paths, rights in ((read_only, read), (read_write, handled)):
            for path in paths:
                _allow(int(ruleset), path, rights & handled)
        if _libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
            return f"no landlock (no_new_privs: {_errno_text()})"
        if _libc.syscall(_SYS_RESTRICT_SELF, ctypes.c_int(int(ruleset)), ctypes.c_uint32(0)) != 0:
            return f"no landlock (restrict_self: {_errno_text()})"
    finally:
        os.close(int(ruleset))
    return f"landlock abi {abi}" + (", signals and abstract sockets scoped" if abi >= 6 else "")


def _allow(ruleset: int, path: str, rights: int) -> None:
    try:
        fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
    except OSError:
        return  # absent: nothing to allow
    try:
        if not os.path.isdir(path):
            rights &= _FILE_RIGHTS
        beneath = _PathBeneathAttr(rights, fd)
        _libc.syscall(
            _SYS_ADD_RULE,
            ctypes.c_int(ruleset),
            ctypes.c_int(_RULE_PATH_BENEATH),
            ctypes.byref(beneath),
            ctypes.c_uint32(0),
        )
    finally:
        os.close(fd)


def _resident_virtual_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[0]) * resource.getpagesize()


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [
        ("effective", ctypes.c_uint32),
        ("permitted", ctypes.c_uint32),
        ("inheritable", ctypes.c_uint32),
    ]


def unprivileged_user(sidecar_pid: int, serial: int) -> int:
    """The user the ``serial``-th isolated plugin version of the root sidecar ``sidecar_pid``
    runs as."""
    return UNPRIVILEGED_BASE + (sidecar_pid % (1 << 20)) * 1024 + serial % 1024


def _drop_root(user: int) -> str:
    """A root sidecar's child becomes ``user`` (``RLIMIT_NPROC`` never applies to root, and
    root may raise its limits again), keeping one capability: reading files whatever their
    mode, so the Python installation stays readable; Landlock still decides which."""
    _libc.prctl(_PR_SET_KEEPCAPS, 1, 0, 0, 0)
    os.setgroups([])
    os.setresgid(user, user, user)
    os.setresuid(user, user, user)
    header = _CapHeader(_CAPABILITY_VERSION_3, 0)
    data = (_CapData * 2)()
    data[0].effective = data[0].permitted = 1 << _CAP_DAC_READ_SEARCH
    if _libc.capset(ctypes.byref(header), data) != 0:
        return f"uid {user}, no capability kept ({_errno_text()})"
    return f"uid {user}"


def _set_limit(which: int, value: int) -> None:
    _soft, hard = resource.getrlimit(which)
    if hard != resource.RLIM_INFINITY:
        value = min(value, hard)
    resource.setrlimit(which, (value, value))


def confine(
    limits: ProcessLimits, *, read_only: list[str], read_write: list[str], user: int | None, parent: int
) -> str:
    """Apply everything to this process (``user``: the one to become when running as root;
    ``parent``: the sidecar's pid); returns what was applied and what was refused."""
    applied: list[str] = []
    _libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent:  # the sidecar died before the line above: do not outlive it
        os.write(2, b'{"level": "ERROR", "logger": "luna.sidecar", "message": "the sidecar is gone"}\n')
        os._exit(1)  # (not "is my parent pid 1": in a container the sidecar itself is pid 1)
    try:
        with open("/proc/self/oom_score_adj", "w") as adj:
            adj.write("1000")
    except OSError:
        applied.append("oom_score_adj refused")
    _set_limit(resource.RLIMIT_CORE, 0)
    _set_limit(resource.RLIMIT_NOFILE, limits.open_files)
    if os.getuid() == 0 and user is not None:
        # a user of its own (below): the count is this plugin's processes and threads only
        _set_limit(resource.RLIMIT_NPROC, limits.processes)
    else:
        # the kernel counts every process and thread of the user, on the whole node (other
        # pods' too): a bound here would fail at random; the pod's pids limit bounds them
        applied.append("processes not limited (non-root: the pod's pids limit applies)")
    _set_limit(resource.RLIMIT_AS, _resident_virtual_bytes() + limits.memory_bytes + ADDRESS_HEADROOM)
    if os.getuid() == 0 and user is not None:
        applied.append(_drop_root(user))
    applied.append(_landlock([*read_only, f"/proc/{os.getpid()}"], read_write))
    return "; ".join(applied)
