"""Deleting plugins without the operator, on real sidecars: no finalizer holds a LunaPlugin; a
sidecar keeps serving the version it loaded until the active list stops naming it, which the
operator's next pass does once it is back; the active list goes once no plugin and no sidecar of
its service is left."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.e2e.test_isolation_and_moves import answers, gone
from tests.support.operator_harness import Cluster, plugin_manifest, route_code, start_operator
from tests.support.sidecar_harness import wait_for

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


def test_the_last_plugin_deleted_while_the_operator_is_down_serves_until_the_operator_is_back(
    cluster: Cluster, operator: Any, cluster_sidecar: Any, kube: Any, tmp_path: Path
) -> None:
    """The active list is owned by the service's sidecar reports too: the garbage collector leaves
    it while the sidecar runs, so the operator can empty it when it is back."""
    ns = cluster.namespace
    sidecar = cluster_sidecar("pod-l")
    cluster.apply(plugin_manifest("last", ns, route_code("/last", "last")))
    wait_for(lambda: answers(sidecar, "/last", "last"), what="the route")
    wait_for(
        lambda: "LunaPluginRuntime" in str(cluster.get("configmap", "luna-plugins-handlers")),
        what="the sidecar's report to own the active list",
    )
    assert operator.stop() == 0
    kube.kubectl("delete", "lunaplugin", "last", "-n", ns, "--timeout=30s")
    wait_for(
        lambda: cluster.get("configmap", "lunaplugin-last") is None,
        timeout=90,
        what="the garbage collector to delete the plugin's ConfigMap",
    )
    assert cluster.active()[0] == ["last"] and answers(sidecar, "/last", "last")
    back = start_operator(kube, ns, tmp_path, "--report-ttl", "6")
    try:
        wait_for(lambda: gone(sidecar, "/last"), timeout=20, what="the route to go once the operator is back")
        assert cluster.active()[0] == []
    finally:
        back.stop()
    # with no plugin and no sidecar left, nothing keeps the active list
    assert sidecar.stop() == 0
    wait_for(
        lambda: cluster.get("configmap", "luna-plugins-handlers") is None,
        timeout=90,
        what="the garbage collector to delete the active list with its last owner",
    )
