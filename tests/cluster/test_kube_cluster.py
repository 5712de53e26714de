"""The local control plane behaves like a real cluster: controllers, CRDs, RBAC, tokens, clients."""

from __future__ import annotations

import asyncio
import base64
import json
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from tests.support.kube_fixtures import Kube, _cluster_command

pytestmark = pytest.mark.kube

WAIT = "--timeout=90s"


def test_client_and_server_report_real_versions(kube: Kube) -> None:
    versions = json.loads(kube.kubectl("version", "-o", "json").stdout)
    client, server = versions["clientVersion"], versions["serverVersion"]
    assert client["gitVersion"].startswith("v1.")
    assert server["gitVersion"].startswith("v1.")
    assert int(server["minor"].rstrip("+")) >= 35
    assert "helm" not in client  # sanity: this is kubectl talking


def test_kubeconfig_user_is_a_cluster_admin(kube: Kube) -> None:
    if kube.state_dir is None:
        pytest.skip("an external cluster has its own users")
    review = json.loads(kube.kubectl("auth", "whoami", "-o", "json").stdout)
    assert "system:masters" in review["status"]["userInfo"]["groups"]
    assert kube.kubectl("auth", "can-i", "*", "*", "--all-namespaces").stdout.strip() == "yes"


def test_namespace_is_finalized_by_the_namespace_controller(kube: Kube) -> None:
    name = f"ns-lifecycle-{uuid.uuid4().hex[:6]}"
    kube.kubectl("create", "namespace", name)
    kube.kubectl("create", "configmap", "content", "-n", name, "--from-literal=a=b")
    kube.kubectl("wait", "--for=jsonpath={.status.phase}=Active", f"namespace/{name}", WAIT)
    kube.kubectl("delete", "namespace", name, "--wait=false")
    # the namespace controller must empty it and remove the `kubernetes` finalizer
    kube.kubectl("wait", "--for=delete", f"namespace/{name}", WAIT)
    assert kube.kubectl("get", "namespace", name, check=False).returncode != 0


def test_owned_configmap_is_garbage_collected(kube: Kube, namespace: str) -> None:
    kube.kubectl("create", "configmap", "owner", "-n", namespace)
    uid = kube.kubectl("get", "configmap", "owner", "-n", namespace, "-o", "jsonpath={.metadata.uid}").stdout
    child = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": "child",
            "namespace": namespace,
            "ownerReferences": [{"apiVersion": "v1", "kind": "ConfigMap", "name": "owner", "uid": uid}],
        },
        "data": {"k": "v"},
    }
    kube.kubectl("apply", "-f", "-", input=json.dumps(child))
    kube.kubectl("delete", "configmap", "owner", "-n", namespace)
    kube.kubectl("wait", "--for=delete", "configmap/child", "-n", namespace, WAIT)


def test_custom_resource_definition_is_served(kube: Kube, namespace: str) -> None:
    group = f"t{uuid.uuid4().hex[:8]}.test.luna-plugins.io"
    crd = {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"widgets.{group}"},
        "spec": {
            "group": group,
            "scope": "Namespaced",
            "names": {"plural": "widgets", "singular": "widget", "kind": "Widget"},
            "versions": [
                {
                    "name": "v1",
                    "served": True,
                    "storage": True,
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "properties": {
                                "spec": {"type": "object", "properties": {"size": {"type": "integer"}}}
                            },
                        }
                    },
                }
            ],
        },
    }
    kube.kubectl("apply", "-f", "-", input=json.dumps(crd))
    try:
        kube.kubectl("wait", "--for=condition=Established", f"crd/widgets.{group}", WAIT)
        widget = {
            "apiVersion": f"{group}/v1",
            "kind": "Widget",
            "metadata": {"name": "w1"},
            "spec": {"size": 3},
        }
        kube.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(widget))
        got = json.loads(kube.kubectl("get", f"widgets.{group}", "w1", "-n", namespace, "-o", "json").stdout)
        assert got["spec"] == {"size": 3}
        # structural schema: a wrong type is rejected by the API server
        bad = {**widget, "metadata": {"name": "w2"}, "spec": {"size": "three"}}
        rejected = kube.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(bad), check=False)
        assert rejected.returncode != 0
        assert "spec.size" in rejected.stderr
        # a ConfigMap owned by the custom resource goes with it. The garbage collector learns about
        # new resource types by rediscovery every 30 s (fixed in kube-controller-manager), so for a
        # CRD created moments ago this may take that long: wait longer than 30 s.
        widget_uid = got["metadata"]["uid"]
        owned = {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {
                "name": "w1-data",
                "namespace": namespace,
                "ownerReferences": [
                    {"apiVersion": f"{group}/v1", "kind": "Widget", "name": "w1", "uid": widget_uid}
                ],
            },
        }
        kube.kubectl("apply", "-f", "-", input=json.dumps(owned))
        kube.kubectl("delete", f"widgets.{group}", "w1", "-n", namespace)
        kube.kubectl(
            "wait", "--for=delete", "configmap/w1-data", "-n", namespace, "--timeout=90s", timeout=100
        )
    finally:
        kube.kubectl("delete", "crd", f"widgets.{group}", "--wait=false", check=False)


def _claims(token: str) -> dict[str, Any]:
    payload = token.split(".")[1]
    claims: dict[str, Any] = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    return claims


async def _list_configmaps_as(kube: Kube, namespace: str, token: str) -> list[str]:
    from kubernetes_asyncio.client import ApiClient, Configuration, CoreV1Api

    admin = await kube.configuration()
    configuration = Configuration(
        host=admin.host, api_key={"BearerToken": token}, api_key_prefix={"BearerToken": "Bearer"}
    )
    configuration.ssl_ca_cert = admin.ssl_ca_cert
    configuration.verify_ssl = admin.verify_ssl
    async with ApiClient(configuration) as client:
        result = await CoreV1Api(client).list_namespaced_config_map(namespace)
    return [item.metadata.name for item in result.items]


async def test_rbac_denies_unbound_service_account(kube: Kube, namespace: str) -> None:
    from kubernetes_asyncio.client.exceptions import ApiException

    kube.kubectl("create", "serviceaccount", "nobody", "-n", namespace)
    token = kube.kubectl("create", "token", "nobody", "-n", namespace, "--duration=10m").stdout.strip()
    assert _claims(token)["sub"] == f"system:serviceaccount:{namespace}:nobody"
    with pytest.raises(ApiException) as denied:
        await _list_configmaps_as(kube, namespace, token)
    assert denied.value.status == 403
    can_i = kube.kubectl(
        "auth", "can-i", "list", "configmaps", "-n", namespace,
        f"--as=system:serviceaccount:{namespace}:nobody", check=False,
    )  # fmt: skip
    assert can_i.stdout.strip() == "no"


async def test_token_request_token_of_bound_service_account_works(kube: Kube, namespace: str) -> None:
    from kubernetes_asyncio.client.exceptions import ApiException

    kube.kubectl("create", "configmap", "visible", "-n", namespace, "--from-literal=x=1")
    kube.kubectl("create", "serviceaccount", "reader", "-n", namespace)
    kube.kubectl(
        "create", "role", "cm-reader", "-n", namespace, "--verb=get,list,watch", "--resource=configmaps"
    )
    kube.kubectl(
        "create", "rolebinding", "reader-binding", "-n", namespace,
        "--role=cm-reader", f"--serviceaccount={namespace}:reader",
    )  # fmt: skip
    # TokenRequest API (what `kubectl create token` calls), bound to the service account
    token = kube.kubectl("create", "token", "reader", "-n", namespace, "--duration=10m").stdout.strip()
    # the RBAC authorizer sees the new binding through an informer: allow it a moment
    deadline = time.monotonic() + 15
    while True:
        try:
            names = await _list_configmaps_as(kube, namespace, token)
            break
        except ApiException as exc:
            if exc.status != 403 or time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.2)
    assert "visible" in names


def test_helm_installs_a_chart_with_a_kube_version_constraint(
    kube: Kube, namespace: str, tmp_path: Path
) -> None:
    chart = tmp_path / "demo"
    (chart / "templates").mkdir(parents=True)
    (chart / "Chart.yaml").write_text(
        "apiVersion: v2\nname: demo\nversion: 0.1.0\nkubeVersion: '>=1.35.0-0'\n"
    )
    (chart / "templates" / "cm.yaml").write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{ .Release.Name }}-cm\n"
        "data:\n  kube: {{ .Capabilities.KubeVersion.Version | quote }}\n"
    )
    kube.helm("install", "demo", str(chart), "-n", namespace)
    version = kube.kubectl(
        "get", "configmap", "demo-cm", "-n", namespace, "-o", "jsonpath={.data.kube}"
    ).stdout
    assert version.startswith("v1.")
    kube.helm("uninstall", "demo", "-n", namespace)


def _cluster_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(_cluster_command(*args), capture_output=True, text=True, timeout=120)


def test_second_up_reuses_the_running_cluster_and_status_reports_it(kube: Kube) -> None:
    if kube.state_dir is None:
        pytest.skip("the cluster was not started by this session")
    before = json.loads((kube.state_dir / "cluster.json").read_text())
    started = time.monotonic()
    again = _cluster_cli("up", "--state-dir", str(kube.state_dir))
    assert again.returncode == 0, again.stderr
    assert time.monotonic() - started < 10
    assert "already running" in again.stderr
    assert json.loads((kube.state_dir / "cluster.json").read_text()) == before
    status = _cluster_cli("status", "--state-dir", str(kube.state_dir))
    assert status.returncode == 0, status.stdout + status.stderr
    for component in ("etcd", "kube-apiserver", "kube-controller-manager"):
        line = next(line for line in status.stdout.splitlines() if line.strip().startswith(component + " "))
        assert "running" in line and "127.0.0.1:" in line
