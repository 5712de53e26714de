"""The chart's admission webhooks, sidecar injection, peering and the RBAC its ServiceAccounts get.

Rendered objects are checked field by field; the chart's own webhook configurations are applied
(only their ``clientConfig`` pointed at a local operator on 127.0.0.1) so the real API server
calls a real operator with the chart's rules, selectors and policies and the chart's injection
template. No kubelet runs: Pods are stored, never started, which is all injection needs.
"""

from __future__ import annotations

import base64
import hashlib
import json
import subprocess
import uuid
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from luna_operator.certs import self_signed
from luna_operator.config import resolve
from luna_operator.injection import load_template
from tests.chart.test_chart import CRDS, dry_run, restricted_namespace
from tests.support.accounts import service_account_kube
from tests.support.chart import (
    CHART,
    NO_KUBELET,
    ModuleUnavailableError,
    go_module,
    install_crds,
    of_kind,
    render,
    service_chart,
)
from tests.support.operator_harness import Cluster, plugin_manifest, pod_manifest, route_code, start_operator
from tests.support.sidecar_harness import HOST, free_port, wait_for

pytestmark = pytest.mark.kube

#: cert-manager release whose CRDs (plain YAML under deploy/crds) validate the chart's Issuer and
#: Certificate; fetched through the Go module proxy, checked against this go.sum hash
CERT_MANAGER = "github.com/cert-manager/cert-manager@v1.21.2"
CERT_MANAGER_SUM = "h1:UWgoYM+KLNtRlqmoWOKjKBOBUPVHeepQ6/ac3ERJW68="
CERT_MANAGER_CRDS = {
    "issuers.cert-manager.io": "cert-manager.io_issuers.yaml",
    "certificates.cert-manager.io": "cert-manager.io_certificates.yaml",
}
CERT_MANAGER_KINDS = {"Issuer", "Certificate"}
SERVICE = "luna-luna-plugins-webhook"
SECRET = "luna-luna-plugins-webhook-tls"
CA_SECRET = "luna-luna-plugins-webhook-ca"
HELM_CERTIFICATES = ("--set", "webhook.certificates=helm")
OPERATOR_SELECTOR = {
    "app.kubernetes.io/name": "luna-plugins",
    "app.kubernetes.io/instance": "luna",
    "app.kubernetes.io/component": "operator",
}


def only(objects: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    (found,) = of_kind(objects, kind)
    return found


def served_versions() -> list[str]:
    crd = yaml.safe_load((CRDS / "lunaplugins.yaml").read_text())
    return [version["name"] for version in crd["spec"]["versions"] if version["served"]]


def openssl(*args: str, input: bytes | None = None) -> str:
    result = subprocess.run(["openssl", *args], input=input, capture_output=True, check=False)
    assert result.returncode == 0, result.stderr.decode()
    return result.stdout.decode()


def operator_container(objects: list[dict[str, Any]]) -> dict[str, Any]:
    (container,) = only(objects, "Deployment")["spec"]["template"]["spec"]["containers"]
    return container  # type: ignore[no-any-return]


# --- rendering ----------------------------------------------------------------------------------


def test_webhook_configurations_by_default(kube: Any) -> None:
    objects = render(kube)
    service = only(objects, "Service")
    assert service["metadata"]["name"] == SERVICE
    assert service["spec"]["selector"] == OPERATOR_SELECTOR
    assert only(objects, "Deployment")["spec"]["selector"]["matchLabels"] == OPERATOR_SELECTOR
    assert service["spec"]["ports"] == [
        {"name": "webhook", "port": 443, "targetPort": "webhook", "protocol": "TCP"}
    ]

    # the operator keeps its own CA in a Secret rendered empty: nothing rendered depends on chance
    # or on the cluster, so two renders are the same (GitOps tools compare them)
    secret = only(objects, "Secret")
    assert (secret["metadata"]["name"], secret["type"]) == (CA_SECRET, "Opaque")
    assert "data" not in secret and "stringData" not in secret
    assert yaml.safe_dump_all(render(kube)) == yaml.safe_dump_all(objects)

    validating = only(objects, "ValidatingWebhookConfiguration")
    mutating = only(objects, "MutatingWebhookConfiguration")
    assert validating["metadata"]["name"] == "luna-luna-plugins"
    assert mutating["metadata"]["name"] == "luna-luna-plugins-inject"
    (validate,) = validating["webhooks"]
    inject, inject_namespace = mutating["webhooks"]
    for webhook, name, path in (
        (validate, "lunaplugin.luna.dev", "/lunaplugin"),
        (inject, "inject-sidecar.luna.dev", "/inject-sidecar"),
        (inject_namespace, "inject-sidecar-namespace.luna.dev", "/inject-sidecar-namespace"),
    ):
        assert webhook["name"] == name
        # no caBundle: the operator fills it from its CA
        assert webhook["clientConfig"] == {
            "service": {"name": SERVICE, "namespace": "luna-system", "path": path, "port": 443},
        }
        # injecting binds the pod's own ServiceAccount: a side effect, never made for a dry run
        assert webhook["sideEffects"] == ("None" if webhook is validate else "NoneOnDryRun")
        assert webhook["admissionReviewVersions"] == ["v1"]
        assert webhook["timeoutSeconds"] == 5
    assert validate["rules"] == [
        {
            "apiGroups": ["luna.dev"],
            "apiVersions": served_versions(),
            "resources": ["lunaplugins"],
            "operations": ["CREATE", "UPDATE"],
            "scope": "Namespaced",
        }
    ]
    assert "namespaceSelector" not in validate  # the operator watches all namespaces
    # LunaPlugins fail closed; an object being deleted is let through (its finalizers can go);
    # pods are never held up by the operator
    assert validate["failurePolicy"] == "Fail" and inject["failurePolicy"] == "Ignore"
    assert validate["matchConditions"] == [
        {"name": "not-being-deleted", "expression": "!has(object.metadata.deletionTimestamp)"}
    ]
    assert "objectSelector" not in validate
    (open_validate,) = only(
        render(kube, "--set", "webhook.failurePolicy=Ignore"), "ValidatingWebhookConfiguration"
    )["webhooks"]
    assert open_validate["failurePolicy"] == "Ignore"
    # the demo's own plugins, created with the chart before the operator answers, and only they
    with_demo = render(kube, "--set", "demo.enabled=true")
    (demo_validate,) = only(with_demo, "ValidatingWebhookConfiguration")["webhooks"]
    assert demo_validate["objectSelector"] == {
        "matchExpressions": [{"key": "luna.dev/chart-demo", "operator": "NotIn", "values": ["luna"]}]
    }
    for webhook in (inject, inject_namespace):
        assert webhook["rules"] == [
            {
                "apiGroups": [""],
                "apiVersions": ["v1"],
                "resources": ["pods"],
                "operations": ["CREATE"],
                "scope": "Namespaced",
            }
        ]
        assert webhook["reinvocationPolicy"] == "IfNeeded" and webhook["failurePolicy"] == "Ignore"
    system = {
        "key": "kubernetes.io/metadata.name",
        "operator": "NotIn",
        "values": ["kube-system", "kube-node-lease"],
    }
    # opt-in: only pods labelled luna.dev/inject=true, and the pods of namespaces labelled
    # luna.dev/inject=enabled, are sent to the operator; never every pod of the cluster
    assert inject["namespaceSelector"] == {
        "matchExpressions": [system, {"key": "luna.dev/inject", "operator": "NotIn", "values": ["disabled"]}]
    }
    assert inject["objectSelector"] == {"matchLabels": {"luna.dev/inject": "true"}}
    assert inject_namespace["namespaceSelector"] == {
        "matchExpressions": [system, {"key": "luna.dev/inject", "operator": "In", "values": ["enabled"]}]
    }
    assert inject_namespace["objectSelector"] == {
        "matchExpressions": [{"key": "luna.dev/inject", "operator": "NotIn", "values": ["disabled", "true"]}]
    }
    # ... which the operator's own pods do not pass: they serve this webhook
    pod_labels = only(objects, "Deployment")["spec"]["template"]["metadata"]["labels"]
    assert pod_labels["luna.dev/inject"] == "disabled"


def test_helm_made_certificate_is_for_the_service_and_signed_by_the_ca_bundle(
    kube: Any, tmp_path: Path
) -> None:
    objects = render(kube, *HELM_CERTIFICATES, namespace="team-x")
    secret = only(objects, "Secret")
    assert (secret["metadata"]["name"], secret["type"]) == (SECRET, "kubernetes.io/tls")
    for kind in ("ValidatingWebhookConfiguration", "MutatingWebhookConfiguration"):
        for webhook in only(objects, kind)["webhooks"]:
            assert webhook["clientConfig"]["caBundle"] == secret["data"]["ca.crt"]
    ca, cert, key = (base64.b64decode(secret["data"][name]) for name in ("ca.crt", "tls.crt", "tls.key"))
    (tmp_path / "ca.crt").write_bytes(ca)
    (tmp_path / "tls.crt").write_bytes(cert)
    assert "tls.crt: OK" in openssl("verify", "-CAfile", str(tmp_path / "ca.crt"), str(tmp_path / "tls.crt"))
    text = openssl("x509", "-noout", "-ext", "subjectAltName", "-in", str(tmp_path / "tls.crt"))
    names = {name.strip() for name in text.splitlines()[1].split(",")}
    assert names == {
        f"DNS:{SERVICE}",
        f"DNS:{SERVICE}.team-x",
        f"DNS:{SERVICE}.team-x.svc",
        f"DNS:{SERVICE}.team-x.svc.cluster.local",
    }
    # the key belongs to the certificate
    cert_key = openssl("x509", "-noout", "-pubkey", input=cert)
    assert openssl("pkey", "-pubout", input=key) == cert_key


def test_operator_serves_the_webhooks_from_its_own_ca_or_the_mounted_certificate(kube: Any) -> None:
    objects = render(kube)
    deployment = only(objects, "Deployment")
    pod = deployment["spec"]["template"]
    container = operator_container(objects)
    args = container["args"]
    for arg in (
        "--webhook",
        "--webhook-managed=false",
        "--webhook-host=0.0.0.0",
        "--webhook-port=9443",
        f"--webhook-ca-secret=luna-system/{CA_SECRET}",
        f"--webhook-dns-names={SERVICE},{SERVICE}.luna-system,{SERVICE}.luna-system.svc,"
        f"{SERVICE}.luna-system.svc.cluster.local",
        "--webhook-configurations=validating/luna-luna-plugins,mutating/luna-luna-plugins-inject",
        "--webhook-certs-dir=/tmp/webhook-tls",
        "--webhook-ca-validity=8760h",
        "--webhook-ca-overlap=1h",
        "--webhook-serving-validity=720h",
        "--webhook-ca-check-interval=30s",
        "--inject",
        "--inject-template=/etc/luna-plugins/inject/sidecar.yaml",
    ):
        assert arg in args, args
    assert not [arg for arg in args if arg.startswith(("--peering", "--webhook-cert=", "--webhook-key="))]
    # the operator accepts them as rendered
    resolve(vars(_operator_parser().parse_args(args[1:])), {})
    assert {"name": "webhook", "containerPort": 9443, "protocol": "TCP"} in container["ports"]
    mounts = {mount["name"]: mount for mount in container["volumeMounts"]}
    assert "webhook-tls" not in mounts  # its serving certificate lives in /tmp, made by itself
    assert mounts["inject-template"] == {
        "name": "inject-template",
        "mountPath": "/etc/luna-plugins/inject",
        "readOnly": True,
    }
    volumes = {volume["name"]: volume for volume in pod["spec"]["volumes"]}
    assert volumes["inject-template"]["configMap"] == {"name": "luna-luna-plugins-inject"}
    # the pod rolls when the template changes; certificates are followed as they change
    annotations = pod["metadata"]["annotations"]
    config_map = only(objects, "ConfigMap")
    template = config_map["data"]["sidecar.yaml"]
    assert (
        annotations["checksum/inject-template"] == hashlib.sha256(template.rstrip("\n").encode()).hexdigest()
    )
    assert "checksum/webhook-cert" not in annotations
    other = render(kube, "--set", "sidecar.logLevel=DEBUG")
    other_annotations = only(other, "Deployment")["spec"]["template"]["metadata"]["annotations"]
    assert other_annotations["checksum/inject-template"] != annotations["checksum/inject-template"]

    # with Helm's certificate: mounted, followed without a restart
    helm_made = render(kube, *HELM_CERTIFICATES)
    container = operator_container(helm_made)
    assert "--webhook-cert=/etc/luna-plugins/webhook/tls.crt" in container["args"]
    assert "--webhook-key=/etc/luna-plugins/webhook/tls.key" in container["args"]
    assert not [arg for arg in container["args"] if arg.startswith("--webhook-ca")]
    mounts = {mount["name"]: mount for mount in container["volumeMounts"]}
    assert mounts["webhook-tls"] == {
        "name": "webhook-tls",
        "mountPath": "/etc/luna-plugins/webhook",
        "readOnly": True,
    }
    helm_pod = only(helm_made, "Deployment")["spec"]["template"]
    volumes = {volume["name"]: volume for volume in helm_pod["spec"]["volumes"]}
    assert volumes["webhook-tls"]["secret"] == {"secretName": SECRET, "defaultMode": 0o440}
    assert "checksum/webhook-cert" not in helm_pod["metadata"]["annotations"]


def _operator_parser() -> Any:
    import argparse

    from luna_operator.config import add_arguments

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return parser


def test_injection_template_is_the_charts_sidecar(kube: Any, tmp_path: Path) -> None:
    config_map = only(render(kube), "ConfigMap")
    assert config_map["metadata"]["name"] == "luna-luna-plugins-inject"
    assert config_map["metadata"]["labels"]["app.kubernetes.io/component"] == "webhook"
    template = yaml.safe_load(config_map["data"]["sidecar.yaml"])
    assert sorted(template) == ["annotations", "container", "labels", "volumes"]
    # the same container a user's chart gets from luna-plugins.sidecarContainer
    handlers = [
        d
        for d in of_kind(render(kube, chart=service_chart(tmp_path)), "Deployment")
        if d["metadata"]["name"] == "handlers"
    ]
    assert template["container"] == handlers[0]["spec"]["template"]["spec"]["containers"][1]
    assert template["volumes"] == handlers[0]["spec"]["template"]["spec"]["volumes"]
    assert template["annotations"] == handlers[0]["spec"]["template"]["metadata"]["annotations"]
    assert template["labels"] == {"luna.dev/sidecar": "true"}  # the PodMonitor selects it
    # the operator accepts the file as it is mounted
    path = tmp_path / "sidecar.yaml"
    path.write_text(config_map["data"]["sidecar.yaml"])
    loaded = load_template(path)
    assert loaded.name == "luna-sidecar" and dict(loaded.labels) == {"luna.dev/sidecar": "true"}
    # no scrape annotations when prometheus.scrapeAnnotations is off
    quiet = only(render(kube, "--set", "prometheus.scrapeAnnotations=false"), "ConfigMap")
    assert yaml.safe_load(quiet["data"]["sidecar.yaml"])["annotations"] == {}


def test_webhook_and_injection_can_be_turned_off(kube: Any) -> None:
    objects = render(kube, "--set", "injection.enabled=false")
    assert {obj["kind"] for obj in objects} >= {"Service", "Secret", "ValidatingWebhookConfiguration"}
    assert not of_kind(objects, "MutatingWebhookConfiguration") and not of_kind(objects, "ConfigMap")
    args = operator_container(objects)["args"]
    assert "--webhook" in args and not [arg for arg in args if arg.startswith("--inject")]

    objects = render(kube, "--set", "webhook.enabled=false", "--set", "injection.enabled=false")
    kinds = {obj["kind"] for obj in objects}
    assert not kinds & {
        "Service",
        "Secret",
        "ConfigMap",
        "ValidatingWebhookConfiguration",
        "MutatingWebhookConfiguration",
    }
    container = operator_container(objects)
    assert not [arg for arg in container["args"] if arg.startswith(("--webhook", "--inject"))]
    assert [port["name"] for port in container["ports"]] == ["liveness", "metrics"]  # no webhook port
    assert [mount["name"] for mount in container["volumeMounts"]] == ["tmp"]


def _pod_rules(objects: list[dict[str, Any]]) -> list[dict[str, Any]]:
    (role,) = [r for r in of_kind(objects, "ClusterRole") if r["metadata"]["name"].endswith("-operator")]
    return [rule for rule in role["rules"] if {"pods", "namespaces"} & set(rule["resources"])]


def test_the_scan_for_pods_without_their_sidecar_has_exactly_the_rights_it_needs(kube: Any) -> None:
    objects = render(kube)
    assert "--injection-audit-interval=60s" in operator_container(objects)["args"]
    assert _pod_rules(objects) == [
        {"apiGroups": [""], "resources": ["pods"], "verbs": ["list", "get"]},
        {"apiGroups": [""], "resources": ["namespaces"], "verbs": ["list"]},
    ]
    for off in ("0s", "0m", "0.0s"):
        objects = render(kube, "--set", f"injection.auditInterval={off}")
        assert f"--injection-audit-interval={off}" in operator_container(objects)["args"]
        assert _pod_rules(objects) == []
        flags = [a for a in operator_container(objects)["args"] if a.startswith("--injection-audit")]
        assert resolve({"injection_audit_interval": flags[0].split("=", 1)[1]}).injection_audit_interval == 0
    assert _pod_rules(render(kube, "--set", "injection.enabled=false")) == []
    refused = kube.helm("template", "luna", str(CHART), "--set", "injection.auditInterval=often", check=False)
    assert refused.returncode != 0 and "auditInterval" in refused.stderr, refused.stderr


def test_webhooks_only_see_the_namespaces_the_operator_watches(kube: Any) -> None:
    objects = render(
        kube, "--set", "operator.namespaces={team-a,team-b}", "--set", "webhook.timeoutSeconds=2"
    )
    watched = {"key": "kubernetes.io/metadata.name", "operator": "In", "values": ["team-a", "team-b"]}
    (validate,) = only(objects, "ValidatingWebhookConfiguration")["webhooks"]
    assert (
        validate["namespaceSelector"] == {"matchExpressions": [watched]} and validate["timeoutSeconds"] == 2
    )
    for inject in only(objects, "MutatingWebhookConfiguration")["webhooks"]:
        assert watched in inject["namespaceSelector"]["matchExpressions"]
        assert len(inject["namespaceSelector"]["matchExpressions"]) == 3
        assert inject["timeoutSeconds"] == 2


def test_peering_runs_several_replicas_one_active(kube: Any) -> None:
    objects = render(kube, "--set", "operator.peering.enabled=true", "--set", "operator.replicas=2")
    deployment = only(objects, "Deployment")
    assert deployment["spec"]["replicas"] == 2
    assert deployment["spec"]["strategy"] == {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0},
    }
    container = operator_container(objects)
    assert "--peering=luna-luna-plugins" in container["args"]
    assert {"name": "POD_ID", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}} in container["env"]
    pdb = only(objects, "PodDisruptionBudget")
    assert pdb["spec"] == {"minAvailable": 1, "selector": {"matchLabels": OPERATOR_SELECTOR}}
    peering = only(objects, "ClusterKopfPeering")
    assert (peering["apiVersion"], peering["metadata"]["name"]) == ("kopf.dev/v1", "luna-luna-plugins")
    assert not of_kind(objects, "KopfPeering")

    namespaced = render(
        kube, "--set", "operator.peering.enabled=true", "--set", "operator.namespaces={team-a,team-b}"
    )
    peerings = of_kind(namespaced, "KopfPeering")
    assert [(p["metadata"]["namespace"], p["metadata"]["name"]) for p in peerings] == [
        ("team-a", "luna-luna-plugins"),
        ("team-b", "luna-luna-plugins"),
    ]
    assert not of_kind(namespaced, "ClusterKopfPeering")
    assert not of_kind(namespaced, "PodDisruptionBudget")  # one replica: a budget would block drains
    no_pdb = [
        "--set",
        "operator.peering.enabled=true",
        "--set",
        "operator.replicas=3",
        "--set",
        "operator.pdb.enabled=false",
    ]
    assert not of_kind(render(kube, *no_pdb), "PodDisruptionBudget")
    # without peering: never two operators at once, no peering object
    objects = render(kube)
    assert only(objects, "Deployment")["spec"]["strategy"] == {"type": "Recreate"}
    assert not {obj["kind"] for obj in objects} & {"ClusterKopfPeering", "KopfPeering", "PodDisruptionBudget"}
    assert "env" not in operator_container(objects)


# --- cert-manager -------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def cert_manager_crds(kube: Any) -> bool:
    """cert-manager's Issuer and Certificate CRDs, installed in the test cluster; False when the
    Go module proxy cannot be reached (the cert-manager objects are then only checked by shape)."""
    try:
        info = go_module(CERT_MANAGER)
    except ModuleUnavailableError:
        return False
    assert info["Sum"] == CERT_MANAGER_SUM, f"{CERT_MANAGER} is not the module we pinned: {info['Sum']}"
    crds = Path(info["Dir"]) / "deploy" / "crds"
    install_crds(kube, {name: crds / path for name, path in CERT_MANAGER_CRDS.items()})
    return True


def test_cert_manager_issues_the_certificate_instead_of_helm(
    kube: Any, crd: None, namespace: str, cert_manager_crds: bool
) -> None:
    objects = render(kube, "--set", "webhook.certManager.enabled=true", namespace=namespace)
    assert not of_kind(objects, "Secret")  # cert-manager writes them
    name = "luna-luna-plugins-webhook"
    issuers = {issuer["metadata"]["name"]: issuer for issuer in of_kind(objects, "Issuer")}
    certificates = {cert["metadata"]["name"]: cert for cert in of_kind(objects, "Certificate")}
    for each in (*issuers.values(), *certificates.values()):
        assert each["apiVersion"] == "cert-manager.io/v1"
    # the usual bootstrap: self-signed issuer -> CA certificate -> CA issuer -> serving certificate
    assert issuers[f"{name}-selfsigned"]["spec"] == {"selfSigned": {}}
    ca = certificates[f"{name}-ca"]["spec"]
    assert ca["isCA"] is True and ca["secretName"] == CA_SECRET and ca["duration"] == "87600h"
    assert ca["issuerRef"] == {"name": f"{name}-selfsigned", "kind": "Issuer", "group": "cert-manager.io"}
    assert issuers[name]["spec"] == {"ca": {"secretName": CA_SECRET}}
    spec = certificates[name]["spec"]
    assert spec["secretName"] == SECRET
    assert spec["dnsNames"] == [
        SERVICE,
        f"{SERVICE}.{namespace}",
        f"{SERVICE}.{namespace}.svc",
        f"{SERVICE}.{namespace}.svc.cluster.local",
    ]
    assert spec["issuerRef"] == {"name": name, "kind": "Issuer", "group": "cert-manager.io"}
    assert spec["duration"] == "2160h"
    assert "server auth" in spec["usages"]
    for kind in ("ValidatingWebhookConfiguration", "MutatingWebhookConfiguration"):
        configuration = only(objects, kind)
        # the injector takes ca.crt of the serving certificate's Secret: the CA, which a renewal
        # of the serving certificate does not change
        assert configuration["metadata"]["annotations"] == {
            "cert-manager.io/inject-ca-from": f"{namespace}/{name}"
        }
        assert "caBundle" not in configuration["webhooks"][0]["clientConfig"]
    pod = only(objects, "Deployment")["spec"]["template"]
    assert "checksum/webhook-cert" not in pod["metadata"]["annotations"]
    volumes = {volume["name"]: volume for volume in pod["spec"]["volumes"]}
    assert volumes["webhook-tls"]["secret"]["secretName"] == SECRET

    # an issuer of the user's: no Issuer of ours
    mine = render(
        kube,
        "--set",
        "webhook.certManager.enabled=true",
        "--set",
        "webhook.certManager.issuerRef.name=corp-ca",
        "--set",
        "webhook.certManager.issuerRef.kind=ClusterIssuer",
        namespace=namespace,
    )
    assert not of_kind(mine, "Issuer")
    assert only(mine, "Certificate")["spec"]["issuerRef"] == {
        "name": "corp-ca",
        "kind": "ClusterIssuer",
        "group": "cert-manager.io",
    }

    restricted_namespace(kube, namespace)
    checked = objects
    if not cert_manager_crds:
        warnings.warn(
            f"{CERT_MANAGER} unavailable: Issuer and Certificate checked by shape only", stacklevel=1
        )
        checked = [obj for obj in objects if obj["kind"] not in CERT_MANAGER_KINDS]
    stderr = dry_run(kube, namespace, checked)
    assert "Warning" not in stderr, stderr


# --- installed: what the ServiceAccounts may and may not do -------------------------------------


@pytest.fixture
def second_namespace(kube: Any) -> Iterator[str]:
    name = f"t-chart-sidecars-{uuid.uuid4().hex[:6]}"
    kube.kubectl("create", "namespace", name)
    try:
        yield name
    finally:
        kube.kubectl("delete", "namespace", name, "--wait=false", "--ignore-not-found", check=False)


def can_i(account_kube: Any, verb: str, resource: str, namespace: str) -> bool:
    result = account_kube.kubectl("auth", "can-i", verb, resource, "-n", namespace, check=False)
    return str(result.stdout).strip() == "yes"


def refused(result: subprocess.CompletedProcess[str]) -> bool:
    """The API server answered 403 (kubectl words it "Forbidden" or "... is forbidden: ...")."""
    return result.returncode != 0 and "forbidden" in result.stderr.lower()


def test_service_accounts_get_what_they_use_and_nothing_more(
    kube: Any, crd: None, namespace: str, second_namespace: str, tmp_path: Path
) -> None:
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
        f"sidecar.namespaces={{{second_namespace}}}",
        "--set",
        "operator.peering.enabled=true",
    )
    try:
        for directory in ("operator", "sidecar", "other"):
            (tmp_path / directory).mkdir()
        account = f"{release}-luna-plugins"
        operator = service_account_kube(kube, namespace, account, tmp_path / "operator")
        sidecar = service_account_kube(kube, namespace, f"{account}-sidecar", tmp_path / "sidecar")
        other = service_account_kube(kube, second_namespace, f"{account}-sidecar", tmp_path / "other")
        (tmp_path / "checker").mkdir()
        checker = service_account_kube(kube, namespace, f"{account}-check", tmp_path / "checker")
        ns = namespace
        cluster = Cluster(kube, ns)

        allowed = [
            (operator, "watch", "lunaplugins.luna.dev"),
            (operator, "patch", "lunaplugins.luna.dev"),
            (operator, "create", "configmaps"),
            (operator, "update", "configmaps"),
            (operator, "create", "events"),
            # settings from Secrets: listed and watched by label, the settings Secret written
            (operator, "list", "secrets"),
            (operator, "watch", "secrets"),
            (operator, "create", "secrets"),
            (operator, "update", "secrets"),
            (operator, "create", "kopfpeerings.kopf.dev"),
            (operator, "patch", f"kopfpeerings.kopf.dev/{release}-luna-plugins"),
            # its own webhook CA: its Secret and the chart's configurations, by name
            (operator, "get", f"secrets/{release}-luna-plugins-webhook-ca"),
            (operator, "patch", f"secrets/{release}-luna-plugins-webhook-ca"),
            (
                operator,
                "patch",
                f"validatingwebhookconfigurations.admissionregistration.k8s.io/{release}-luna-plugins",
            ),
            (checker, "create", "lunaplugins.luna.dev"),
            (checker, "list", "deployments.apps"),
            (checker, "list", "pods"),
            (checker, "get", "customresourcedefinitions.apiextensions.k8s.io/lunaplugins.luna.dev"),
            (sidecar, "watch", "configmaps"),
            (sidecar, "create", "lunapluginruntimes.luna.dev"),
            (sidecar, "delete", "lunapluginruntimes.luna.dev"),
        ]
        denied = [
            (operator, "delete", "configmaps"),
            (operator, "create", "lunaplugins.luna.dev"),
            (operator, "delete", "lunaplugins.luna.dev"),
            (operator, "get", "secrets"),
            (operator, "delete", "secrets"),
            (operator, "patch", "secrets"),
            (operator, "create", "pods"),
            (operator, "patch", "kopfpeerings.kopf.dev/someone-else"),
            (operator, "delete", "kopfpeerings.kopf.dev"),
            (operator, "patch", "mutatingwebhookconfigurations.admissionregistration.k8s.io"),
            (operator, "patch", "validatingwebhookconfigurations.admissionregistration.k8s.io/someone-else"),
            (operator, "patch", "secrets/someone-else"),
            (checker, "delete", "lunaplugins.luna.dev"),
            (checker, "update", "lunaplugins.luna.dev"),
            (checker, "get", "secrets"),
            (checker, "create", "configmaps"),
            (checker, "create", "pods"),
            (checker, "get", "customresourcedefinitions.apiextensions.k8s.io/other.example.com"),
            (sidecar, "create", "configmaps"),
            (sidecar, "list", "lunaplugins.luna.dev"),
            (sidecar, "get", "secrets"),
            (sidecar, "list", "lunapluginruntimes.luna.dev"),
        ]
        for account, verb, resource in allowed:
            assert can_i(account, verb, resource, ns), (
                f"{account.kubeconfig.parent.name} cannot {verb} {resource}"
            )
        for account, verb, resource in denied:
            assert not can_i(account, verb, resource, ns), (
                f"{account.kubeconfig.parent.name} may {verb} {resource}"
            )
        # the sidecar account of sidecar.namespaces works there, and only there
        assert can_i(other, "list", "configmaps", second_namespace)
        assert can_i(other, "patch", "lunapluginruntimes.luna.dev", second_namespace)
        assert not can_i(other, "list", "configmaps", ns)
        assert not can_i(sidecar, "list", "configmaps", second_namespace)

        # real calls, not only the authorizer's opinion
        kube.kubectl("create", "configmap", "probe", "-n", ns)
        assert refused(operator.kubectl("delete", "configmap", "probe", "-n", ns, check=False))
        # a Secret by name (here helm's record of the release): the operator never reads one
        release_record = f"sh.helm.release.v1.{release}.v1"
        assert refused(operator.kubectl("get", "secret", release_record, "-n", ns, check=False))
        assert refused(
            operator.kubectl("apply", "-f", "-", input=plugin_manifest("nope", ns, route_code()), check=False)
        )
        assert refused(sidecar.kubectl("create", "configmap", "nope", "-n", ns, check=False))
        assert refused(sidecar.kubectl("get", "lunaplugins", "-n", ns, check=False))
        assert refused(sidecar.kubectl("get", "secrets", "-n", ns, check=False))
        assert refused(other.kubectl("get", "configmaps", "-n", ns, check=False))
        operator.kubectl("get", "lunaplugins", "-n", ns)
        operator.kubectl("create", "configmap", "made-by-operator", "-n", ns)
        assert (
            sidecar.kubectl("get", "configmap", "probe", "-n", ns, "-o", "name").stdout.strip()
            == "configmap/probe"
        )
        assert other.kubectl("get", "configmaps", "-n", second_namespace).returncode == 0

        # the peering verbs suffice: a real operator with --peering under the operator's account
        # joins the chart's KopfPeering and handles plugins
        peering = f"{release}-luna-plugins"
        running = start_operator(operator, ns, tmp_path, "--peering", peering)
        try:

            def peers() -> dict[str, Any]:
                body = cluster.get("kopfpeering", peering) or {}
                return body.get("status") or {}

            wait_for(peers, timeout=30, what="the operator to join the chart's KopfPeering")
            cluster.apply(plugin_manifest("hello", ns, route_code()))
            cluster.wait_phase("hello", "Ready", timeout=30)
            kube.kubectl("delete", "lunaplugin", "hello", "-n", ns, "--timeout=30s")
        finally:
            running.stop()
        for sign in ("Forbidden", " 403", "Not enough permissions"):
            assert sign not in running.log(), running.log()[-3000:]
    finally:
        kube.helm("uninstall", release, "--namespace", namespace, check=False)


# --- the chart's webhook configurations, served by a local operator -----------------------------


def local_configuration(configuration: dict[str, Any], port: int, ca: bytes) -> dict[str, Any]:
    """``configuration`` with only each webhook's clientConfig replaced: the local operator."""
    local: dict[str, Any] = json.loads(json.dumps(configuration))
    for webhook in local["webhooks"]:
        path = webhook["clientConfig"]["service"]["path"]
        webhook["clientConfig"] = {
            "url": f"https://{HOST}:{port}{path}",
            "caBundle": base64.b64encode(ca).decode(),
        }
    return local


@pytest.mark.compat
def test_the_charts_webhooks_inject_and_validate(
    kube: Any, crd: None, namespace: str, tmp_path: Path
) -> None:
    if kube.state_dir is None:
        pytest.skip("the API server calls the webhook on 127.0.0.1: needs the local control plane")
    ns = namespace
    cluster = Cluster(kube, ns)
    # the operator watches only this namespace, so the chart limits the webhooks to it: nothing
    # else in the cluster is sent to them while this test runs
    objects = render(kube, "--set", f"operator.namespaces={{{ns}}}", namespace=ns)
    template = tmp_path / "sidecar.yaml"
    template.write_text(only(objects, "ConfigMap")["data"]["sidecar.yaml"])
    cert, key = self_signed(tmp_path / "certs", HOST)
    port = free_port()
    configurations = [
        local_configuration(only(objects, kind), port, cert.read_bytes())
        for kind in ("ValidatingWebhookConfiguration", "MutatingWebhookConfiguration")
    ]
    wait_for(lambda: cluster.get("serviceaccount", "default"), timeout=60, what="the default ServiceAccount")
    operator = None
    try:
        kube.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(configurations))
        operator = start_operator(
            kube,
            ns,
            tmp_path,
            "--webhook",
            "--webhook-host",
            HOST,
            "--webhook-port",
            str(port),
            "--webhook-cert",
            str(cert),
            "--webhook-key",
            str(key),
            "--webhook-managed",
            "false",
            "--inject",
            "--inject-template",
            str(template),
        )
        running = operator
        service = {"luna.dev/service": "handlers"}
        asking = {"luna.dev/inject": "true"}

        def injected() -> bool:
            assert running.process.poll() is None, running.log()[-3000:]
            probe = pod_manifest("probe", ns, service, "handlers", labels=asking)
            result = kube.kubectl(
                "create", "--dry-run=server", "-o", "json", "-f", "-", input=probe, check=False
            )
            return result.returncode == 0 and len(json.loads(result.stdout)["spec"]["containers"]) == 2

        wait_for(injected, timeout=60, what="the chart's mutating webhook to reach the operator")

        kube.kubectl(
            "create", "-f", "-", input=pod_manifest("with-sidecar", ns, service, "handlers", labels=asking)
        )
        pod = cluster.get("pod", "with-sidecar")
        assert pod is not None
        handlers, sidecar = pod["spec"]["containers"]
        wanted = yaml.safe_load(template.read_text())
        assert handlers["name"] == "handlers"
        assert sidecar["name"] == "luna-sidecar" and sidecar["image"] == wanted["container"]["image"]
        assert sidecar["args"] == ["sidecar"]
        env = {item["name"]: item.get("value") for item in sidecar["env"]}
        assert env["LUNA_SIDECAR_SERVICE"] == "handlers"
        assert (
            sidecar["securityContext"] | wanted["container"]["securityContext"] == sidecar["securityContext"]
        )
        assert {"name": "luna-sidecar-tmp", "mountPath": "/tmp"} in sidecar["volumeMounts"]
        volumes = {volume["name"]: volume for volume in pod["spec"]["volumes"]}
        assert volumes["luna-sidecar-tmp"] == {"name": "luna-sidecar-tmp", "emptyDir": {"sizeLimit": "64Mi"}}
        annotations = pod["metadata"]["annotations"]
        assert annotations["luna.dev/injected"] == "luna-sidecar"
        assert {key: annotations[key] for key in wanted["annotations"]} == wanted["annotations"]
        assert pod["metadata"]["labels"]["luna.dev/sidecar"] == "true"

        # not labelled, only annotated (the webhook is no longer called for it), or labelled as the
        # operator's own pods are: stored as sent
        kube.kubectl("create", "-f", "-", input=pod_manifest("plain", ns, {}, "handlers"))
        kube.kubectl(
            "create", "-f", "-", input=pod_manifest("annotated", ns, {"luna.dev/inject": "true"}, "handlers")
        )
        kube.kubectl(
            "create",
            "-f",
            "-",
            input=pod_manifest(
                "exempt", ns, {"luna.dev/inject": "true"}, "handlers", labels={"luna.dev/inject": "disabled"}
            ),
        )
        for name in ("plain", "annotated", "exempt"):
            stored = cluster.get("pod", name)
            assert stored is not None
            assert [c["name"] for c in stored["spec"]["containers"]] == ["handlers"], name
            assert "luna-sidecar-tmp" not in [v["name"] for v in stored["spec"].get("volumes") or []]
            assert "luna.dev/injected" not in (stored["metadata"].get("annotations") or {})
            assert "luna.dev/sidecar" not in (stored["metadata"].get("labels") or {})

        # the validating configuration: an invalid plugin is refused at apply time
        bad = cluster.apply(plugin_manifest("broken", ns, "def f(:\n"), check=False)
        assert bad.returncode != 0 and "denied the request" in bad.stderr, bad.stderr
        assert "syntax error" in bad.stderr
        assert cluster.get("lunaplugin", "broken") is None
        cluster.apply(plugin_manifest("fine", ns, route_code()))
        cluster.wait_phase("fine", "Ready", timeout=30)
    finally:
        for kind, configuration in zip(
            ("validatingwebhookconfiguration", "mutatingwebhookconfiguration"), configurations, strict=True
        ):
            kube.kubectl("delete", kind, configuration["metadata"]["name"], "--ignore-not-found", check=False)
        kube.kubectl("delete", "lunaplugins", "--all", "-n", ns, "--timeout=30s", check=False)
        if operator is not None:
            operator.stop()
