"""Several operator replicas with --peering: one is active, the other takes over when it stops."""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Any

import pytest

from tests.operator.harness import Cluster, plugin_manifest, route_code, start_operator
from tests.sidecar.harness import wait_for

pytestmark = pytest.mark.kube


def test_one_replica_is_active_and_the_other_takes_over(cluster: Cluster, kube: Any, tmp_path: Path) -> None:
    ns = cluster.namespace
    low = start_operator(kube, ns, tmp_path, "--peering", "luna", "--priority", "10")
    high = start_operator(kube, ns, tmp_path, "--peering", "luna", "--priority", "20")
    try:
        wait_for(
            lambda: "Pausing operations in favour of" in low.log(),
            timeout=30,
            what="the lower-priority replica to pause",
        )
        assert cluster.get("kopfpeering", "luna") is not None
        cluster.apply(plugin_manifest("first", ns, route_code("/first")))
        cluster.wait_phase("first", "Ready")
        assert high.stop(signal.SIGTERM) == 0  # a clean stop withdraws it from the peering at once
        wait_for(lambda: "Resuming operations" in low.log(), timeout=30, what="the other replica to resume")
        cluster.apply(plugin_manifest("second", ns, route_code("/second")))
        cluster.wait_phase("second", "Ready")
        cluster.wait_active(["first", "second"])
    finally:
        for replica in (high, low):
            if replica.process.poll() is None:
                kube.kubectl("delete", "lunaplugins", "--all", "-n", ns, "--timeout=60s", check=False)
                replica.stop()
