"""Deleting plugins without the operator, on real sidecars: no finalizer holds a LunaPlugin; a
sidecar keeps serving the version it loaded until the active list stops naming it, which the
operator's next pass does once it is back."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.e2e.test_isolation_and_moves import answers, gone
from tests.operator.harness import Cluster, plugin_manifest, route_code, start_operator
from tests.sidecar.harness import wait_for

pytestmark = pytest.mark.kube


def test_a_plugin_deleted_while_the_operator_is_down_serves_until_the_operator_is_back(
    cluster: Cluster, operator: Any, cluster_sidecar: Any, kube: Any, tmp_path: Path
) -> None:
    ns = cluster.namespace
    sidecar = cluster_sidecar("pod-d")
    cluster.apply(
        plugin_manifest("doomed", ns, route_code("/doomed", "still here"))
        + "\n"
        + plugin_manifest("stays", ns, route_code("/stays", "stays"))
    )
    wait_for(
        lambda: answers(sidecar, "/doomed", "still here") and answers(sidecar, "/stays", "stays"), what="both"
    )
    assert operator.stop() == 0
    kube.kubectl("delete", "lunaplugin", "doomed", "-n", ns, "--timeout=30s")  # no finalizer holds it
    wait_for(
        lambda: cluster.get("configmap", "lunaplugin-doomed") is None,
        timeout=90,
        what="the garbage collector to delete its ConfigMap",
    )
    # the active list (owned by "stays" too) still names it: the sidecar keeps the version it loaded
    assert answers(sidecar, "/doomed", "still here")
    back = start_operator(kube, ns, tmp_path, "--report-ttl", "6")
    try:
        wait_for(
            lambda: gone(sidecar, "/doomed"), timeout=20, what="the route to go once the operator is back"
        )
        assert answers(sidecar, "/stays", "stays")
    finally:
        back.stop()


@pytest.mark.xfail(
    strict=True,
    reason="the sidecar keeps its plugins when its active list is deleted; it should treat a list that "
    "is gone after its first sync as empty (the garbage collector deletes the list with the last plugin)",
)
def test_the_last_plugin_deleted_while_the_operator_is_down_stops_serving(
    cluster: Cluster, operator: Any, cluster_sidecar: Any, kube: Any
) -> None:
    ns = cluster.namespace
    sidecar = cluster_sidecar("pod-l")
    cluster.apply(plugin_manifest("last", ns, route_code("/last", "last")))
    wait_for(lambda: answers(sidecar, "/last", "last"), what="the route")
    assert operator.stop() == 0
    kube.kubectl("delete", "lunaplugin", "last", "-n", ns, "--timeout=30s")
    wait_for(
        lambda: cluster.get("configmap", "luna-plugins-handlers") is None,
        timeout=90,
        what="the garbage collector to delete the active list with its last owner",
    )
    wait_for(lambda: gone(sidecar, "/last"), timeout=10, what="the sidecar to drop what no list names")
