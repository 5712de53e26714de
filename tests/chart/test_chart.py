"""The Helm chart `charts/luna-plugins`: its CRDs, lint, rendering, what the API server accepts,
the restricted pod security of what it runs, and RBAC that is both minimal and sufficient (the
real operator and sidecar run with the chart's ServiceAccounts' tokens)."""

from __future__ import annotations

import base64
import datetime
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from luna_operator.webhook_ca import CAPolicy, CAState, plan
from tests.support.accounts import service_account_kube, stand_in_pod
from tests.support.chart import CHART, NO_KUBELET, ROOT, fill_ca_bundles, of_kind, render, service_chart
from tests.support.operator_harness import Cluster, plugin_manifest, route_code, start_operator
from tests.support.sidecar_harness import start_sidecar, wait_for

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
        "operator.prometheusScrape.enabled=false",
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
    # several operator replicas, one active: RollingUpdate, a PodDisruptionBudget, a ClusterKopfPeering
    "peering-two-replicas": ["--set", "operator.peering.enabled=true", "--set", "operator.replicas=2"],
    # the same watching named namespaces: a KopfPeering in each (here the release namespace)
    "peering-namespaced": ["--set", "operator.peering.enabled=true", "--set", "operator.replicas=3"],
    "webhook-disabled": ["--set", "webhook.enabled=false", "--set", "injection.enabled=false"],
    # no ValidatingAdmissionPolicy guarding the plugin ConfigMaps
    "guard-disabled": ["--set", "configMapGuard.enabled=false"],
    # no ValidatingAdmissionPolicy guarding the sidecars' reports
    "report-guard-disabled": ["--set", "reportGuard.enabled=false"],
    "injection-disabled": ["--set", "injection.enabled=false"],
    # sidecar ServiceAccount, Role and RoleBinding in one more (existing) namespace
    "sidecar-namespaces": ["--set", "sidecar.namespaces={default}"],
}
#: the combinations that need the release namespace in operator.namespaces (objects are put there)
WATCH_RELEASE_NAMESPACE = {"peering-namespaced"}

#: what the operator's ClusterRole must grant: (apiGroup, resource) -> verbs
OPERATOR_RULES = {
    ("luna.dev", "lunaplugins"): {"get", "list", "watch", "patch"},
    ("luna.dev", "lunaplugins/status"): {"patch"},
    ("luna.dev", "lunapluginruntimes"): {"list", "watch"},
    ("", "configmaps"): {"get", "list", "watch", "create", "update"},
    ("", "secrets"): {"list", "watch", "create", "update"},
    ("", "events"): {"create"},
    ("apiextensions.k8s.io", "customresourcedefinitions"): {"list", "watch"},
}
#: with the operator's own webhook CA (the default): the chart's configurations, by name
#: injected pods run their sidecar as their own ServiceAccount: the operator binds it, in the pod's
#: namespace, to the sidecar's ClusterRole, and may bind that one only (injection.podIdentity)
SIDECAR_ACCESS_RULES = {
    ("rbac.authorization.k8s.io", "rolebindings"): {"get", "create", "patch"},
    ("rbac.authorization.k8s.io", "clusterroles#luna-luna-plugins-sidecar"): {"bind", "get"},
}
#: the scan for pods that asked for the sidecar and run without it (with injection)
AUDIT_RULES = {("", "pods"): {"list", "get"}, ("", "namespaces"): {"list"}}
OWN_CA_RULES = {
    ("admissionregistration.k8s.io", "validatingwebhookconfigurations#luna-luna-plugins"): {"get", "patch"},
    ("admissionregistration.k8s.io", "mutatingwebhookconfigurations#luna-luna-plugins-inject"): {
        "get",
        "patch",
    },
}
OWN_CA_SECRET_RULES = {("", "secrets#luna-luna-plugins-webhook-ca"): {"get", "patch"}}
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
    """(apiGroup, resource) -> verbs; a rule limited to resourceNames counts as ``resource#name``."""
    granted: dict[tuple[str, str], set[str]] = {}
    for rule in role["rules"]:
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                for name in rule.get("resourceNames") or [None]:
                    key = (group, resource if name is None else f"{resource}#{name}")
                    granted.setdefault(key, set()).update(rule["verbs"])
    return granted


def combination_args(combination: str, namespace: str) -> list[str]:
    """The helm arguments of ``COMBINATIONS[combination]`` for a release in ``namespace``."""
    args = list(COMBINATIONS[combination])
    if combination in WATCH_RELEASE_NAMESPACE:
        args += ["--set", f"operator.namespaces={{{namespace}}}"]
    return args


def dry_run(kube: Any, namespace: str, objects: list[dict[str, Any]]) -> str:
    """Server-side dry-run apply of ``objects``; returns stderr (PodSecurity warnings land there).
    Objects that name another namespace (e.g. sidecar.namespaces) are applied in theirs."""
    by_namespace: dict[str, list[dict[str, Any]]] = {}
    for obj in objects:
        by_namespace.setdefault(obj["metadata"].get("namespace") or namespace, []).append(obj)
    stderr = ""
    for target, group in sorted(by_namespace.items(), key=lambda item: item[0] != namespace):
        manifest = yaml.safe_dump_all(group)
        stderr += kube.kubectl("apply", "--dry-run=server", "-n", target, "-f", "-", input=manifest).stderr
    return stderr


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


def test_one_source_for_the_crds_and_the_demo_plugins() -> None:
    """crds/ is the chart's crds/ and the chart's demo plugins are examples/plugins: links, not
    copies kept equal (Helm follows them when it loads or packages the chart)."""
    names = sorted(path.name for path in CRDS.glob("*.yaml"))
    assert names, "no CRDs in crds/"
    assert CRDS.resolve() == (CHART / "crds").resolve()
    assert (CHART / "files" / "plugins").resolve() == (ROOT / "examples" / "plugins").resolve()


@pytest.mark.kube
def test_the_packaged_chart_holds_the_crds_and_demo_plugins_themselves(kube: Any, tmp_path: Path) -> None:
    import tarfile

    kube.helm("package", str(CHART), "--destination", str(tmp_path))
    (archive,) = tmp_path.glob("luna-plugins-*.tgz")
    with tarfile.open(archive) as packed:
        members = {member.name: member for member in packed.getmembers()}
        for source, inside in [
            *((path, f"luna-plugins/crds/{path.name}") for path in CRDS.glob("*.yaml")),
            *(
                (path, f"luna-plugins/files/plugins/{path.name}")
                for path in (ROOT / "examples" / "plugins").glob("*.py")
            ),
        ]:
            assert members[inside].isfile(), inside  # the file itself, not a link
            extracted = packed.extractfile(members[inside])
            assert extracted is not None and extracted.read() == source.read_bytes(), inside


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
@pytest.mark.parametrize(
    "bad",
    [
        "operator.replicas=two",
        "operator.replicas=3",  # several replicas need operator.peering.enabled
        "operator.replicas=-1",
        "operator.logLevel=LOUD",
        "webhook.enabled=false",  # while injection.enabled (the default) needs it
        "webhook.timeoutSeconds=31",
        "webhook.certManager.issuerRef.kind=Vault",
        "operator.prometheus.url=prometheus:9090",  # no scheme
        "operator.prometheus.timeoutSeconds=0",
        "operator.prometheus.tokenSecret.name=../token",
        "operator.prometheus.ca.key=ca.crt/../x",
    ],
)
def test_schema_rejects_bad_values(kube: Any, bad: str) -> None:
    flag = "--set-string" if bad.endswith("two") else "--set"
    result = kube.helm("template", "luna", str(CHART), flag, bad, check=False)
    assert result.returncode != 0
    key = bad.split("=")[0].split(".")[-1]
    assert "schema" in result.stderr and key in result.stderr, result.stderr


@pytest.mark.kube
@pytest.mark.parametrize(
    ("values", "message"),
    [
        (["operator.replicas=2"], "operator.replicas=2 needs operator.peering.enabled=true"),
        (["webhook.enabled=false"], "injection.enabled=true needs webhook.enabled=true"),
    ],
)
def test_values_that_cannot_work_together_fail_with_a_clear_message(
    kube: Any, values: list[str], message: str
) -> None:
    """The template's own checks, for a user who skips the schema."""
    sets = [arg for value in values for arg in ("--set", value)]
    result = kube.helm("template", "luna", str(CHART), "--skip-schema-validation", *sets, check=False)
    assert result.returncode != 0
    assert message in result.stderr, result.stderr


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
    assert {"name": "tmp", "emptyDir": {"sizeLimit": "64Mi"}} in pod["volumes"]
    assert pod["serviceAccountName"] == "luna-luna-plugins"


@pytest.mark.kube
def test_the_operator_asks_prometheus_only_when_given_one(kube: Any) -> None:
    def args(*sets: str) -> list[str]:
        (deployment,) = of_kind(render(kube, *sets), "Deployment")
        (container,) = deployment["spec"]["template"]["spec"]["containers"]
        return [arg for arg in container["args"] if arg.startswith("--prometheus")]

    assert args() == []
    url = "operator.prometheus.url=http://prometheus-operated.monitoring:9090"
    assert args("--set", url, "--set", "operator.prometheus.timeoutSeconds=5") == [
        "--prometheus-url=http://prometheus-operated.monitoring:9090",
        "--prometheus-timeout=5",
    ]


@pytest.mark.kube
def test_a_prometheus_token_and_ca_reach_the_operator_as_mounted_files(kube: Any) -> None:
    def operator_pod(*sets: str) -> tuple[list[str], dict[str, Any], dict[str, Any]]:
        (deployment,) = of_kind(
            render(kube, "--set", "operator.prometheus.url=https://p:9090", *sets), "Deployment"
        )
        pod = deployment["spec"]["template"]["spec"]
        (container,) = pod["containers"]
        args = [arg for arg in container["args"] if arg.startswith(("--prometheus-token", "--prometheus-ca"))]
        mounts = {mount["name"]: mount for mount in container["volumeMounts"]}
        volumes = {volume["name"]: volume for volume in pod["volumes"]}
        return args, mounts, volumes

    args, mounts, volumes = operator_pod()
    assert args == [] and "prometheus-token" not in volumes and "prometheus-ca" not in volumes
    args, mounts, volumes = operator_pod(
        "--set",
        "operator.prometheus.tokenSecret.name=prom-token",
        "--set",
        "operator.prometheus.tokenSecret.key=bearer",
        "--set",
        "operator.prometheus.ca.name=prom-ca",
        "--set",
        "operator.prometheus.serviceAccountToken=true",  # the Secret wins
    )
    assert args == [
        "--prometheus-token-file=/etc/luna-plugins/prometheus-token/token",
        "--prometheus-ca-file=/etc/luna-plugins/prometheus-ca/ca.crt",
    ]
    assert volumes["prometheus-token"]["secret"]["secretName"] == "prom-token"
    assert volumes["prometheus-token"]["secret"]["items"] == [{"key": "bearer", "path": "token"}]
    assert volumes["prometheus-ca"]["secret"]["items"] == [{"key": "ca.crt", "path": "ca.crt"}]
    assert mounts["prometheus-token"]["readOnly"] and mounts["prometheus-ca"]["readOnly"]
    args, _, volumes = operator_pod(
        "--set",
        "operator.prometheus.serviceAccountToken=true",
        "--set",
        "operator.prometheus.ca.name=prom-ca",
        "--set",
        "operator.prometheus.ca.configMap=true",
    )
    assert args == [
        "--prometheus-token-file=/var/run/secrets/kubernetes.io/serviceaccount/token",
        "--prometheus-ca-file=/etc/luna-plugins/prometheus-ca/ca.crt",
    ]
    assert volumes["prometheus-ca"]["configMap"]["name"] == "prom-ca"


@pytest.mark.kube
def test_scrape_annotations_follow_the_values(kube: Any) -> None:
    def scrape_annotations(objects: list[dict[str, Any]]) -> dict[str, str]:
        (deployment,) = of_kind(objects, "Deployment")
        annotations = deployment["spec"]["template"]["metadata"].get("annotations") or {}
        return {key: value for key, value in annotations.items() if key.startswith("prometheus.io/")}

    assert scrape_annotations(render(kube)) == {
        "prometheus.io/scrape": "true",
        "prometheus.io/port": "8091",
        "prometheus.io/path": "/metrics",
    }
    assert scrape_annotations(render(kube, "--set", "operator.prometheusScrape.enabled=false")) == {}
    # without webhooks or scraping there is nothing to annotate the pod with
    off = [*COMBINATIONS["webhook-disabled"], "--set", "operator.prometheusScrape.enabled=false"]
    (deployment,) = of_kind(render(kube, *off), "Deployment")
    assert "annotations" not in deployment["spec"]["template"]["metadata"]


def operator_role(objects: list[dict[str, Any]]) -> dict[str, Any]:
    """The operator's own ClusterRole (the chart also has roles aggregated into the built-in ones)."""
    (role,) = [o for o in of_kind(objects, "ClusterRole") if o["metadata"]["name"].endswith("-operator")]
    return role


@pytest.mark.kube
def test_rbac_is_exactly_what_the_operator_and_sidecar_use(kube: Any) -> None:
    objects = render(kube)
    cluster_role = operator_role(objects)
    assert rules_of(cluster_role) == OPERATOR_RULES | OWN_CA_RULES | SIDECAR_ACCESS_RULES | AUDIT_RULES
    (role,) = [r for r in of_kind(objects, "Role") if r["metadata"]["name"].endswith("-sidecar")]
    # what the operator binds injected pods' own accounts to: the sidecar's rules, nothing more
    (sidecar_role,) = [
        r for r in of_kind(objects, "ClusterRole") if r["metadata"]["name"] == "luna-luna-plugins-sidecar"
    ]
    assert rules_of(sidecar_role) == SIDECAR_RULES
    (deployment,) = of_kind(objects, "Deployment")
    args = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--sidecar-cluster-role=luna-luna-plugins-sidecar" in args
    without = render(kube, "--set", "injection.podIdentity=false")
    assert "luna-luna-plugins-sidecar" not in {r["metadata"]["name"] for r in of_kind(without, "ClusterRole")}
    (ca_role,) = [r for r in of_kind(objects, "Role") if r["metadata"]["name"].endswith("-webhook-ca")]
    assert rules_of(role) == SIDECAR_RULES
    assert rules_of(ca_role) == OWN_CA_SECRET_RULES
    assert role["metadata"]["namespace"] == ca_role["metadata"]["namespace"] == "luna-system"
    for each in (cluster_role, role, ca_role):
        for rule in each["rules"]:
            assert "*" not in rule["verbs"] + rule["resources"] + rule["apiGroups"], rule
    # watching named namespaces, kopf also lists and watches namespaces
    cluster_role = operator_role(render(kube, "--set", "operator.namespaces={a}"))
    assert rules_of(cluster_role) == OPERATOR_RULES | OWN_CA_RULES | SIDECAR_ACCESS_RULES | AUDIT_RULES | {
        ("", "namespaces"): {"list", "watch"}
    }
    bindings = {b["roleRef"]["name"]: b["subjects"] for b in of_kind(objects, "RoleBinding")}
    assert bindings["luna-luna-plugins-sidecar"] == [
        {"kind": "ServiceAccount", "name": "luna-luna-plugins-sidecar", "namespace": "luna-system"}
    ]
    assert bindings["luna-luna-plugins-operator-webhook-ca"] == [
        {"kind": "ServiceAccount", "name": "luna-luna-plugins", "namespace": "luna-system"}
    ]
    # the operator's own CA patches only the configurations the chart renders
    validating_only = {k: v for k, v in OWN_CA_RULES.items() if "validating" in k[1]}
    assert rules_of(operator_role(render(kube, *COMBINATIONS["injection-disabled"]))) == (
        OPERATOR_RULES | validating_only
    )
    # no verb for the webhooks when the chart or cert-manager makes the certificates
    for values, access in (
        (COMBINATIONS["webhook-disabled"], {}),
        (["--set", "webhook.certificates=helm"], SIDECAR_ACCESS_RULES | AUDIT_RULES),
        (["--set", "webhook.certManager.enabled=true"], SIDECAR_ACCESS_RULES | AUDIT_RULES),
        (["--set", "webhook.certificates=helm", "--set", "injection.podIdentity=false"], AUDIT_RULES),
        (["--set", "webhook.certificates=helm", "--set", "injection.auditInterval=0s"], SIDECAR_ACCESS_RULES),
    ):
        objects = render(kube, *values)
        assert rules_of(operator_role(objects)) == OPERATOR_RULES | access, values
        assert not [r for r in of_kind(objects, "Role") if r["metadata"]["name"].endswith("-webhook-ca")]


@pytest.mark.kube
def test_peering_rbac_is_exactly_what_kopf_and_the_operator_use(kube: Any) -> None:
    """kopf lists and watches the peering objects and merge-patches its entry into ours (the CRDs
    have no status subresource); luna_operator.peering creates ours when it is missing."""
    peering = ["--set", "operator.peering.enabled=true"]
    cluster_role = operator_role(render(kube, *peering))
    assert rules_of(cluster_role) == OPERATOR_RULES | OWN_CA_RULES | SIDECAR_ACCESS_RULES | AUDIT_RULES | {
        ("kopf.dev", "clusterkopfpeerings"): {"list", "watch", "create"},
        ("kopf.dev", "clusterkopfpeerings#luna-luna-plugins"): {"patch"},
    }
    cluster_role = operator_role(render(kube, *peering, "--set", "operator.namespaces={a,b}"))
    assert rules_of(cluster_role) == OPERATOR_RULES | OWN_CA_RULES | SIDECAR_ACCESS_RULES | AUDIT_RULES | {
        ("", "namespaces"): {"list", "watch"},
        ("kopf.dev", "kopfpeerings"): {"list", "watch", "create"},
        ("kopf.dev", "kopfpeerings#luna-luna-plugins"): {"patch"},
    }


@pytest.mark.kube
def test_sidecar_rbac_in_more_namespaces(kube: Any) -> None:
    objects = render(kube, "--set", "sidecar.namespaces={team-a,luna-system,team-b}")
    sidecar = "luna-luna-plugins-sidecar"
    accounts = [obj["metadata"]["namespace"] for obj in of_component(objects, "ServiceAccount", "sidecar")]
    assert sorted(accounts) == ["luna-system", "team-a", "team-b"]
    roles = of_component(objects, "Role", "sidecar")
    assert sorted(role["metadata"]["namespace"] for role in roles) == ["luna-system", "team-a", "team-b"]
    for role in roles:
        assert rules_of(role) == SIDECAR_RULES
    for binding in of_component(objects, "RoleBinding", "sidecar"):
        namespace = binding["metadata"]["namespace"]
        assert binding["roleRef"]["name"] == sidecar
        assert binding["subjects"] == [{"kind": "ServiceAccount", "name": sidecar, "namespace": namespace}]
    # a ServiceAccount the user brings: bound in every namespace, created in none
    objects = render(
        kube,
        "--set",
        "sidecar.namespaces={team-a}",
        "--set",
        "sidecar.serviceAccount.create=false",
        "--set",
        "sidecar.serviceAccount.name=handlers",
    )
    assert of_component(objects, "ServiceAccount", "sidecar") == []
    subjects = [binding["subjects"] for binding in of_component(objects, "RoleBinding", "sidecar")]
    assert sorted(subject[0]["namespace"] for subject in subjects) == ["luna-system", "team-a"]
    assert {subject[0]["name"] for subject in subjects} == {"handlers"}


def of_component(objects: list[dict[str, Any]], kind: str, component: str) -> list[dict[str, Any]]:
    """The objects of ``kind`` the chart labels as part of ``component``."""
    return [
        o
        for o in of_kind(objects, kind)
        if o["metadata"]["labels"].get("app.kubernetes.io/component") == component
    ]


@pytest.mark.kube
def test_objects_carry_the_recommended_labels(kube: Any) -> None:
    everything = [
        *("--set", "operator.peering.enabled=true", "--set", "operator.replicas=2"),
        *("--set", "webhook.certManager.enabled=true", "--set", "sidecar.namespaces={team-a}"),
        *("--set", "demo.enabled=true", "--set", "prometheus.podMonitor.enabled=true"),
        *("--set", "prometheus.serviceMonitor.enabled=true", "--set", "prometheus.rules.enabled=true"),
        *("--set", "grafana.dashboards.enabled=true"),
    ]
    components: set[str] = set()
    for obj in render(kube) + render(kube, *everything):
        labels = obj["metadata"]["labels"]
        assert labels["app.kubernetes.io/name"] == "luna-plugins", obj["metadata"]
        assert labels["app.kubernetes.io/instance"] == "luna"
        assert labels["app.kubernetes.io/managed-by"] == "Helm"
        assert labels["app.kubernetes.io/part-of"] == "luna-plugins"
        components.add(labels["app.kubernetes.io/component"])
    assert components == {"operator", "operator-metrics", "sidecar", "webhook", "demo", "monitoring", "check"}


# --- the API server -----------------------------------------------------------------------------


@pytest.mark.compat
@pytest.mark.kube
@pytest.mark.parametrize("combination", sorted(COMBINATIONS))
def test_rendered_objects_are_accepted_by_the_api_server(
    kube: Any, crd: None, namespace: str, combination: str
) -> None:
    restricted_namespace(kube, namespace)
    for name in ("kopfpeerings.kopf.dev", "clusterkopfpeerings.kopf.dev"):
        kube.kubectl("wait", "--for=condition=Established", f"crd/{name}", "--timeout=60s")
    objects = render(kube, *combination_args(combination, namespace), namespace=namespace)
    assert objects
    # the namespaces the operator is told to watch exist in the user's cluster (the check's probe
    # role goes to the first of them)
    named = {obj["metadata"].get("namespace") for obj in objects} - {None, namespace}
    made = [name for name in sorted(named) if kube.kubectl("get", "namespace", name, check=False).returncode]
    try:
        for name in made:
            kube.kubectl("create", "namespace", name)
        stderr = dry_run(kube, namespace, objects)
    finally:
        for name in made:
            kube.kubectl("delete", "namespace", name, "--wait=false", check=False)
    assert "Warning" not in stderr, stderr  # e.g. would violate PodSecurity "restricted"


@pytest.mark.kube
@pytest.mark.parametrize("combination", sorted(COMBINATIONS))
def test_combinations_are_lint_clean(kube: Any, combination: str) -> None:
    args = combination_args(combination, "luna-system")
    result = kube.helm("lint", "--strict", str(CHART), "--namespace", "luna-system", *args)
    assert "0 chart(s) failed" in result.stdout
    assert "[WARNING]" not in result.stdout and "[ERROR]" not in result.stdout, result.stdout


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


@pytest.fixture
def release(kube: Any, crd: None, namespace: str) -> Iterator[str]:
    name = f"r{namespace[-6:]}"
    kube.helm(
        "install",
        name,
        str(CHART),
        *NO_KUBELET,
        "--namespace",
        namespace,
        "--set",
        f"operator.namespaces={{{namespace}}}",
    )
    yield name
    kube.helm("uninstall", name, "--namespace", namespace, check=False)


@pytest.mark.compat
@pytest.mark.kube
def test_operator_and_sidecar_work_with_the_charts_rbac(
    kube: Any, namespace: str, release: str, tmp_path: Path
) -> None:
    operator_kube = service_account_kube(kube, namespace, f"{release}-luna-plugins", tmp_path)
    # the sidecar's token is bound to its pod, as the kubelet's projected token is (the report
    # guard lets a ServiceAccount write only its own pod's report): a Pod object stands for it
    account = f"{release}-luna-plugins-sidecar"
    pod_uid = stand_in_pod(kube, namespace, "pod-a", account)
    sidecar_kube = service_account_kube(kube, namespace, account, tmp_path, pod=("pod-a", pod_uid))
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
            args=[
                "--namespace",
                namespace,
                "--service",
                "handlers",
                "--pod-name",
                "pod-a",
                "--pod-uid",
                pod_uid,
            ],
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


def secret_data(kube: Any, namespace: str, name: str) -> dict[str, str]:
    secret = json.loads(kube.kubectl("get", "secret", name, "-n", namespace, "-o", "json").stdout)
    return secret["data"]  # type: ignore[no-any-return]


def secret_data_or_none(kube: Any, namespace: str, name: str) -> dict[str, str] | None:
    secret = json.loads(kube.kubectl("get", "secret", name, "-n", namespace, "-o", "json").stdout)
    return secret.get("data")  # type: ignore[no-any-return]


def ca_bundles(kube: Any, release: str) -> list[str]:
    bundles = []
    for kind, name in (
        ("validatingwebhookconfiguration", f"{release}-luna-plugins"),
        ("mutatingwebhookconfiguration", f"{release}-luna-plugins-inject"),
    ):
        configuration = json.loads(kube.kubectl("get", kind, name, "-o", "json").stdout)
        bundles += [webhook["clientConfig"].get("caBundle", "") for webhook in configuration["webhooks"]]
    return bundles


@pytest.mark.compat
@pytest.mark.kube
@pytest.mark.parametrize("certificates", ["operator", "helm"])
def test_install_upgrade_then_uninstall_leaves_nothing(
    kube: Any, crd: None, namespace: str, certificates: str
) -> None:
    """Peering with two replicas, so that every kind the chart makes is there. No --wait and no
    hooks: without a kubelet no pod runs (the node suite runs both)."""
    release = f"r{namespace[-6:]}"
    selector = f"app.kubernetes.io/instance={release}"
    peering = [
        *("--set", "operator.peering.enabled=true", "--set", "operator.replicas=2"),
        *("--set", f"webhook.certificates={certificates}", *NO_KUBELET),
    ]
    kube.helm("install", release, str(CHART), "--namespace", namespace, *peering)
    namespaced = (
        "deployments,replicasets,serviceaccounts,roles,rolebindings,services,secrets,configmaps,"
        "poddisruptionbudgets"
    )
    cluster_kinds = (
        "clusterroles,clusterrolebindings,validatingwebhookconfigurations,"
        "mutatingwebhookconfigurations,clusterkopfpeerings,validatingadmissionpolicies,"
        "validatingadmissionpolicybindings"
    )
    names = kube.kubectl("get", namespaced, "-n", namespace, "-l", selector, "-o", "name").stdout.split()
    for name in (
        "deployment.apps/{}-luna-plugins-operator",
        "serviceaccount/{}-luna-plugins-sidecar",
        "service/{}-luna-plugins-webhook",
        f"secret/{{}}-luna-plugins-webhook-{'ca' if certificates == 'operator' else 'tls'}",
        "serviceaccount/{}-luna-plugins-check",
        "configmap/{}-luna-plugins-inject",
        "poddisruptionbudget.policy/{}-luna-plugins-operator",
    ):
        assert name.format(release) in names, names
    cluster_wide = kube.kubectl("get", cluster_kinds, "-l", selector, "-o", "name").stdout.split()
    # the operator's ClusterRole and its binding, the check's, the view role aggregated into the
    # built-in ones, the sidecar's (bound to injected pods' own accounts), two webhook
    # configurations, the ClusterKopfPeering, and the ConfigMap and report guards (a policy and a
    # binding each)
    assert len(cluster_wide) == 13, cluster_wide
    assert f"clusterrole.rbac.authorization.k8s.io/{release}-luna-plugins-sidecar" in cluster_wide
    for name in ("{}-luna-plugins-configmaps", "{}-luna-plugins-reports"):
        assert (
            f"validatingadmissionpolicy.admissionregistration.k8s.io/{name.format(release)}" in cluster_wide
        )
    notes = kube.helm("status", release, "--namespace", namespace).stdout
    assert "The operator watches LunaPlugins in all namespaces" in notes, notes
    assert 'luna.dev/inject: "true"' in notes, notes

    def deployment() -> dict[str, Any]:
        name = f"{release}-luna-plugins-operator"
        return json.loads(kube.kubectl("get", "deployment", name, "-n", namespace, "-o", "json").stdout)  # type: ignore[no-any-return]

    if certificates == "helm":
        secret_name = f"{release}-luna-plugins-webhook-tls"
        certificate = secret_data(kube, namespace, secret_name)
        assert set(ca_bundles(kube, release)) == {certificate["ca.crt"]}
    else:
        # rendered empty; what the operator writes into it and into the caBundles, simulated here
        secret_name = f"{release}-luna-plugins-webhook-ca"
        assert secret_data_or_none(kube, namespace, secret_name) is None
        assert set(ca_bundles(kube, release)) == {""}
        certificate = plan(CAState(), datetime.datetime.now(datetime.UTC), CAPolicy()).to_secret()
        patch = json.dumps({"data": certificate})
        kube.kubectl("patch", "secret", secret_name, "-n", namespace, "--type=merge", "-p", patch)
        bundle = base64.b64encode(base64.b64decode(certificate["ca.crt"])).decode()
        fill_ca_bundles(kube, release, bundle)
    before = deployment()
    kube.helm(
        "upgrade", release, str(CHART), "--namespace", namespace, *peering, "--set", "operator.logLevel=DEBUG"
    )
    after = deployment()
    assert after["metadata"]["generation"] > before["metadata"]["generation"]
    assert "--log-level=DEBUG" in after["spec"]["template"]["spec"]["containers"][0]["args"]
    # the certificate was kept (looked up by Helm, or written by the operator and never rendered):
    # the pods' certificate and the caBundle still agree
    assert secret_data(kube, namespace, secret_name) == certificate
    expected = certificate["ca.crt"] if certificates == "helm" else bundle
    assert set(ca_bundles(kube, release)) == {expected}
    # certificates are followed as they change: no checksum rolls the pods
    for each in (before, after):
        assert "checksum/webhook-cert" not in each["spec"]["template"]["metadata"].get("annotations", {})

    kube.helm("uninstall", release, "--namespace", namespace, "--wait", "--timeout=60s")

    def gone() -> bool:
        left = kube.kubectl("get", f"{namespaced},pods", "-n", namespace, "-l", selector, "-o", "name")
        left_cluster = kube.kubectl("get", cluster_kinds, "-l", selector, "-o", "name")
        return not left.stdout.split() and not left_cluster.stdout.split()

    wait_for(gone, timeout=60, what="every object of the release to go")
    # CRDs stay (helm never deletes crds/): the plugins of other releases keep their resources
    assert kube.kubectl("get", "crd", "lunaplugins.luna.dev", check=False).returncode == 0


@pytest.mark.kube
@pytest.mark.parametrize("operator_during_uninstall", ["stopped first", "still running"])
def test_uninstall_with_the_demo_leaves_nothing_stuck(
    kube: Any, crd: None, namespace: str, tmp_path: Path, operator_during_uninstall: str
) -> None:
    """The demo's LunaPlugins, reconciled by the real operator with the chart's ServiceAccount: an
    uninstall deletes them (no finalizer to wait for, whether or not the operator still runs) and
    the garbage collector takes their ConfigMaps and the active list; nothing is left."""
    release = f"r{namespace[-6:]}"
    kube.helm(
        "install",
        release,
        str(CHART),
        *NO_KUBELET,
        "--namespace",
        namespace,
        "--set",
        f"operator.namespaces={{{namespace}}}",
        "--set",
        "demo.enabled=true",
    )
    cluster = Cluster(kube, namespace)
    operator = start_operator(
        service_account_kube(kube, namespace, f"{release}-luna-plugins", tmp_path), namespace, tmp_path
    )
    try:
        names = [item["metadata"]["name"] for item in cluster.items("lunaplugins")]
        assert len(names) == 3, names
        for name in names:
            cluster.wait_phase(name, "Ready", timeout=60)
        cluster.wait_active(["kettle", "route_digest", "http_forwarder"])
        assert all(not item["metadata"].get("finalizers") for item in cluster.items("lunaplugins"))
        if operator_during_uninstall == "stopped first":
            assert operator.stop() == 0  # as when its pod goes first
        kube.helm("uninstall", release, "--namespace", namespace, "--wait", "--timeout=60s")
        assert cluster.items("lunaplugins") == []  # nothing Terminating
        wait_for(
            lambda: not cluster.items("configmaps", "luna.dev/role"),
            timeout=90,  # the garbage collector
            what="no plugin ConfigMap or active list left",
        )
    finally:
        operator.stop()
        kube.helm("uninstall", release, "--namespace", namespace, check=False)
