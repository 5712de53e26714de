"""Several operator replicas with --peering: one is active, the other takes over when it stops; the
peering objects are ensured in each namespace on its own."""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Any

import pytest

from tests.support.accounts import service_account_kube
from tests.support.operator_harness import Cluster, plugin_manifest, route_code, start_operator
from tests.support.sidecar_harness import wait_for

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


def peering_names(kube: Any, namespace: str) -> list[str]:
    found = kube.kubectl("get", "kopfpeerings", "-n", namespace, "-o", "name", check=False)
    return found.stdout.split()


async def test_peering_objects_are_ensured_in_each_namespace_independently(
    kube: Any, namespace: str, tmp_path: Path, api_client: Any
) -> None:
    """Namespaces where the account may not create (403), one that has the object already (409)
    and one that does not exist (404) do not keep the last one from getting its object. Run with a
    real ServiceAccount token allowed to create peering objects in only two of them (it is refused
    in the missing namespace too: authorization comes first), then as the admin."""
    from kubernetes_asyncio import config
    from kubernetes_asyncio.client import ApiClient, Configuration

    from luna_operator.peering import ensure_peering_objects

    existing, forbidden, fresh = (f"{namespace[:50]}-{suffix}" for suffix in ("has", "no", "new"))
    missing = f"{namespace[:50]}-missing"
    for extra in (existing, forbidden, fresh):
        kube.kubectl("create", "namespace", extra)
    try:
        kube.kubectl("create", "serviceaccount", "peer", "-n", namespace)
        kube.kubectl(
            "create",
            "clusterrole",
            f"{namespace}-peering",
            "--verb=create",
            "--resource=kopfpeerings.kopf.dev",
        )
        for allowed in (existing, fresh):
            kube.kubectl(
                "create",
                "rolebinding",
                "peering",
                "-n",
                allowed,
                f"--clusterrole={namespace}-peering",
                f"--serviceaccount={namespace}:peer",
            )
        kube.kubectl(
            "apply",
            "-n",
            existing,
            "-f",
            "-",
            input='{"apiVersion": "kopf.dev/v1", "kind": "KopfPeering", "metadata": {"name": "luna"}}',
        )
        peer = service_account_kube(kube, namespace, "peer", tmp_path)
        configuration = Configuration()
        await config.load_kube_config(config_file=str(peer.kubeconfig), client_configuration=configuration)
        async with ApiClient(configuration) as api:
            problems = await ensure_peering_objects(api, "luna", (missing, forbidden, existing, fresh))
        assert len(problems) == 2, problems
        assert f"KopfPeering 'luna' in namespace '{missing}': HTTP 403" in problems[0]
        assert f"KopfPeering 'luna' in namespace '{forbidden}': HTTP 403" in problems[1]
        assert peering_names(kube, fresh) == ["kopfpeering.kopf.dev/luna"]
        assert peering_names(kube, existing) == ["kopfpeering.kopf.dev/luna"]
        assert peering_names(kube, forbidden) == []
        # the admin meets the missing namespace itself: 404, not "the CRDs are missing"
        (problem,) = await ensure_peering_objects(api_client, "admin", (missing, forbidden))
        assert f"KopfPeering 'admin' in namespace '{missing}': HTTP 404" in problem
        assert peering_names(kube, forbidden) == ["kopfpeering.kopf.dev/admin"]
    finally:
        kube.kubectl("delete", "clusterrole", f"{namespace}-peering", "--ignore-not-found", check=False)
        for extra in (existing, forbidden, fresh):
            kube.kubectl("delete", "namespace", extra, "--wait=false", check=False)


def test_the_operator_starts_with_peering_when_one_namespace_does_not_exist(
    cluster: Cluster, kube: Any, tmp_path: Path
) -> None:
    ns = cluster.namespace
    running = start_operator(
        kube, ns, tmp_path, "--peering", "luna", "--priority", "1", "--namespace", f"{ns[:50]}-missing"
    )
    try:
        assert peering_names(kube, ns) == ["kopfpeering.kopf.dev/luna"]
        assert f"cannot create KopfPeering 'luna' in namespace '{ns[:50]}-missing'" in running.log()
        cluster.apply(plugin_manifest("served", ns, route_code("/served")))
        cluster.wait_phase("served", "Ready", timeout=30)
    finally:
        kube.kubectl("delete", "lunaplugins", "--all", "-n", ns, "--timeout=60s", check=False)
        running.stop()
