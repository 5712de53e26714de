"""What users see on real sidecars: nine plugins keep serving next to a hostile one; a plugin moved
to another service leaves one service's sidecars for the other's; a renamed module is swapped."""

from __future__ import annotations

from typing import Any

import pytest

from tests.support.operator_harness import Cluster, plugin_manifest, route_code
from tests.support.sidecar_harness import wait_for

pytestmark = pytest.mark.kube


def answers(sidecar: Any, path: str, text: str) -> bool:
    try:
        reply = sidecar.get(path, timeout=2)
    except OSError:
        return False
    return reply.status == 200 and reply.text == text


def gone(sidecar: Any, path: str) -> bool:
    try:
        return bool(sidecar.get(path, timeout=2).status == 404)
    except OSError:
        return False


def test_nine_plugins_keep_serving_next_to_a_hostile_one(
    cluster: Cluster, operator: Any, cluster_sidecar: Any
) -> None:
    ns = cluster.namespace
    sidecar = cluster_sidecar("pod-a")
    good = [f"good-{index}" for index in range(9)]
    # parses to a ~400 MiB syntax tree: more than the operator's code check may use
    hostile = route_code("/hostile", "never") + "x = [" + "1," * 400_000 + "]\n"
    manifests = [plugin_manifest(name, ns, route_code(f"/{name}", name)) for name in good[:4]]
    manifests.append(plugin_manifest("hostile", ns, hostile))
    manifests += [plugin_manifest(name, ns, route_code(f"/{name}", name)) for name in good[4:]]
    cluster.apply("\n".join(manifests), "--server-side")
    for name in good:
        wait_for(lambda name=name: answers(sidecar, f"/{name}", name), timeout=60, what=f"{name} to serve")
    assert "(MemoryError)" in cluster.wait_phase("hostile", "Invalid", timeout=30)["message"]
    assert gone(sidecar, "/hostile") and "hostile" not in sidecar.plugins()
    for name in good:
        wait_for(lambda name=name: cluster.status(name).get("loaded") == "1/1", what=f"{name} loaded 1/1")
    assert operator.process.poll() is None


def test_a_moved_plugin_leaves_one_service_and_serves_in_the_other(
    cluster: Cluster, operator: Any, cluster_sidecar: Any
) -> None:
    ns, code = cluster.namespace, route_code("/travel", "here")
    handlers = cluster_sidecar("pod-h")
    matcher = cluster_sidecar("pod-m", "--service", "matcher")
    cluster.apply(plugin_manifest("traveller", ns, code))
    wait_for(lambda: answers(handlers, "/travel", "here"), what="handlers to serve it")
    assert gone(matcher, "/travel")
    cluster.apply(plugin_manifest("traveller", ns, code, service="matcher"))  # the same code
    wait_for(lambda: answers(matcher, "/travel", "here"), timeout=15, what="matcher to serve it")
    wait_for(lambda: gone(handlers, "/travel"), timeout=15, what="handlers to drop it")
    wait_for(
        lambda: (s := cluster.status("traveller")).get("loaded") == "1/1" and s["pods"][0]["pod"] == "pod-m",
        what="the status to count matcher's pod",
    )


def test_a_renamed_module_is_swapped_on_the_sidecar(
    cluster: Cluster, operator: Any, cluster_sidecar: Any
) -> None:
    ns, code = cluster.namespace, route_code("/renamed", "same code")
    sidecar = cluster_sidecar("pod-r")
    cluster.apply(plugin_manifest("renamer", ns, code))
    wait_for(lambda: sidecar.plugins().get("renamer", {}).get("state") == "running", what="renamer to run")
    cluster.apply(plugin_manifest("renamer", ns, code, module="renamed"))
    wait_for(
        lambda: (p := sidecar.plugins()).get("renamed", {}).get("state") == "running" and "renamer" not in p,
        timeout=15,
        what="the module to be swapped",
    )
    assert answers(sidecar, "/renamed", "same code")
    wait_for(lambda: cluster.status("renamer").get("loaded") == "1/1", what="loaded 1/1 under the new module")
