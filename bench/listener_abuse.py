"""What abusive clients cost a sidecar: RSS and file descriptors before and after each case, and
what the clients got, for this tree and optionally another (``--compare DIR``, e.g. a worktree of
the commit before), side by side in one run.

Cases (each against a fresh sidecar, both listeners where it applies):

- ``half-open``: 600 connections that send a request line and one header, then nothing (300 to
  the route listener, 300 to the admin listener); held for ``--hold`` seconds;
- ``huge-header``: one request whose header grows to 24 MiB, sent to the admin listener;
- ``trickle``: a request sent one byte every 0.2 s for ``--hold`` seconds;
- ``probes-half-open`` and ``probes-huge-header``: the same two sent to the metrics listener
  (``/healthz``, ``/readyz``, ``/metrics``) instead.

Usage: ``python bench/listener_abuse.py [--compare /tmp/base] [--hold 15]``
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HOST = "127.0.0.1"
HELLO = (
    "from luna_plugins.base.plugins_meta.base_plugins import BaseBackgroundPlugin, pluginHTTPResponse\n"
    "class Hello(BaseBackgroundPlugin):\n"
    "    async def initialize(self):\n"
    "        self.addRoute('/hello', lambda request: pluginHTTPResponse(body='hello'))\n"
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


class Sidecar:
    """A standalone sidecar from source tree ``tree`` with one route plugin."""

    def __init__(self, tree: Path, workdir: Path) -> None:
        plugins = workdir / "plugins"
        plugins.mkdir(parents=True)
        (plugins / "hello.py").write_text(HELLO)
        self.port, self.admin, self.metrics = free_port(), free_port(), free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("LUNA_")}
        env["PYTHONPATH"] = os.pathsep.join(
            str(tree / part) for part in ("sidecar", "contract", "cli", "operator")
        )
        command = [
            sys.executable,
            "-m",
            "luna_cli.main",
            "sidecar",
            "--plugins-dir",
            str(plugins),
            "--active",
            "hello",
        ]
        command += [
            "--host",
            HOST,
            "--port",
            str(self.port),
            "--admin-host",
            HOST,
            "--admin-port",
            str(self.admin),
        ]
        command += ["--metrics-host", HOST, "--metrics-port", str(self.metrics)]
        self.log = (workdir / "sidecar.log").open("wb")
        self.process = subprocess.Popen(
            command, stdout=self.log, stderr=subprocess.STDOUT, env=env, cwd=workdir
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError):
                with urllib.request.urlopen(f"http://{HOST}:{self.metrics}/readyz", timeout=1) as reply:
                    if reply.status == 200:
                        return
            time.sleep(0.1)
        raise SystemExit(f"the sidecar of {tree} did not get ready")

    def probes_ok(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://{HOST}:{self.metrics}/healthz", timeout=5) as reply:
                return reply.status == 200
        except OSError:
            return False

    def stop(self) -> None:
        self.process.kill()
        self.process.wait()
        self.log.close()


def _answer(sock: socket.socket, timeout: float) -> str:
    sock.settimeout(timeout)
    try:
        data = sock.recv(64)
    except OSError:
        return "no answer"
    return data[9:12].decode() if data.startswith(b"HTTP/1.1 ") else ("closed" if not data else "other")


def half_open(sidecar: Sidecar, hold: float, *, probes_port: bool = False) -> dict[str, object]:
    ports = [sidecar.metrics] if probes_port else [sidecar.port, sidecar.admin]
    opened: list[socket.socket] = []
    refused = 0
    for index in range(600):
        port = ports[index % len(ports)]
        try:
            sock = socket.create_connection((HOST, port), timeout=5)
            sock.sendall(b"GET /hello HTTP/1.1\r\nHost: x\r\n")
            opened.append(sock)
        except OSError:
            refused += 1
    time.sleep(hold)
    peak = rss_kib(sidecar.process.pid), fds(sidecar.process.pid)
    probes = sidecar.probes_ok()
    answers: dict[str, int] = {}
    for sock in opened:
        answer = _answer(sock, 0.2)
        answers[answer] = answers.get(answer, 0) + 1
        sock.close()
    return {
        "rss_kib": peak[0],
        "fds": peak[1],
        "probes_ok_meanwhile": probes,
        "connect_failed": refused,
        "answers": answers,
    }


def huge_header(sidecar: Sidecar, hold: float, *, probes_port: bool = False) -> dict[str, object]:
    port, path = (sidecar.metrics, b"/healthz") if probes_port else (sidecar.admin, b"/plugins")
    sock = socket.create_connection((HOST, port), timeout=30)
    sent = 0
    with contextlib.suppress(OSError):
        sock.sendall(b"GET %s HTTP/1.1\r\nHost: x\r\nX-Huge: " % path)
        chunk = b"h" * (1 << 20)
        for _ in range(24):
            sock.sendall(chunk)
            sent += len(chunk)
    answer = _answer(sock, 5)
    sock.close()
    time.sleep(1)
    return {"rss_kib": rss_kib(sidecar.process.pid), "sent_mib": sent >> 20, "answer": answer}


def trickle(sidecar: Sidecar, hold: float) -> dict[str, object]:
    sock = socket.create_connection((HOST, sidecar.port), timeout=30)
    started, sent = time.monotonic(), 0
    request = b"GET /hello HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 10_000
    with contextlib.suppress(OSError):
        while time.monotonic() - started < hold and sent < len(request):
            sock.sendall(request[sent : sent + 1])
            sent += 1
            time.sleep(0.2)
    answer = _answer(sock, 2)
    sock.close()
    return {"held_s": round(time.monotonic() - started, 1), "answer": answer}


CASES: dict[str, Callable[[Sidecar, float], dict[str, object]]] = {
    "half-open": half_open,
    "huge-header": huge_header,
    "trickle": trickle,
    "probes-half-open": functools.partial(half_open, probes_port=True),
    "probes-huge-header": functools.partial(huge_header, probes_port=True),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--compare", type=Path, help="another source tree, measured in the same run")
    parser.add_argument("--hold", type=float, default=15.0, help="seconds the slow clients hold on")
    args = parser.parse_args()
    trees = [("this tree", ROOT)] + ([(f"@{args.compare.name}", args.compare)] if args.compare else [])
    results: dict[str, dict[str, object]] = {}
    for case, run in CASES.items():
        for label, tree in trees:
            with tempfile.TemporaryDirectory() as workdir:
                sidecar = Sidecar(tree, Path(workdir))
                try:
                    before = rss_kib(sidecar.process.pid)
                    outcome = run(sidecar, args.hold)
                    outcome["rss_before_kib"] = before
                    outcome["alive_after"] = sidecar.process.poll() is None and sidecar.probes_ok()
                finally:
                    sidecar.stop()
            results[f"{case} / {label}"] = outcome
            print(f"{case:12} {label:12} {json.dumps(outcome)}", flush=True)


if __name__ == "__main__":
    main()
