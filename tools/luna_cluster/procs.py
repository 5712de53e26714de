"""Loopback ports and the processes of the local control plane (pid files, liveness, stopping)."""

from __future__ import annotations

import contextlib
import errno
import os
import re
import signal
import socket
import time
from pathlib import Path

LOOPBACK = "127.0.0.1"


class PortInUseError(RuntimeError):
    """A requested loopback port is taken."""


def free_port() -> int:
    """A TCP port of 127.0.0.1 that nothing listens on right now (the kernel picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        port: int = sock.getsockname()[1]
        return port


def port_is_free(port: int) -> bool:
    """Whether ``port`` can be bound on 127.0.0.1 (a listener in TIME_WAIT does not count)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((LOOPBACK, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                return False
            raise
        return True


def pick_ports(count: int, requested: dict[int, int] | None = None) -> list[int]:
    """``count`` distinct free ports; ``requested`` maps a slot to a fixed port (0 = any).

    Raises :class:`PortInUseError` naming the port when a fixed one is taken.
    """
    fixed = {slot: port for slot, port in (requested or {}).items() if port}
    for port in fixed.values():
        if not port_is_free(port):
            raise PortInUseError(
                f"port {LOOPBACK}:{port} is already in use; choose another or stop its owner"
            )
    ports: list[int] = []
    taken = set(fixed.values())
    for slot in range(count):
        if slot in fixed:
            ports.append(fixed[slot])
            continue
        port = free_port()
        while port in taken:
            port = free_port()
        taken.add(port)
        ports.append(port)
    return ports


def read_pid(pid_file: Path) -> int | None:
    try:
        text = pid_file.read_text().strip()
    except FileNotFoundError:
        return None
    return int(text) if text.isdigit() else None


def cmdline(pid: int) -> list[str] | None:
    """argv of a live, non-zombie process, or ``None`` when there is no such process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    # the state letter follows the ")" that closes the command name
    state = stat.rsplit(")", 1)[-1].split()[0] if ")" in stat else "?"
    if state in ("Z", "X") or not raw:
        return None
    return [part.decode(errors="replace") for part in raw.rstrip(b"\0").split(b"\0")]


def is_ours(pid: int, binary: Path, marker: str) -> bool:
    """Whether ``pid`` runs ``binary`` with ``marker`` (our state directory) among its arguments.

    Guards against a recycled pid: a pid file alone does not prove the process is still ours.
    """
    argv = cmdline(pid)
    if not argv:
        return False
    return os.path.realpath(argv[0]) == os.path.realpath(binary) and any(marker in arg for arg in argv[1:])


def stop(pid: int, timeout: float = 15.0) -> bool:
    """SIGTERM ``pid``, then SIGKILL after ``timeout`` seconds; True once it is gone."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        _reap(pid)
        if cmdline(pid) is None:
            return True
        time.sleep(0.05)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    for _ in range(100):
        _reap(pid)
        if cmdline(pid) is None:
            return True
        time.sleep(0.05)
    return False


def _reap(pid: int) -> None:
    """Collect ``pid`` if it is our child (the `up` process runs `down` in tests)."""
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


def log_tail(path: Path, lines: int = 25) -> str:
    """The last ``lines`` lines the latest run wrote (after the last ``=== `` header of ``_spawn``).

    A fatal ``Error:``/``F0000`` line is put first: on a bad flag the components print their
    whole usage after it, which would push it out of the tail.
    """
    try:
        text = path.read_text(errors="replace")
    except FileNotFoundError:
        return "(no log)"
    run = text.rsplit("\n=== ", 1)[-1].splitlines()[1:] if "\n=== " in text else text.splitlines()
    fatal = [line for line in run if line.startswith("Error:") or re.match(r"F\d{4} ", line)]
    shown = run[-lines:]
    head = [line for line in fatal[:3] if line not in shown]
    return "\n".join([*head, *(["..."] if head else []), *shown]).strip() or "(empty log)"
