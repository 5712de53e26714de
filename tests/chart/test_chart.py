"""The Helm chart `charts/luna-plugins`: its CRDs, lint, rendering, what the API server accepts,
the restricted pod security of what it runs, and RBAC that is both minimal and sufficient (the
real operator and sidecar run with the chart's ServiceAccounts' tokens)."""

from __future__ import annotations

import dataclasses
import filecmp
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.chart.helpers import CHART, ROOT, of_kind, render, service_chart
from tests.operator.harness import Cluster, plugin_manifest, route_code, start_operator
from tests.sidecar.harness import start_sidecar, wait_for

CRDS = ROOT / "crds"

#: documented value combinations, each rendered and dry-run applied
COMBINATIONS: dict[str, list[str]] = {
    "default": [],
    "namespaced": ["--set", "operator.namespaces={team-a,team-b}", "--set", "operator.logLevel=DEBUG"],
    "bring-your-own-accounts": [
        "--set",
        "serviceAccount.create=false",
        "--set",
        "serviceAccount.name=luna-operator",
        "--set",
        "sidecar.serviceAccount.create=false",
        "--set",
        "sidecar.serviceAccount.name=handlers",
        "--set",
        "operator.prometheusScrape.enabled=true",
        "--set",
        "image.tag=0.1.0-rc1",
    ],
    "no-rbac-scaled-down": [
        "--set",
        "rbac.create=false",
        "--set",
        "sidecar.rbac.create=false",
        "--set",
        "operator.replicas=0",
    ],
}

#: what the operator's ClusterRole must grant: (apiGroup, resource) -> verbs
OPERATOR_RULES = {
    ("luna.dev", "lunaplugins"): {"get", "list", "watch", "patch"},
    ("luna.dev", "lunaplugins/status"): {"patch"},
    ("luna.dev", "lunapluginruntimes"): {"list", "watch"},
    ("", "configmaps"): {"get", "list", "watch", "create", "update"},
    ("", "events"): {"create"},
    ("apiextensions.k8s.io", "customresourcedefinitions"): {"list", "watch"},
}
SIDECAR_RULES = {
    ("", "configmaps"): {"get", "list", "watch"},
    ("luna.dev", "lunapluginruntimes"): {"get", "create", "patch", "delete"},
}
RESTRICTED_CONTAINER = {
    "allowPrivilegeEscalation": False,
    "readOnlyRootFilesystem": True,
    "runAsNonRoot": True,
    "capabilities": {"drop": ["ALL"]},
    "seccompProfile": {"type": "RuntimeDefault"},
}


def rules_of(role: dict[str, Any]) -> dict[tuple[str, str], set[str]]:
    granted: dict[tuple[str, str], set[str]] = {}
    for rule in role["rules"]:
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                granted.setdefault((group, resource), set()).update(rule["verbs"])
    return granted


def dry_run(kube: Any, namespace: str, objects: list[dict[str, Any]]) -> str:
    """Server-side dry-run apply of ``objects``; returns stderr (PodSecurity warnings land there)."""
    manifest = yaml.safe_dump_all(objects)
    result = kube.kubectl("apply", "--dry-run=server", "-n", namespace, "-f", "-", input=manifest)
    return result.stderr


def restricted_namespace(kube: Any, namespace: str) -> None:
    kube.kubectl(
        "label",
        "namespace",
        namespace,
        "--overwrite",
        "pod-security.kubernetes.io/enforce=restricted",
        "pod-security.kubernetes.io/warn=restricted",
    )


# --- no cluster ---------------------------------------------------------------------------------


def test_chart_crds_are_the_repository_crds() -> None:
    names = sorted(path.name for path in CRDS.glob("*.yaml"))
    assert names, "no CRDs in crds/"
    assert sorted(path.name for path in (CHART / "crds").iterdir()) == names, "chart crds/ != crds/"
    _, mismatch, errors = filecmp.cmpfiles(CRDS, CHART / "crds", names, shallow=False)
    assert not mismatch and not errors, f"copy crds/*.yaml to charts/luna-plugins/crds/: {mismatch + errors}"


def test_schema_describes_every_default_value() -> None:
    schema = json.loads((CHART / "values.schema.json").read_text())
    values = yaml.safe_load((CHART / "values.yaml").read_text())

    def walk(value: Any, node: dict[str, Any], path: str) -> None:
        if isinstance(value, dict) and "properties" in node:
            for key, item in value.items():
                assert key in node["properties"], f"{path}.{key} is not in values.schema.json"
                walk(item, node["properties"][key], f"{path}.{key}")

    walk(values, schema, "values")


# --- helm, no API server needed -----------------------------------------------------------------


@pytest.mark.kube
def test_helm_lint_is_clean(kube: Any) -> None:
    result = kube.helm("lint", "--strict", str(CHART))
    assert "0 chart(s) failed" in result.stdout
    assert "[WARNING]" not in result.stdout and "[ERROR]" not in result.stdout, result.stdout


@pytest.mark.kube
@pytest.mark.parametrize("bad", ["operator.replicas=two", "operator.replicas=3", "operator.logLevel=LOUD"])
def test_schema_rejects_bad_values(kube: Any, bad: str) -> None:
    flag = "--set-string" if bad.endswith("two") else "--set"
    result = kube.helm("template", "luna", str(CHART), flag, bad, check=False)
    assert result.returncode != 0
    assert "schema" in result.stderr and bad.split("=")[0].split(".")[-1] in result.stderr, result.stderr


@pytest.mark.kube
def test_operator_pod_is_restricted_and_probed(kube: Any) -> None:
    objects = render(kube)
    (deployment,) = of_kind(objects, "Deployment")
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}
    pod = deployment["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    (container,) = pod["containers"]
    assert container["securityContext"] | RESTRICTED_CONTAINER == container["securityContext"]
    assert container["args"][0] == "operator"
    assert "--liveness=0.0.0.0:8090" in container["args"]
    probe = container["livenessProbe"]["httpGet"]
    assert probe["path"] == "/healthz"
    assert {"name": "liveness", "containerPort": 8090, "protocol": "TCP"} in container["ports"]
    assert container["resources"]["requests"] and container["resources"]["limits"]
    assert {"name": "tmp", "mountPath": "/tmp"} in container["volumeMounts"]
    assert {"name": "tmp", "emptyDir": {}} in pod["volumes"]
    assert pod["serviceAccountName"] == "luna-luna-plugins"


@pytest.mark.kube
def test_scrape_annotations_follow_the_values(kube: Any) -> None:
    (deployment,) = of_kind(render(kube, "--set", "operator.prometheusScrape.enabled=true"), "Deployment")
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    assert annotations == {
        "prometheus.io/scrape": "true",
        "prometheus.io/port": "8090",
        "prometheus.io/path": "/metrics",
    }
    (deployment,) = of_kind(render(kube), "Deployment")
    assert "annotations" not in deployment["spec"]["template"]["metadata"]


@pytest.mark.kube
def test_rbac_is_exactly_what_the_operator_and_sidecar_use(kube: Any) -> None:
    objects = render(kube)
    (cluster_role,) = of_kind(objects, "ClusterRole")
    assert rules_of(cluster_role) == OPERATOR_RULES
    (role,) = of_kind(objects, "Role")
    assert rules_of(role) == SIDECAR_RULES
    assert role["metadata"]["namespace"] == "luna-system"
    for each in (cluster_role, role):
        for rule in each["rules"]:
            assert "*" not in rule["verbs"] + rule["resources"] + rule["apiGroups"], rule
    # watching named namespaces, kopf also lists and watches namespaces
    (cluster_role,) = of_kind(render(kube, "--set", "operator.namespaces={a}"), "ClusterRole")
    assert rules_of(cluster_role) == OPERATOR_RULES | {("", "namespaces"): {"list", "watch"}}
    (binding,) = of_kind(objects, "RoleBinding")
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "luna-luna-plugins-sidecar", "namespace": "luna-system"}
    ]


@pytest.mark.kube
def test_objects_carry_the_recommended_labels(kube: Any) -> None:
    for obj in render(kube):
        labels = obj["metadata"]["labels"]
        assert labels["app.kubernetes.io/name"] == "luna-plugins", obj["metadata"]
        assert labels["app.kubernetes.io/instance"] == "luna"
        assert labels["app.kubernetes.io/managed-by"] == "Helm"
        assert labels["app.kubernetes.io/component"] in ("operator", "sidecar")


# --- the API server -----------------------------------------------------------------------------


@pytest.mark.kube
@pytest.mark.parametrize("combination", sorted(COMBINATIONS))
def test_rendered_objects_are_accepted_by_the_api_server(
    kube: Any, crd: None, namespace: str, combination: str
) -> None:
    restricted_namespace(kube, namespace)
    objects = render(kube, *COMBINATIONS[combination], namespace=namespace)
    assert objects
    stderr = dry_run(kube, namespace, objects)
    assert "Warning" not in stderr, stderr  # e.g. would violate PodSecurity "restricted"


@pytest.mark.kube
def test_sidecar_container_template(kube: Any, crd: None, namespace: str, tmp_path: Path) -> None:
    objects = render(kube, namespace=namespace, chart=service_chart(tmp_path))
    (deployment,) = [d for d in of_kind(objects, "Deployment") if d["metadata"]["name"] == "handlers"]
    pod = deployment["spec"]["template"]
    assert pod["metadata"]["annotations"]["prometheus.io/port"] == "9100"
    sidecar = pod["spec"]["containers"][1]
    assert sidecar["name"] == "luna-sidecar"
    assert sidecar["image"] == "luna-plugins:0.1.0"
    assert sidecar["args"] == ["sidecar"]
    env = {item["name"]: item for item in sidecar["env"]}
    assert env["LUNA_SIDECAR_SERVICE"]["value"] == "handlers"
    assert env["LUNA_SIDECAR_NAMESPACE"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.namespace"
    assert env["LUNA_SIDECAR_POD_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    assert env["LUNA_SIDECAR_POD_UID"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.uid"
    assert {port["containerPort"] for port in sidecar["ports"]} == {8080, 9100}  # admin 8081: loopback
    assert sidecar["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "plugin-metrics"}
    assert sidecar["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "plugin-metrics"}
    assert sidecar["securityContext"] | RESTRICTED_CONTAINER == sidecar["securityContext"]
    restricted_namespace(kube, namespace)
    stderr = dry_run(kube, namespace, objects)
    assert "Warning" not in stderr, stderr


# --- installed: RBAC that suffices, and an uninstall that leaves nothing ------------------------


def service_account_kube(kube: Any, namespace: str, account: str, directory: Path) -> Any:
    """``kube`` with a kubeconfig that authenticates as ``namespace``/``account``."""
    token = kube.kubectl("create", "token", account, "-n", namespace, "--duration=1h").stdout.strip()
    config = json.loads(kube.kubectl("config", "view", "--raw", "--minify", "-o", "json").stdout)
    user = config["contexts"][0]["context"]["user"]
    config["users"] = [{"name": user, "user": {"token": token}}]
    path = directory / f"{account}.kubeconfig"
    path.write_text(json.dumps(config))
    return dataclasses.replace(kube, kubeconfig=path)


@pytest.fixture
def release(kube: Any, crd: None, namespace: str) -> Iterator[str]:
    name = f"r{namespace[-6:]}"
    kube.helm(
        "install", name, str(CHART), "--namespace", namespace, "--set", f"operator.namespaces={{{namespace}}}"
    )
    yield name
    kube.helm("uninstall", name, "--namespace", namespace, check=False)


@pytest.mark.kube
def test_operator_and_sidecar_work_with_the_charts_rbac(
    kube: Any, namespace: str, release: str, tmp_path: Path
) -> None:
    operator_kube = service_account_kube(kube, namespace, f"{release}-luna-plugins", tmp_path)
    sidecar_kube = service_account_kube(kube, namespace, f"{release}-luna-plugins-sidecar", tmp_path)
    cluster = Cluster(kube, namespace)
    operator = start_operator(operator_kube, namespace, tmp_path)
    sidecar = None
    try:
        cluster.apply(plugin_manifest("hello", namespace, route_code("/hello", "from the chart")))
        cluster.wait_phase("hello", "Ready", timeout=30)
        workdir = tmp_path / "sidecar"
        workdir.mkdir()
        sidecar = start_sidecar(
            workdir,
            standalone=False,
            args=["--namespace", namespace, "--service", "handlers", "--pod-name", "pod-a"],
            env={"KUBECONFIG": str(sidecar_kube.kubeconfig)},
        )
        wait_for(lambda: sidecar.get("/hello").status == 200, timeout=20, what="the plugin route")
        assert sidecar.get("/hello").text.strip('"') == "from the chart"
        wait_for(
            lambda: cluster.status("hello").get("loaded") == "1/1",
            timeout=30,
            what=f"status.loaded 1/1 (now {cluster.status('hello')})",
        )
        kube.kubectl("delete", "lunaplugin", "hello", "-n", namespace, "--timeout=30s")
        wait_for(lambda: sidecar.get("/hello").status == 404, timeout=20, what="the route to go")
    finally:
        if sidecar is not None:
            sidecar.stop()
        kube.kubectl("delete", "lunaplugins", "--all", "-n", namespace, "--timeout=30s", check=False)
        operator.stop()
    for log in (operator.log(), sidecar.log() if sidecar else ""):
        for sign in ("Forbidden", " 403", "Not enough permissions"):
            assert sign not in log, log[-3000:]
    # the sidecar removed its report on a clean shutdown: delete worked too
    assert cluster.items("lunapluginruntimes") == []


@pytest.mark.kube
def test_install_then_uninstall_leaves_nothing(kube: Any, crd: None, namespace: str) -> None:
    release = f"r{namespace[-6:]}"
    selector = f"app.kubernetes.io/instance={release}"
    kube.helm("install", release, str(CHART), "--namespace", namespace)
    namespaced = "deployments,replicasets,serviceaccounts,roles,rolebindings"
    names = kube.kubectl("get", namespaced, "-n", namespace, "-l", selector, "-o", "name").stdout.split()
    assert f"deployment.apps/{release}-luna-plugins-operator" in names
    assert f"serviceaccount/{release}-luna-plugins-sidecar" in names
    cluster_wide = kube.kubectl("get", "clusterroles,clusterrolebindings", "-l", selector, "-o", "name")
    assert len(cluster_wide.stdout.split()) == 2
    notes = kube.helm("status", release, "--namespace", namespace).stdout
    assert "The operator watches LunaPlugins in all namespaces" in notes, notes

    kube.helm("uninstall", release, "--namespace", namespace, "--wait", "--timeout=60s")

    def gone() -> bool:
        left = kube.kubectl("get", f"{namespaced},pods", "-n", namespace, "-l", selector, "-o", "name")
        left_cluster = kube.kubectl("get", "clusterroles,clusterrolebindings", "-l", selector, "-o", "name")
        return not left.stdout.split() and not left_cluster.stdout.split()

    wait_for(gone, timeout=60, what="every object of the release to go")
    # CRDs stay (helm never deletes crds/): the plugins of other releases keep their resources
    assert kube.kubectl("get", "crd", "lunaplugins.luna.dev", check=False).returncode == 0
