"""The sidecar injection webhook against the real API server: Pods created with `kubectl create`.

No kubelet runs, so Pods never start: what the API server stored after the admission chain is
what we check.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.operator_harness import (
    Cluster,
    Operator,
    pod_manifest,
    start_operator,
    start_webhook_operator,
)
from tests.support.sidecar_harness import free_port, wait_for

pytestmark = pytest.mark.kube

CONFIGURATION = "lunaplugins.luna.dev"
TOKEN_PATH = "/var/run/secrets/kubernetes.io/serviceaccount"

# shaped like the chart's sidecar container, volumes and pod annotations
TEMPLATE: dict[str, Any] = {
    "container": {
        "name": "luna-sidecar",
        "image": "luna-plugins:test",
        "args": ["sidecar"],
        "env": [
            {"name": "LUNA_SIDECAR_SERVICE", "value": "handlers"},
            {
                "name": "LUNA_SIDECAR_NAMESPACE",
                "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}},
            },
            {"name": "LUNA_SIDECAR_POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        ],
        "ports": [
            {"name": "plugin-routes", "containerPort": 8080, "protocol": "TCP"},
            {"name": "plugin-metrics", "containerPort": 9100, "protocol": "TCP"},
        ],
        "readinessProbe": {"httpGet": {"path": "/readyz", "port": "plugin-metrics"}, "periodSeconds": 5},
        "volumeMounts": [{"name": "luna-sidecar-tmp", "mountPath": "/tmp"}],
    },
    "volumes": [{"name": "luna-sidecar-tmp", "emptyDir": {}}],
    "annotations": {
        "prometheus.io/scrape": "true",
        "prometheus.io/port": "9100",
        "prometheus.io/path": "/metrics",
    },
    "labels": {"app.kubernetes.io/part-of": "luna-plugins"},
}


def create(cluster: Cluster, manifest: str, *extra: str, check: bool = True) -> Any:
    return cluster.kube.kubectl(
        "create", "-n", cluster.namespace, *extra, "-f", "-", input=manifest, check=check
    )


def wait_until_injecting(cluster: Cluster, operator: Operator) -> None:
    """Server-side dry runs go through the webhooks: wait until one comes back injected."""
    probe = pod_manifest("probe", cluster.namespace, {"luna.dev/inject": "true"})

    def injected() -> bool:
        if operator.process.poll() is not None:
            raise AssertionError(f"operator exited:\n{operator.log()[-3000:]}")
        result = create(cluster, probe, "--dry-run=server", "-o", "json", check=False)
        return result.returncode == 0 and len(json.loads(result.stdout)["spec"]["containers"]) == 2

    wait_for(injected, timeout=60, what="the injection webhook to be active")


def delete_configurations(kube: Any) -> None:
    for kind in ("validatingwebhookconfiguration", "mutatingwebhookconfiguration"):
        kube.kubectl("delete", kind, CONFIGURATION, "--ignore-not-found", check=False)


def mutating_configuration(
    name: str, url: str, cert: Path, namespace: str, *, only: dict[str, str] | None = None
) -> dict[str, Any]:
    """A MutatingWebhookConfiguration made elsewhere (as the chart does) sending Pod creations of
    ``namespace`` (labelled ``only``, if given) to ``url``, failing open."""
    webhook: dict[str, Any] = {
        "name": "inject-sidecar.luna.dev",
        "clientConfig": {"url": url, "caBundle": base64.b64encode(cert.read_bytes()).decode()},
        "rules": [
            {"apiGroups": [""], "apiVersions": ["v1"], "resources": ["pods"], "operations": ["CREATE"]}
        ],
        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": namespace}},
        "failurePolicy": "Ignore",
        "sideEffects": "None",
        "admissionReviewVersions": ["v1"],
    }
    if only:
        webhook["objectSelector"] = {"matchLabels": only}
    return {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "MutatingWebhookConfiguration",
        "metadata": {"name": name},
        "webhooks": [webhook],
    }


@pytest.fixture
def template_file(tmp_path: Path) -> Path:
    path = tmp_path / "inject.yaml"
    path.write_text(yaml.safe_dump(TEMPLATE))
    return path


@pytest.fixture
def ready_namespace(cluster: Cluster, kube: Any) -> Cluster:
    """Pods are admitted only once the controller manager made the `default` ServiceAccount."""
    if kube.state_dir is None:
        pytest.skip("the webhook listens on 127.0.0.1, which an external cluster's API server cannot reach")
    wait_for(
        lambda: cluster.get("serviceaccount", "default") is not None,
        timeout=60,
        what="the default ServiceAccount",
    )
    return cluster


@pytest.fixture
def injecting(ready_namespace: Cluster, kube: Any, tmp_path: Path, template_file: Path) -> Iterator[Operator]:
    """A local operator serving and registering (kopf-managed) both webhooks, injection on."""
    try:
        running = start_operator(
            kube,
            ready_namespace.namespace,
            tmp_path,
            "--webhook",
            "--webhook-port",
            str(free_port()),
            "--webhook-certs-dir",
            str(tmp_path / "certs"),
            "--inject",
            "--inject-template",
            str(template_file),
        )
        try:
            yield running
        finally:
            running.stop()
    finally:
        delete_configurations(kube)


def test_pods_asking_for_the_sidecar_get_it(ready_namespace: Cluster, injecting: Operator) -> None:
    cluster = ready_namespace
    ns = cluster.namespace
    wait_until_injecting(cluster, injecting)
    mutating = json.loads(
        cluster.kube.kubectl("get", "mutatingwebhookconfiguration", CONFIGURATION, "-o", "json").stdout
    )
    (webhook,) = mutating["webhooks"]
    assert webhook["clientConfig"]["url"].endswith("/inject-sidecar") and webhook["failurePolicy"] == "Ignore"
    assert webhook["rules"][0]["resources"] == ["pods"] and webhook["rules"][0]["operations"] == ["CREATE"]

    create(cluster, pod_manifest("billing", ns, {"luna.dev/inject": "true", "luna.dev/service": "billing"}))
    pod = cluster.get("pod", "billing")
    assert pod is not None
    app, sidecar = pod["spec"]["containers"]
    assert (app["name"], sidecar["name"], sidecar["image"]) == ("app", "luna-sidecar", "luna-plugins:test")
    env = {item["name"]: item for item in sidecar["env"]}
    assert env["LUNA_SIDECAR_SERVICE"] == {"name": "LUNA_SIDECAR_SERVICE", "value": "billing"}
    assert env["LUNA_SIDECAR_NAMESPACE"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.namespace"
    volumes = {volume["name"]: volume for volume in pod["spec"]["volumes"]}
    assert volumes["luna-sidecar-tmp"]["emptyDir"] == {}
    annotations = pod["metadata"]["annotations"]
    assert annotations["luna.dev/injected"] == "luna-sidecar"
    assert {k: annotations[k] for k in TEMPLATE["annotations"]} == TEMPLATE["annotations"]
    assert pod["metadata"]["labels"]["app.kubernetes.io/part-of"] == "luna-plugins"
    # the ServiceAccount admission mounted the token in `app` before us: the sidecar shares it
    (app_token,) = [m for m in app["volumeMounts"] if m["mountPath"] == TOKEN_PATH]
    (sidecar_token,) = [m for m in sidecar["volumeMounts"] if m["mountPath"] == TOKEN_PATH]
    assert sidecar_token == app_token and app_token["name"] in volumes
    assert "/tmp" in [m["mountPath"] for m in sidecar["volumeMounts"]]
    assert "injected sidecar 'luna-sidecar' into pod " + f"{ns}/billing (service billing)" in injecting.log()

    # generateName, no namespace in the manifest: the API server fills it in before admission
    generated = {"metadata": {"generateName": "gen-", "annotations": {"luna.dev/inject": "true"}}}
    made = create(cluster, json.dumps({**json.loads(pod_manifest("", ns, {})), **generated}), "-o", "json")
    made_pod = json.loads(made.stdout)
    assert [c["name"] for c in made_pod["spec"]["containers"]] == ["app", "luna-sidecar"]
    assert f"into pod {ns}/gen-" in injecting.log()

    create(cluster, pod_manifest("plain", ns, {"other": "x"}))
    plain = cluster.get("pod", "plain")
    assert plain is not None and [c["name"] for c in plain["spec"]["containers"]] == ["app"]
    assert "luna.dev/injected" not in plain["metadata"]["annotations"]
    assert "prometheus.io/scrape" not in plain["metadata"]["annotations"]

    create(cluster, pod_manifest("own", ns, {"luna.dev/inject": "true"}, "app", "luna-sidecar"))
    own = cluster.get("pod", "own")
    assert own is not None
    assert [(c["name"], c["image"]) for c in own["spec"]["containers"]] == [
        ("app", "app:1"),
        ("luna-sidecar", "luna-sidecar:1"),
    ]
    assert "luna.dev/injected" not in own["metadata"]["annotations"]

    bad = pod_manifest("bad", ns, {"luna.dev/inject": "true", "luna.dev/service": "Bad_Name"})
    denied = create(cluster, bad, check=False)
    assert denied.returncode != 0 and "denied the request" in denied.stderr
    assert "luna.dev/service='Bad_Name' is not a valid service name" in denied.stderr
    assert cluster.get("pod", "bad") is None

    on_host = json.loads(pod_manifest("on-host", ns, {"luna.dev/inject": "true"}))
    on_host["spec"]["hostNetwork"] = True
    denied = create(cluster, json.dumps(on_host), check=False)
    assert denied.returncode != 0 and "hostNetwork: true" in denied.stderr, denied.stderr
    assert cluster.get("pod", "on-host") is None


def test_unmanaged_webhook_serves_a_configuration_made_elsewhere(
    ready_namespace: Cluster, kube: Any, tmp_path: Path, template_file: Path
) -> None:
    """With --webhook-managed false nothing is registered; a configuration made by someone else
    (as the chart does) reaches the operator at /inject-sidecar."""
    cluster = ready_namespace
    ns = cluster.namespace
    own_name = f"luna-test-{ns}"
    running, url, cert = start_webhook_operator(
        kube, ns, tmp_path, "--inject", "--inject-template", str(template_file)
    )
    try:
        configuration = mutating_configuration(own_name, f"{url}/inject-sidecar", cert, ns)
        kube.kubectl("apply", "-f", "-", input=json.dumps(configuration))
        wait_until_injecting(cluster, running)
        create(cluster, pod_manifest("orders", ns, {"luna.dev/inject": "true", "luna.dev/service": "orders"}))
        pod = cluster.get("pod", "orders")
        assert pod is not None
        env = {item["name"]: item.get("value") for item in pod["spec"]["containers"][-1]["env"]}
        assert env["LUNA_SIDECAR_SERVICE"] == "orders"
        for kind in ("validatingwebhookconfiguration", "mutatingwebhookconfiguration"):
            found = kube.kubectl("get", kind, CONFIGURATION, check=False)
            assert found.returncode != 0 and "NotFound" in found.stderr
    finally:
        running.stop()
        kube.kubectl("delete", "mutatingwebhookconfiguration", own_name, "--ignore-not-found", check=False)
        delete_configurations(kube)


def test_a_pod_created_while_the_operator_is_down_is_reported_once_it_is_back(
    ready_namespace: Cluster, kube: Any, tmp_path: Path, template_file: Path
) -> None:
    """The injection webhook fails open: a labelled Pod created while no operator answers starts
    without the sidecar. The operator, once back, finds it: a Warning Event on the Pod and
    luna_operator_pods_missing_sidecar; a Pod injected after that is not reported."""
    cluster = ready_namespace
    ns = cluster.namespace
    own_name = f"luna-test-{ns}"
    port, certs = free_port(), tmp_path / "certs"
    asks = {"luna.dev/inject": "true"}

    def operator(*extra: str) -> Operator:
        return start_operator(
            kube, ns, tmp_path, "--webhook", "--webhook-managed", "false", "--webhook-port", str(port),
            "--webhook-certs-dir", str(certs), "--inject", "--inject-template", str(template_file), *extra,
        )  # fmt: skip

    first = operator("--injection-audit-interval", "0")
    try:
        wait_for((certs / "tls.crt").exists, what="the operator's webhook certificate")
        configuration = mutating_configuration(
            own_name, f"https://127.0.0.1:{port}/inject-sidecar", certs / "tls.crt", ns, only=asks
        )
        kube.kubectl("apply", "-f", "-", input=json.dumps(configuration))
        probe = pod_manifest("probe", ns, {}, labels=asks)

        def injected() -> bool:
            result = create(cluster, probe, "--dry-run=server", "-o", "json", check=False)
            return result.returncode == 0 and len(json.loads(result.stdout)["spec"]["containers"]) == 2

        wait_for(injected, timeout=60, what="the injection webhook to be active")
        assert first.stop() == 0

        create(cluster, pod_manifest("during-restart", ns, {}, labels=asks))  # admitted, fail open
        missed = cluster.get("pod", "during-restart")
        assert missed is not None and [c["name"] for c in missed["spec"]["containers"]] == ["app"]

        back = operator("--injection-audit-interval", "1")
        try:
            wait_for(injected, timeout=60, what="the injection webhook to answer again")
            create(cluster, pod_manifest("after", ns, {}, labels=asks))
            gauge = f'luna_operator_pods_missing_sidecar{{luna_namespace="{ns}",reason="not-injected"}} 1.0'

            def reported() -> bool:
                import urllib.request

                with urllib.request.urlopen(back.metrics_url, timeout=5) as response:
                    return gauge in response.read().decode()

            wait_for(reported, timeout=60, what="the operator to count the pod without its sidecar")
            events = json.loads(
                kube.kubectl(
                    "get", "events", "-n", ns, "--field-selector", "reason=SidecarMissing", "-o", "json"
                ).stdout
            )["items"]
            assert [(e["involvedObject"]["name"], e["type"]) for e in events] == [
                ("during-restart", "Warning")
            ]
            assert "rollout restart" in events[0]["message"]
            after = cluster.get("pod", "after")
            assert after is not None and len(after["spec"]["containers"]) == 2
        finally:
            back.stop()
    finally:
        if first.process.poll() is None:
            first.stop()
        kube.kubectl("delete", "mutatingwebhookconfiguration", own_name, "--ignore-not-found", check=False)
