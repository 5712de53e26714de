"""Stopping and starting the local control plane's API server, for tests of outages.

Only for the cluster the ``kube`` fixture starts itself (``kube.state_dir`` set); the helpers
skip the calling test against an external cluster.
"""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.support.sidecar_harness import wait_for


def stop_apiserver(kube: Any) -> Callable[[], None]:
    """SIGTERM the API server and wait until it is gone; returns a function that starts it again
    with the same arguments and waits until it answers /readyz."""
    if kube.state_dir is None:
        pytest.skip("restarting the API server needs the local control plane (not an external cluster)")
    pid_file = Path(kube.state_dir) / "run" / "kube-apiserver.pid"
    pid = int(pid_file.read_text().split()[0])
    argv = Path(f"/proc/{pid}/cmdline").read_bytes().rstrip(b"\0").split(b"\0")
    os.kill(pid, signal.SIGTERM)
    wait_for(lambda: _stopped(pid), timeout=30, what="the API server to stop")

    def start() -> None:
        log = (Path(kube.state_dir) / "logs" / "kube-apiserver.log").open("ab")
        restarted = subprocess.Popen(
            [arg.decode() for arg in argv], stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        pid_file.write_text(f"{restarted.pid}\n")  # `luna-cluster down` stops the new one
        wait_for(
            lambda: kube.kubectl("get", "--raw", "/readyz", check=False).returncode == 0,
            timeout=60,
            what="the API server to be back",
        )

    return start


def restart_apiserver(kube: Any) -> None:
    """Stop and start the API server: its watch caches start afresh at the current revision."""
    stop_apiserver(kube)()


def _stopped(pid: int) -> bool:
    """Gone, or a zombie (its parent, `luna-cluster up`, exited long ago)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] == "Z"
