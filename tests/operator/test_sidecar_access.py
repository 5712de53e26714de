"""The sidecar runs as its pod's own ServiceAccount: the operator binds that account to the
sidecar's ClusterRole, with the operator's own least-privilege rights, proven with real tokens."""

from __future__ import annotations

import asyncio
import json
import uuid
from pathlib import Path
from typing import Any

import pytest

from luna_operator.cluster_api import KubeClusterApi
from luna_operator.errors import ApiError
from luna_operator.metrics import OperatorMetrics
from luna_operator.sidecar_access import SidecarAccess
from tests.support.accounts import service_account_kube

pytestmark = pytest.mark.kube

BINDING = "luna-plugins-sidecar-access"


def cluster_roles(kube: Any, suffix: str) -> tuple[str, str]:
    """The sidecar's ClusterRole (as the chart makes it) and the operator's part that binds it."""
    sidecar, operator = f"t-sidecar-{suffix}", f"t-operator-{suffix}"
    documents = [
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRole",
            "metadata": {"name": sidecar},
            "rules": [
                {"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "list", "watch"]},
                {
                    "apiGroups": ["luna.dev"],
                    "resources": ["lunapluginruntimes"],
                    "verbs": ["get", "create", "patch", "delete"],
                },
            ],
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRole",
            "metadata": {"name": operator},
            "rules": [
                {
                    "apiGroups": ["rbac.authorization.k8s.io"],
                    "resources": ["rolebindings"],
                    "verbs": ["get", "create", "patch"],
                },
                {
                    "apiGroups": ["rbac.authorization.k8s.io"],
                    "resources": ["clusterroles"],
                    "resourceNames": [sidecar],
                    "verbs": ["bind", "get"],
                },
            ],
        },
    ]
    for document in documents:
        kube.kubectl("apply", "-f", "-", input=json.dumps(document))
    return sidecar, operator


async def access_as(kube: Any, cluster_role: str) -> tuple[SidecarAccess, Any]:
    from kubernetes_asyncio.client import ApiClient

    client = ApiClient(await kube.configuration())
    access = SidecarAccess(cluster_role, binding=BINDING)
    access.api = KubeClusterApi(client, OperatorMetrics())
    return access, client


def can(kube: Any, namespace: str, account: str, verb: str, resource: str, where: str) -> bool:
    result = kube.kubectl(
        "auth",
        "can-i",
        verb,
        resource,
        "-n",
        where,
        f"--as=system:serviceaccount:{namespace}:{account}",
        check=False,
    )
    return result.stdout.strip() == "yes"


async def test_the_operator_binds_pods_accounts_to_the_sidecars_role_and_nothing_else(
    kube: Any, namespace: str, tmp_path: Path
) -> None:
    suffix = uuid.uuid4().hex[:6]
    sidecar_role, operator_role = cluster_roles(kube, suffix)
    other = f"{namespace}-other"
    kube.kubectl("create", "namespace", other)
    try:
        kube.kubectl("create", "serviceaccount", "operator", "-n", namespace)
        kube.kubectl(
            "create",
            "clusterrolebinding",
            operator_role,
            f"--clusterrole={operator_role}",
            f"--serviceaccount={namespace}:operator",
        )
        as_operator = service_account_kube(kube, namespace, "operator", tmp_path)
        access, client = await access_as(as_operator, sidecar_role)
        replica, replica_client = await access_as(as_operator, sidecar_role)  # a second operator replica
        try:
            assert await access.grant(namespace, "app-a") is True  # the RoleBinding is created
            assert await access.grant(namespace, "app-a") is False  # remembered: no API call
            # two replicas at once, two accounts: both end up bound (the patch tests the version)
            results = await asyncio.gather(
                access.grant(namespace, "app-b"), replica.grant(namespace, "app-c")
            )
            assert results == [True, True]
            assert await replica.grant(namespace, "app-b") is False  # found bound already
            binding = json.loads(
                kube.kubectl("get", "rolebinding", BINDING, "-n", namespace, "-o", "json").stdout
            )
            assert binding["roleRef"] == {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": sidecar_role,
            }
            assert sorted(s["name"] for s in binding["subjects"]) == ["app-a", "app-b", "app-c"]
            # owned by the ClusterRole: it goes with it (helm uninstall)
            (owner,) = binding["metadata"]["ownerReferences"]
            assert (owner["kind"], owner["name"]) == ("ClusterRole", sidecar_role)

            # what a bound account may do: read its namespace's ConfigMaps, keep reports; no more
            assert can(kube, namespace, "app-a", "list", "configmaps", namespace)
            assert can(kube, namespace, "app-a", "watch", "configmaps", namespace)
            assert not can(kube, namespace, "app-a", "get", "secrets", namespace)
            assert not can(kube, namespace, "app-a", "list", "configmaps", other)
            assert not can(kube, namespace, "app-a", "create", "lunaplugins.luna.dev", namespace)
            assert not can(kube, namespace, "unbound", "list", "configmaps", namespace)

            # the operator's token may bind the sidecar's role only: asked for another, it cannot
            # even read it, and binding it by hand with the operator's token is forbidden too
            greedy, greedy_client = await access_as(as_operator, "admin")
            try:
                with pytest.raises(ApiError) as refused:
                    await greedy.grant(other, "app-a")
                assert refused.value.status == 403
            finally:
                await greedy_client.close()
            bind_admin = as_operator.kubectl(
                "create", "rolebinding", "greedy", "--clusterrole=admin",
                f"--serviceaccount={other}:app-a", "-n", other, check=False,
            )  # fmt: skip
            assert bind_admin.returncode != 0 and "forbidden" in bind_admin.stderr.lower(), bind_admin.stderr
            assert not can(kube, namespace, "app-a", "list", "configmaps", other)
        finally:
            await client.close()
            await replica_client.close()
    finally:
        kube.kubectl("delete", "namespace", other, "--wait=false", check=False)
        kube.kubectl("delete", "clusterrolebinding", operator_role, "--ignore-not-found", check=False)
        kube.kubectl("delete", "clusterrole", sidecar_role, operator_role, "--ignore-not-found", check=False)


async def test_a_binding_of_that_name_to_another_role_is_reported_not_taken_over(
    kube: Any, namespace: str
) -> None:
    suffix = uuid.uuid4().hex[:6]
    sidecar_role, operator_role = cluster_roles(kube, suffix)
    try:
        kube.kubectl(
            "create", "rolebinding", BINDING, "--clusterrole=view", "--user=someone", "-n", namespace
        )
        access, client = await access_as(kube, sidecar_role)
        try:
            with pytest.raises(ApiError) as refused:
                await access.grant(namespace, "app-a")
            assert "binds ClusterRole 'view'" in str(refused.value) and "rename or delete it" in str(
                refused.value
            )
        finally:
            await client.close()
        subjects = json.loads(
            kube.kubectl("get", "rolebinding", BINDING, "-n", namespace, "-o", "json").stdout
        )
        assert [s["name"] for s in subjects["subjects"]] == ["someone"]  # untouched
    finally:
        kube.kubectl("delete", "clusterrole", sidecar_role, operator_role, "--ignore-not-found", check=False)
