"""A plugin's own packages on real pods: the sidecar installs them from the index the chart names.

The test serves a tiny index on the node's bridge address (pods reach it; nothing else does),
with ``lunatestpkg`` 1.0 and 2.0.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.node.conftest import NodeCluster
from tests.node.pods import answered, get
from tests.node.workload import (
    RELEASE,
    apply,
    handlers_service,
    install_chart,
    lunaplugin,
    reach,
    wait_ready_replicas,
)
from tests.support.package_index import PackageIndex, make_wheel, write_simple_index
from tests.support.sidecar_harness import wait_for

USES_PACKAGE = """
import lunatestpkg
from luna_plugins.base.plugins_meta.base_plugins import BaseBackgroundPlugin, pluginHTTPResponse

class UsesPackage(BaseBackgroundPlugin):
    async def initialize(self):
        self.addRoute("/lunatestpkg", lambda request: pluginHTTPResponse(body=lunatestpkg.VERSION))
"""


@pytest.fixture
def node_index(node_cluster: NodeCluster, tmp_path: Path) -> Iterator[PackageIndex]:
    assert node_cluster.state_dir is not None
    from luna_cluster.node_config import NODE_IP

    root = tmp_path / "index"
    for version in ("1.0", "2.0"):
        make_wheel(root / "files", "lunatestpkg", version)
    write_simple_index(root / "files", root)
    index = PackageIndex(root, host=NODE_IP).start()
    try:
        yield index
    finally:
        index.stop()


@pytest.mark.own_node("the index is served on our own node's bridge")
def test_a_plugins_packages_are_installed_in_its_pod_and_an_index_outage_keeps_it_serving(
    node_cluster: NodeCluster, node_index: PackageIndex
) -> None:
    kube = node_cluster.kube
    namespace = f"luna-pkg-{uuid.uuid4().hex[:6]}"
    install_chart(
        node_cluster,
        namespace,
        "--set",
        f"sidecar.packages.indexUrl={node_index.url}",
        "--set",
        f"sidecar.packages.trustedHosts={{{node_index.host}}}",  # plain HTTP on the bridge
        # the requirements below change between unpinned ranges; hash-checking (the chart's
        # default) is covered where the sidecar runs on the host (tests/sidecar/test_requirements.py)
        "--set",
        "sidecar.packages.requireHashes=false",
    )
    try:
        plugin = lunaplugin("uses-package", USES_PACKAGE, module="uses_package")
        plugin["spec"]["requirements"] = ["lunatestpkg==1.0"]
        apply(kube, namespace, plugin, *handlers_service(node_cluster.image))
        wait_ready_replicas(kube, namespace, "handlers", 1)
        with reach(node_cluster, namespace, "handlers", 8080) as routes:

            def served() -> str:
                reply = answered("GET", f"{routes}/lunatestpkg")
                return reply.text if reply is not None and reply.status == 200 else ""

            wait_for(lambda: served() == "1.0", timeout=240, what="the plugin on lunatestpkg 1.0")

            def counted() -> dict[str, Any]:
                status: dict[str, Any] = get(kube, namespace, "lunaplugin", "uses-package")["status"]
                return status if status["phase"] == "Ready" and status.get("loaded") == "1/1" else {}

            # the status counts the pod once its report says so (a heartbeat later than the route)
            wait_for(counted, timeout=60, what="the plugin Ready and loaded 1/1 in its status")

            plugin["spec"]["requirements"] = ["lunatestpkg==2.0"]
            apply(kube, namespace, plugin)
            wait_for(lambda: served() == "2.0", timeout=240, what="the plugin reloaded on lunatestpkg 2.0")

            node_index.stop()
            plugin["spec"]["requirements"] = ["lunatestpkg>=1,<2"]
            apply(kube, namespace, plugin)

            def reported() -> str:
                pods = get(kube, namespace, "lunaplugin", "uses-package").get("status", {}).get("pods", [])
                return " ".join(str(pod.get("error") or "") for pod in pods)

            error = wait_for(
                lambda: "cannot be reached" in reported() and reported(),
                timeout=240,
                what="the pod to report the unreachable index in the plugin's status",
            )
            assert "lunatestpkg" in error or "index" in error, error
            assert served() == "2.0"  # the last good version keeps serving
    finally:
        kube.kubectl("delete", "deployment,service", "-l", "app=handlers", "-n", namespace, check=False)
        kube.helm("uninstall", RELEASE, "--namespace", namespace, "--wait", "--timeout", "2m", check=False)
        kube.kubectl("delete", "namespace", namespace, "--wait=false", check=False)
