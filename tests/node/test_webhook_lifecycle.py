"""The admission webhook's life on real pods, as platform teams run it: `helm install --wait`
returns only once a broken LunaPlugin is refused through the Service, `helm test` passes,
`helm uninstall` leaves nothing, every time; certificates renew (the operator's own CA, and a
mounted Secret that changes) while admission calls run, and none of them fails."""

from __future__ import annotations

import base64
import datetime
import json
import ssl
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import yaml

from luna_operator.pki import KeyPair, issue_serving, make_ca
from luna_operator.webhook_ca import CAState
from tests.node.conftest import NodeCluster
from tests.node.workload import CHART, RELEASE, lunaplugin
from tests.support.admission import AdmissionLoad, webhook_failures
from tests.support.chart import fill_ca_bundles
from tests.support.sidecar_harness import wait_for

NAMESPACED = "deployments,jobs,serviceaccounts,roles,rolebindings,services,secrets,configmaps"
#: what the controllers make from the chart's objects; the garbage collector takes them after
DEPENDENTS = "replicasets,pods"
SELECTOR = f"app.kubernetes.io/instance={RELEASE}"
CLUSTER_WIDE = (
    "clusterroles,clusterrolebindings,validatingwebhookconfigurations,mutatingwebhookconfigurations,"
    "validatingadmissionpolicies,validatingadmissionpolicybindings"
)
SERVICE = f"{RELEASE}-luna-plugins-webhook"


@pytest.fixture
def namespace(node_cluster: NodeCluster) -> Iterator[str]:
    name = f"luna-hook-{uuid.uuid4().hex[:6]}"
    node_cluster.kube.kubectl("create", "namespace", name)
    try:
        yield name
    finally:
        kube = node_cluster.kube
        kube.helm("uninstall", RELEASE, "--namespace", name, "--wait", "--timeout", "2m", check=False)
        kube.kubectl("delete", "namespace", name, "--wait=false", "--ignore-not-found", check=False)


def helm_install(cluster: NodeCluster, namespace: str, *values: str) -> None:
    """`helm install --wait`, as a user runs it: no test helper waits for anything afterwards."""
    cluster.kube.helm(
        "install", RELEASE, str(CHART), "--namespace", namespace, *cluster.image_values(), *values,
        "--wait", "--timeout", "5m", timeout=420,
    )  # fmt: skip


def broken_plugin(namespace: str) -> str:
    body = lunaplugin("broken", "def broken(:\n")
    body["metadata"]["namespace"] = namespace
    return yaml.safe_dump(body)


def fine_plugin(namespace: str) -> str:
    code = "from luna_plugins import BaseBackgroundPlugin\n\n\nclass Probe(BaseBackgroundPlugin):\n    pass\n"
    body = lunaplugin("probe", code)
    body["metadata"]["namespace"] = namespace
    return yaml.safe_dump(body)


def release_objects(kube: Any, namespace: str) -> list[str]:
    selector = f"app.kubernetes.io/instance={RELEASE}"
    found = kube.kubectl("get", NAMESPACED, "-n", namespace, "-l", selector, "-o", "name").stdout.split()
    found += kube.kubectl("get", CLUSTER_WIDE, "-l", selector, "-o", "name").stdout.split()
    found += kube.kubectl("get", "lunaplugins", "-n", namespace, "-o", "name").stdout.split()
    return list(found)


def test_install_serves_admission_before_it_returns_and_uninstall_leaves_nothing_every_time(
    node_cluster: NodeCluster, namespace: str
) -> None:
    kube = node_cluster.kube
    for attempt, values in enumerate([(), ("--set", "demo.enabled=true"), ()]):
        helm_install(node_cluster, namespace, *values)
        # the very first call after `helm install --wait` is refused by our webhook, through the
        # Service (not "failed calling webhook", not admitted)
        refused = kube.kubectl(
            "create", "--dry-run=server", "-f", "-", input=broken_plugin(namespace), check=False
        )
        assert refused.returncode != 0, f"attempt {attempt}: a broken plugin was admitted"
        assert 'admission webhook "lunaplugin.luna.dev" denied the request' in refused.stderr, refused.stderr
        tested = kube.helm("test", RELEASE, "--namespace", namespace, "--timeout", "3m", timeout=240)
        assert "Phase:          Succeeded" in tested.stdout, tested.stdout
        if values:  # the demo's plugins were created with the chart and are reconciled
            names = [name for name in release_objects(kube, namespace) if name.startswith("lunaplugin")]
            assert len(names) == 3, names
        kube.helm("uninstall", RELEASE, "--namespace", namespace, "--wait", "--timeout", "3m", timeout=240)
        assert release_objects(kube, namespace) == [], f"attempt {attempt}"
        wait_for(
            lambda: (
                not kube.kubectl(
                    "get", DEPENDENTS, "-n", namespace, "-l", SELECTOR, "-o", "name"
                ).stdout.split()
            ),
            timeout=120,
            what="the release's pods to be collected",
        )
        # what the operator wrote is owned by the plugins: the garbage collector takes it
        wait_for(
            lambda: (
                not kube.kubectl(
                    "get", "configmaps", "-n", namespace, "-l", "luna.dev/role", "-o", "name"
                ).stdout.split()
            ),
            timeout=120,
            what="the operator's ConfigMaps to be collected",
        )


def ca_state(kube: Any, namespace: str) -> CAState:
    name = f"{RELEASE}-luna-plugins-webhook-ca"
    secret = json.loads(kube.kubectl("get", "secret", name, "-n", namespace, "-o", "json").stdout)
    return CAState.from_secret(secret.get("data"))


def test_the_operators_own_ca_rotates_on_the_node_and_no_admission_call_fails(
    node_cluster: NodeCluster, namespace: str
) -> None:
    kube = node_cluster.kube
    # a CA that lives 90 s: the next one is trusted after 60 s, signs 10 s later; the old one
    # leaves the bundle when it expires
    helm_install(
        node_cluster, namespace,
        "--set", "webhook.operatorCA.caValidity=90s", "--set", "webhook.operatorCA.caOverlap=10s",
        "--set", "webhook.operatorCA.servingValidity=30s", "--set", "webhook.operatorCA.checkInterval=2s",
    )  # fmt: skip
    first = ca_state(kube, namespace).signer
    assert first is not None
    before = webhook_failures(kube, "luna.dev")
    signers: list[bytes] = [first.cert]

    def rotated_and_old_gone() -> bool:
        state = ca_state(kube, namespace)
        assert state.signer is not None
        if state.signer.cert != signers[-1]:
            signers.append(state.signer.cert)
        return len(signers) >= 2 and first.cert not in state.bundle()

    with AdmissionLoad(kube, fine_plugin(namespace)) as load:
        wait_for(rotated_and_old_gone, timeout=240, what="a CA rotation and the old CA's expiry")
        load.wait_calls(5)
    assert load.failures == [], load.failures[:3]
    assert load.calls >= 20
    assert webhook_failures(kube, "luna.dev") == before
    refused = kube.kubectl(
        "create", "--dry-run=server", "-f", "-", input=broken_plugin(namespace), check=False
    )
    assert "denied the request" in refused.stderr, refused.stderr


def same(pem: bytes, pair: KeyPair) -> bool:
    """Whether ``pem`` is the certificate of ``pair``."""
    return ssl.PEM_cert_to_DER_cert(pem.decode()) == ssl.PEM_cert_to_DER_cert(pair.cert.decode())


def test_a_renewed_mounted_certificate_is_served_on_the_node_and_no_admission_call_fails(
    node_cluster: NodeCluster, namespace: str
) -> None:
    """As cert-manager renews a serving certificate: the Secret the operator mounts gets a new
    certificate from the same CA, the kubelet updates the volume some time later, the operator
    serves it from then on; the caBundle never changes."""
    kube = node_cluster.kube
    ca = make_ca("renewal test CA", datetime.timedelta(days=1))
    names = [SERVICE, f"{SERVICE}.{namespace}", f"{SERVICE}.{namespace}.svc"]
    first, second = (issue_serving(ca, names, datetime.timedelta(hours=1)) for _ in range(2))
    secret = f"{RELEASE}-luna-plugins-webhook-tls"

    def files(pair: KeyPair) -> dict[str, bytes]:
        return {"ca.crt": ca.cert, "tls.crt": pair.cert, "tls.key": pair.key}

    helm_install(node_cluster, namespace, "--set", "webhook.certificates=helm")

    def served() -> bytes:
        pod = kube.kubectl(
            "get", "pods", "-n", namespace, "-l", "app.kubernetes.io/component=operator", "-o", "name"
        ).stdout.split()[0]
        # the operator image has no openssl: ask the operator's own Python what it serves
        script = "import ssl; print(ssl.get_server_certificate(('127.0.0.1', 9443)))"
        return kube.kubectl("exec", "-n", namespace, pod, "--", "python3", "-c", script).stdout.encode()

    def serve(pair: KeyPair) -> None:
        patch = json.dumps({"data": {k: base64.b64encode(v).decode() for k, v in files(pair).items()}})
        kube.kubectl("patch", "secret", secret, "-n", namespace, "--type=merge", "-p", patch)

    # set-up, not measured: as cert-manager's first issue, a CA whose key we hold (the chart's
    # Helm-made CA keeps its key to itself) in the Secret and, as its CA injector, in the bundles
    serve(first)
    bundle = base64.b64encode(ca.cert).decode()
    fill_ca_bundles(kube, RELEASE, bundle, op="replace")
    wait_for(lambda: same(served(), first), timeout=240, what="the kubelet's update to be served")
    wait_for(
        lambda: (
            kube.kubectl(
                "create", "--dry-run=server", "-f", "-", input=fine_plugin(namespace), check=False
            ).returncode
            == 0
        ),
        timeout=60,
        what="admission through the new CA",
    )
    before = webhook_failures(kube, "luna.dev")

    with AdmissionLoad(kube, fine_plugin(namespace)) as load:
        load.wait_calls(3)
        serve(second)  # the renewal: same CA, new certificate and key
        wait_for(lambda: same(served(), second), timeout=240, what="the kubelet's update to be served")
        load.wait_calls(5)
    assert load.failures == [], load.failures[:3]
    assert webhook_failures(kube, "luna.dev") == before
