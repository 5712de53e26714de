"""The chart's life on real pods: upgrade, an operator killed in the middle of work, uninstall."""

from __future__ import annotations

import json
import os
import subprocess
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from tests.node.conftest import NodeCluster
from tests.node.pods import get, ready_pods, recent_events
from tests.node.workload import (
    CHART,
    RELEASE,
    apply,
    example_code,
    handlers_service,
    install_chart,
    lunaplugin,
    reach,
    steady_load,
    wait_ready_replicas,
)
from tests.support.sidecar_harness import http, wait_for

PLUGIN_LABELS = ("luna.dev/plugin", "luna.dev/role", "luna.dev/service")


@pytest.fixture
def release_namespace(node_cluster: NodeCluster) -> Iterator[str]:
    """A namespace for a release of this test; whatever is left is removed afterwards."""
    namespace = f"luna-life-{uuid.uuid4().hex[:6]}"
    try:
        yield namespace
    finally:
        kube = node_cluster.kube
        kube.helm("uninstall", RELEASE, "--namespace", namespace, "--wait", "--timeout", "2m", check=False)
        for item in get_items(node_cluster, namespace, "lunaplugins"):
            if item["metadata"].get("finalizers"):
                kube.kubectl(
                    "patch", "lunaplugin", item["metadata"]["name"], "-n", namespace, "--type=merge",
                    "-p", '{"metadata":{"finalizers":null}}', check=False,
                )  # fmt: skip
        kube.kubectl("delete", "namespace", namespace, "--wait=false", "--ignore-not-found", check=False)


def get_items(cluster: NodeCluster, namespace: str, kind: str) -> list[dict[str, Any]]:
    result = cluster.kube.kubectl("get", kind, "-n", namespace, "-o", "json", check=False)
    return list(json.loads(result.stdout)["items"]) if result.returncode == 0 else []


def phase(cluster: NodeCluster, namespace: str, name: str) -> str:
    return str(get(cluster.kube, namespace, "lunaplugin", name).get("status", {}).get("phase", ""))


def operator_pod(cluster: NodeCluster, namespace: str) -> dict[str, Any]:
    pods = ready_pods(cluster.kube, namespace, "app.kubernetes.io/component=operator")
    assert len(pods) == 1, [pod["metadata"]["name"] for pod in pods]
    return pods[0]


def plugin_configmaps(cluster: NodeCluster, namespace: str) -> list[dict[str, Any]]:
    """The ConfigMaps the operator wrote (code and active lists)."""
    return [
        item
        for item in get_items(cluster, namespace, "configmaps")
        if any(label in item["metadata"].get("labels", {}) for label in PLUGIN_LABELS)
    ]


def next_image_tag(cluster: NodeCluster) -> str:
    """Another tag of the image under test, for an upgrade that changes only the tag."""
    if cluster.state_dir is None:
        tag = os.environ.get("LUNA_TEST_IMAGE_NEXT_TAG")
        if not tag:
            pytest.skip("set LUNA_TEST_IMAGE_NEXT_TAG to a second tag loaded into the cluster")
        return tag
    tag = f"{cluster.image_tag}-next"
    ctr = [
        str(cluster.state_dir / "bin" / "ctr"),
        "--address",
        str(cluster.state_dir / "node" / "containerd" / "containerd.sock"),
        "--namespace",
        "k8s.io",
    ]
    source, target = (f"docker.io/library/{cluster.image_repository}:{t}" for t in (cluster.image_tag, tag))
    subprocess.run([*ctr, "images", "rm", target], capture_output=True, check=False)
    tagged = subprocess.run(
        [*ctr, "images", "tag", source, target], capture_output=True, text=True, check=False
    )
    assert tagged.returncode == 0, tagged.stderr
    return tag


def test_helm_upgrade_to_a_new_image_tag_rolls_the_operator_and_loses_no_plugin(
    node_cluster: NodeCluster, release_namespace: str
) -> None:
    kube = node_cluster.kube
    namespace = release_namespace
    install_chart(node_cluster, namespace)
    apply(
        kube, namespace, lunaplugin("kettle", example_code("kettle")), *handlers_service(node_cluster.image)
    )
    wait_ready_replicas(kube, namespace, "handlers", 1)
    wait_for(lambda: phase(node_cluster, namespace, "kettle") == "Ready", timeout=120, what="kettle Ready")
    before = operator_pod(node_cluster, namespace)["metadata"]["name"]
    tag = next_image_tag(node_cluster)

    with (
        reach(node_cluster, namespace, "handlers", 8080) as routes,
        steady_load(routes, "/kettle/version", threads=1) as outcomes,
    ):
        wait_for(lambda: outcomes.total() > 20, timeout=60, what="load to flow")
        upgrade = ["upgrade", RELEASE, str(CHART), "--namespace", namespace, "--reuse-values"]
        kube.helm(*upgrade, "--set", f"image.tag={tag}", "--wait", "--timeout", "5m", timeout=600)
        after = operator_pod(node_cluster, namespace)
        assert after["metadata"]["name"] != before
        assert after["spec"]["containers"][0]["image"].endswith(f":{tag}")
        # the new operator takes over: a change made now is reconciled and served
        apply(
            kube,
            namespace,
            lunaplugin("kettle", example_code("kettle").replace("kettle 1.0", "kettle 1.1")),
        )

        def serves_the_change() -> bool:
            try:  # a poll that times out is polled again; the load thread counts every failure
                return http("GET", f"{routes}/kettle/version", timeout=10).text == "kettle 1.1"
            except OSError:
                return False

        try:
            wait_for(serves_the_change, timeout=120, what="the new operator to roll out a change")
        except AssertionError as exc:
            plugin = get(kube, namespace, "lunaplugin", "kettle").get("status")
            raise AssertionError(
                f"{exc}\nanswers so far: {outcomes.now()}\nkettle's status: {plugin}\n"
                f"events:\n{recent_events(kube, namespace)}"
            ) from None
    assert phase(node_cluster, namespace, "kettle") == "Ready"
    failures = {outcome: count for outcome, count in outcomes.items() if not outcome.startswith("kettle ")}
    assert failures == {}, f"{outcomes}\nevents:\n{recent_events(kube, namespace)}"


def test_operator_killed_in_the_middle_of_50_applies_converges(
    node_cluster: NodeCluster, release_namespace: str
) -> None:
    kube = node_cluster.kube
    namespace = release_namespace
    install_chart(node_cluster, namespace)
    code = "from luna_plugins import BaseBackgroundPlugin\n\n\nclass P{n}(BaseBackgroundPlugin):\n    pass\n"
    names = [f"p{n:02d}" for n in range(50)]
    victim = operator_pod(node_cluster, namespace)["metadata"]["name"]
    refusals: list[str] = []
    for index, name in enumerate(names):
        # the webhook fails closed: while the operator is replaced, an apply is refused and, as a
        # GitOps tool or a script would, applied again until it is admitted
        def admitted(index: int = index, name: str = name) -> bool:
            result = apply(kube, namespace, lunaplugin(name, code.format(n=index)), check=False)
            if result.returncode != 0:
                refusals.append(result.stderr)
            return result.returncode == 0

        wait_for(admitted, timeout=180, what=f"{name} to be admitted")
        if index == 20:
            kube.kubectl(
                "delete", "pod", victim, "-n", namespace, "--grace-period=0", "--force", "--wait=false"
            )
    # every refusal said the webhook could not be called (the operator was away), none denied
    assert all('failed calling webhook "lunaplugin.luna.dev"' in refusal for refusal in refusals), refusals[
        :3
    ]

    def converged() -> bool:
        return all(phase(node_cluster, namespace, name) == "Ready" for name in names)

    wait_for(converged, timeout=300, what="all 50 plugins Ready after the operator was killed")
    active = get(kube, namespace, "configmap", "luna-plugins-handlers")
    listed = json.loads(active["data"]["plugins.json"])
    assert sorted(listed) == names
    plugins = {item["metadata"]["uid"] for item in get_items(node_cluster, namespace, "lunaplugins")}
    for configmap in plugin_configmaps(node_cluster, namespace):
        if configmap["metadata"]["name"] == "luna-plugins-handlers":
            continue
        owners = {owner["uid"] for owner in configmap["metadata"].get("ownerReferences", [])}
        assert owners & plugins, f"orphan ConfigMap {configmap['metadata']['name']}"
    # and nothing holds a deletion
    kube.kubectl("delete", "lunaplugins", "--all", "-n", namespace, "--timeout=120s")
    assert get_items(node_cluster, namespace, "lunaplugins") == []


def test_helm_uninstall_leaves_nothing_behind_and_nothing_stuck(
    node_cluster: NodeCluster, release_namespace: str
) -> None:
    kube = node_cluster.kube
    namespace = release_namespace
    install_chart(node_cluster, namespace, "--set", "demo.enabled=true")
    # and a plugin a user created, beside the demo's
    apply(kube, namespace, lunaplugin("users-own", example_code("kettle")))
    wait_for(
        lambda: (
            {
                item.get("status", {}).get("phase")
                for item in get_items(node_cluster, namespace, "lunaplugins")
            }
            == {"Ready"}
        ),
        timeout=180,
        what="the demo's and the user's plugins Ready",
    )
    kube.helm("uninstall", RELEASE, "--namespace", namespace, "--wait", "--timeout", "2m", timeout=300)

    left = get_items(node_cluster, namespace, "lunaplugins")
    # the chart's own plugins are gone, not Terminating; the user's stays (Helm keeps CRDs and what
    # users made of them) and can be deleted without the operator
    assert [item["metadata"]["name"] for item in left] == ["users-own"]
    assert not left[0]["metadata"].get("deletionTimestamp")
    kube.kubectl("delete", "lunaplugin", "users-own", "-n", namespace, "--timeout=60s")
    wait_for(
        lambda: plugin_configmaps(node_cluster, namespace) == [],
        timeout=120,
        what="the plugins' ConfigMaps to be garbage-collected",
    )
    selector = f"app.kubernetes.io/instance={RELEASE}"
    namespaced = "all,configmaps,secrets,serviceaccounts,roles,rolebindings,poddisruptionbudgets"

    def remaining() -> list[str]:
        return kube.kubectl("get", namespaced, "-n", namespace, "-l", selector, "-o", "name").stdout.split()

    # pods of the deleted ReplicaSets may still be terminating when helm returns
    wait_for(lambda: remaining() == [], timeout=120, what="every object of the release to be gone")
    cluster_scoped = (
        "clusterroles,clusterrolebindings,validatingwebhookconfigurations,mutatingwebhookconfigurations"
    )
    assert kube.kubectl("get", cluster_scoped, "-l", selector, "-o", "name").stdout.split() == []
