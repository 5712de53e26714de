"""`make demo-node` (examples/demo_node.py) on the session's node: it serves what it prints, and
its Ctrl-C path uninstalls the release cleanly."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.node.conftest import NodeCluster
from tests.node.pods import wait_ok
from tests.support.sidecar_harness import http

DEMO = Path(__file__).resolve().parents[2] / "examples" / "demo_node.py"


@pytest.mark.own_node("the demo runs on our own node")
def test_the_node_demo_serves_what_it_prints_and_uninstalls_on_interrupt(node_cluster: NodeCluster) -> None:
    demo = subprocess.Popen(
        [sys.executable, str(DEMO), "--state-dir", str(node_cluster.state_dir), "--keep-cluster"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    output: list[str] = []
    try:
        assert demo.stdout is not None
        for line in demo.stdout:
            output.append(line)
            if "Ctrl-C stops the demo" in line:
                break
        printed = "".join(output)
        urls = re.findall(r"curl (?:-s )?(http://[0-9.]+:\d+/\S+)", printed)
        assert urls, printed
        for url in urls:
            wait_ok(url, timeout=120)
        kettle = next(url for url in urls if url.endswith("/kettle"))
        assert "temperature" in http("GET", kettle, timeout=10).json()
        # a status line follows, showing the plugins loaded
        for line in demo.stdout:
            output.append(line)
            if "plugins:" in line:
                assert "kettle Ready 1/1" in line, line
                break
    finally:
        demo.send_signal(signal.SIGINT)
        rest, _ = demo.communicate(timeout=300)
        output.append(rest)
    text = "".join(output)
    assert demo.returncode == 0, text
    assert "helm uninstall failed" not in text and "demo stopped\n" in text, text
    left = node_cluster.kube.kubectl(
        "get", "lunaplugins,deployments", "-n", "luna-demo", "-o", "name", check=False
    )
    assert left.stdout.strip() == "", left.stdout
