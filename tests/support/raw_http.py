"""Raw sockets and process figures for the listener tests: what a hostile client sends is
written byte for byte, and what it costs the sidecar is read from /proc."""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit


def address(url: str) -> tuple[str, int]:
    """(host, port) of ``url``."""
    parts = urlsplit(url)
    assert parts.hostname is not None and parts.port is not None
    return parts.hostname, parts.port


def connect(url: str) -> socket.socket:
    """A blocking connection to ``url``'s host and port (30 s timeouts)."""
    sock = socket.create_connection(address(url), timeout=30)
    sock.settimeout(30)
    return sock


def read_all(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes (or the socket fails)."""
    data = b""
    with contextlib.suppress(OSError):
        while chunk := sock.recv(65536):
            data += chunk
    return data


def rss_kib(pid: int) -> int:
    """Resident memory of process ``pid`` in KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def fds(pid: int) -> int:
    """Open file descriptors of process ``pid``."""
    return len(os.listdir(f"/proc/{pid}/fd"))


def half_open_answers(
    urls: list[str],
    count: int,
    *,
    path: str = "/hello",
    while_open: Callable[[], None] | None = None,
) -> list[bytes]:
    """Open ``count`` connections (to ``urls`` in turn), each sending a request whose headers
    never end; what each got until the server closed it, in order. ``while_open`` runs once all
    of them are open, before any answer is read."""
    opened: list[socket.socket] = []
    try:
        for index in range(count):
            sock = connect(urls[index % len(urls)])
            sock.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\n".encode())
            opened.append(sock)
        if while_open is not None:
            while_open()
        return [read_all(sock) for sock in opened]
    finally:
        for sock in opened:
            sock.close()
