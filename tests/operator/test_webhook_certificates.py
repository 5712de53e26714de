"""A renewed webhook certificate is served without a restart and no admission call fails.

The real operator serves its webhook from certificate files laid out as the kubelet lays out a
mounted Secret (``..data`` swapped atomically); the real API server calls it through a
configuration with ``failurePolicy: Fail``, so any call that fails the TLS handshake shows as a
refused request. Admission calls run all through each renewal.
"""

from __future__ import annotations

import base64
import datetime
import json
import socket
import ssl
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from luna_operator.pki import KeyPair, issue_serving, make_ca
from luna_operator.webhook_ca import CAState
from tests.support.admission import AdmissionLoad, webhook_failures
from tests.support.operator_harness import Cluster, Operator, plugin_manifest, route_code, start_operator
from tests.support.sidecar_harness import HOST, free_port, wait_for

pytestmark = pytest.mark.kube

DAY = datetime.timedelta(days=1)
CONFIGURATION_NAME = "lunaplugin-cert-test"


class MountedSecret:
    """Files as the kubelet writes a Secret volume: ``name -> ..data/name``, ``..data`` a symlink
    to a timestamped directory that is replaced in one rename."""

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True)
        self.generation = 0

    def write(self, files: dict[str, bytes]) -> None:
        self.generation += 1
        target = self.root / f"..2026_{self.generation:04d}"
        target.mkdir()
        for name, data in files.items():
            (target / name).write_bytes(data)
        staging = self.root / "..data_tmp"
        staging.symlink_to(target.name)
        staging.rename(self.root / "..data")
        for name in files:
            link = self.root / name
            if not link.is_symlink():
                link.symlink_to(f"..data/{name}")

    def serve(self, pair: KeyPair) -> None:
        self.write({"tls.crt": pair.cert, "tls.key": pair.key})


def served_certificate(port: int) -> str:
    """The PEM certificate a fresh TLS handshake gets (no verification: we compare it)."""
    return ssl.get_server_certificate((HOST, port), timeout=5)


def same_certificate(pem: str, pair: KeyPair) -> bool:
    return ssl.PEM_cert_to_DER_cert(pem) == ssl.PEM_cert_to_DER_cert(pair.cert.decode())


def metric(operator: Operator, name: str) -> float | None:
    with urllib.request.urlopen(operator.metrics_url, timeout=5) as answer:
        for line in answer.read().decode().splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
    return None


@pytest.fixture
def configuration(kube: Any, cluster: Cluster) -> Iterator[dict[str, Any]]:
    """A ValidatingWebhookConfiguration for LunaPlugins of the test's namespace that fails closed."""
    name = CONFIGURATION_NAME
    yield {"name": name}
    kube.kubectl("delete", "validatingwebhookconfiguration", name, "--ignore-not-found", check=False)


def register(kube: Any, namespace: str, name: str, port: int, ca: KeyPair | None) -> None:
    body = {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingWebhookConfiguration",
        "metadata": {"name": name},
        "webhooks": [
            {
                "name": f"{name}.luna.dev",
                "clientConfig": {
                    "url": f"https://{HOST}:{port}/lunaplugin",
                    **({"caBundle": base64.b64encode(ca.cert).decode()} if ca else {}),
                },
                "rules": [
                    {
                        "apiGroups": ["luna.dev"],
                        "apiVersions": ["*"],
                        "resources": ["lunaplugins"],
                        "operations": ["CREATE", "UPDATE"],
                    }
                ],
                "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": namespace}},
                "failurePolicy": "Fail",
                "sideEffects": "None",
                "admissionReviewVersions": ["v1"],
                "timeoutSeconds": 5,
            }
        ],
    }
    kube.kubectl("apply", "-f", "-", input=json.dumps(body))


def webhook_operator(kube: Any, namespace: str, workdir: Path, port: int, *certificates: str) -> Operator:
    """The operator serving its webhooks on ``port`` of loopback for a configuration made
    elsewhere (the test's), with its certificates from ``certificates`` (flags)."""
    return start_operator(
        kube,
        namespace,
        workdir,
        *("--webhook", "--webhook-managed=false", "--webhook-host", HOST, "--webhook-port", str(port)),
        *certificates,
    )


def test_a_renewed_certificate_is_served_within_seconds_and_no_call_fails(
    cluster: Cluster, kube: Any, tmp_path: Path, configuration: dict[str, Any]
) -> None:
    if kube.state_dir is None:
        pytest.skip("the API server calls the webhook on 127.0.0.1: needs the local control plane")
    ca = make_ca("luna-plugins test webhook CA", 30 * DAY)
    first, second, third = (issue_serving(ca, [HOST], DAY) for _ in range(3))
    mounted = MountedSecret(tmp_path / "webhook-tls")
    mounted.serve(first)
    port = free_port()
    running = webhook_operator(
        kube,
        cluster.namespace,
        tmp_path,
        port,
        "--webhook-cert",
        str(mounted.root / "tls.crt"),
        "--webhook-key",
        str(mounted.root / "tls.key"),
        "--webhook-cert-check-interval",
        "0.5",
    )
    try:
        register(kube, cluster.namespace, configuration["name"], port, ca)
        bad = plugin_manifest("bad", cluster.namespace, "def f(:\n")
        denied = wait_for(
            # a server-side dry run: an apply that got in before the webhook served would leave the
            # object stored, and the same manifest again would be "unchanged", never admitted again
            lambda: (
                (r := cluster.apply(bad, "--dry-run=server", check=False)).returncode != 0
                and "denied" in r.stderr
                and r
            ),
            timeout=30,
            what="the webhook to deny a broken plugin",
        )
        assert "syntax error" in denied.stderr
        assert same_certificate(served_certificate(port), first)
        assert metric(running, "luna_operator_webhook_certificate_expiry_timestamp_seconds") == pytest.approx(
            first.not_after.timestamp()
        )
        failures_before = webhook_failures(kube, CONFIGURATION_NAME)
        pid = running.process.pid

        with AdmissionLoad(kube, plugin_manifest("probe", cluster.namespace, route_code())) as load:
            load.wait_calls(3)
            mounted.serve(second)
            wait_for(
                lambda: same_certificate(served_certificate(port), second),
                timeout=30,
                what="the renewed certificate to be served",
            )
            load.wait_calls(3)

            # hostile: a certificate with another certificate's key, then garbage, then nothing:
            # the last good pair keeps being served
            mounted.write({"tls.crt": third.cert, "tls.key": second.key})
            wait_for(
                lambda: "not serving the changed webhook certificate files" in running.log(),
                timeout=30,
                what="the mismatched pair to be refused",
            )
            assert same_certificate(served_certificate(port), second)
            mounted.write({"tls.crt": b"-----BEGIN CERTIFICATE-----\nAAAA\n", "tls.key": b"\x00" * 64})
            load.wait_calls(2)
            assert same_certificate(served_certificate(port), second)
            mounted.write({})
            load.wait_calls(2)
            assert same_certificate(served_certificate(port), second)

            mounted.serve(third)
            wait_for(
                lambda: same_certificate(served_certificate(port), third),
                timeout=30,
                what="the next good certificate to be served",
            )
            load.wait_calls(3)

        assert load.failures == [], load.failures[:3]
        assert load.calls >= 16
        assert running.process.pid == pid and running.process.poll() is None
        assert webhook_failures(kube, CONFIGURATION_NAME) == failures_before
        assert metric(running, "luna_operator_webhook_certificate_reloads_total") == 2
        assert metric(running, "luna_operator_webhook_certificate_expiry_timestamp_seconds") == pytest.approx(
            third.not_after.timestamp()
        )
        still = cluster.apply(bad, check=False)
        assert still.returncode != 0 and "syntax error" in still.stderr
    finally:
        running.stop()


def secret_state(kube: Any, namespace: str, name: str) -> CAState:
    found = json.loads(kube.kubectl("get", "secret", name, "-n", namespace, "-o", "json").stdout)
    return CAState.from_secret(found.get("data"))


def configuration_bundles(kube: Any, name: str) -> list[str]:
    found = json.loads(kube.kubectl("get", "validatingwebhookconfiguration", name, "-o", "json").stdout)
    return [webhook["clientConfig"].get("caBundle", "") for webhook in found["webhooks"]]


def verifies(port: int, bundle_b64: str) -> bool:
    """Whether a client trusting ``bundle_b64`` (as the API server does) accepts the server."""
    context = ssl.create_default_context(cadata=base64.b64decode(bundle_b64).decode())
    try:
        with socket.create_connection((HOST, port), timeout=5) as raw:
            with context.wrap_socket(raw, server_hostname=HOST):
                return True
    except ssl.SSLError:
        return False


def test_the_operators_own_ca_rotates_with_overlap_and_no_call_fails(
    cluster: Cluster, kube: Any, tmp_path: Path, configuration: dict[str, Any]
) -> None:
    if kube.state_dir is None:
        pytest.skip("the API server calls the webhook on 127.0.0.1: needs the local control plane")
    ns, name, secret = cluster.namespace, configuration["name"], "webhook-ca"
    kube.kubectl("create", "secret", "generic", secret, "-n", ns)
    port = free_port()
    register(kube, ns, name, port, None)  # no caBundle: nothing is trusted until the operator says
    running = webhook_operator(
        kube,
        ns,
        tmp_path,
        port,
        "--webhook-certs-dir",
        str(tmp_path / "serving"),
        "--webhook-ca-secret",
        f"{ns}/{secret}",
        "--webhook-dns-names",
        HOST,
        "--webhook-configurations",
        f"validating/{name}",
        # a CA lives 30 s: replaced after 20 s, signing 4 s later, the old one expiring at 30 s
        "--webhook-ca-validity",
        "30",
        "--webhook-ca-overlap",
        "4",
        "--webhook-serving-validity",
        "9",
        "--webhook-ca-check-interval",
        "0.5",
    )
    try:
        bad = plugin_manifest("bad", ns, "def f(:\n")
        wait_for(
            lambda: (
                (r := cluster.apply(bad, "--dry-run=server", check=False)).returncode != 0
                and "syntax error" in r.stderr
            ),
            timeout=60,
            what="the webhook to be trusted through the operator's CA and deny a broken plugin",
        )
        first = secret_state(kube, ns, secret)
        assert first.signer is not None
        failures_before = webhook_failures(kube, CONFIGURATION_NAME)
        pid = running.process.pid
        signers: list[bytes] = []

        def rotated_and_old_dropped() -> bool:
            state = secret_state(kube, ns, secret)
            assert state.signer is not None
            if not signers or signers[-1] != state.signer.cert:
                signers.append(state.signer.cert)
            # a second signer, and the CA it replaced gone from the bundle once expired
            return len(signers) >= 2 and first.signer is not None and first.signer.cert not in state.bundle()

        with AdmissionLoad(kube, plugin_manifest("probe", cluster.namespace, route_code())) as load:
            wait_for(rotated_and_old_dropped, timeout=120, what="a CA rotation and the old CA's expiry")
            load.wait_calls(3)
        assert load.failures == [], load.failures[:3]
        assert load.calls >= 10
        assert webhook_failures(kube, CONFIGURATION_NAME) == failures_before
        state = secret_state(kube, ns, secret)
        (bundle,) = configuration_bundles(kube, name)
        assert base64.b64decode(bundle) == state.bundle()
        assert verifies(port, bundle)
        assert running.process.pid == pid and running.process.poll() is None
        expiry = metric(running, "luna_operator_webhook_ca_expiry_timestamp_seconds")
        assert state.signer is not None and expiry == pytest.approx(state.signer.not_after.timestamp())

        # a sync that empties the bundle is put right
        kube.kubectl(
            "patch",
            "validatingwebhookconfiguration",
            name,
            "--type=json",
            "-p",
            '[{"op": "remove", "path": "/webhooks/0/clientConfig/caBundle"}]',
        )
        wait_for(lambda: all(configuration_bundles(kube, name)), timeout=30, what="the bundle to be restored")

        # hostile: a Secret someone else rewrote is reported and never overwritten
        kube.kubectl("patch", "secret", secret, "-n", ns, "-p", '{"data": {"ca.crt": "Z2FyYmFnZQ=="}}')
        wait_for(
            lambda: "keeping the webhook CA failed" in running.log(),
            timeout=30,
            what="the unreadable Secret to be reported",
        )
        raw = json.loads(kube.kubectl("get", "secret", secret, "-n", ns, "-o", "json").stdout)["data"]
        assert raw["ca.crt"] == "Z2FyYmFnZQ=="
        (still,) = configuration_bundles(kube, name)
        assert verifies(port, still)
        refused = cluster.apply(bad, check=False)
        assert refused.returncode != 0 and "syntax error" in refused.stderr
    finally:
        running.stop()
