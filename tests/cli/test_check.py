"""`luna-plugins check` against the real API server, run as users run it (the console script).

No kubelet runs here: the chart's operator pods never start, so where a test needs the operator
Ready it marks the chart's own pods Ready (their status, as a kubelet would) and runs the real
operator process on this host, serving its webhook; the chart's ValidatingWebhookConfiguration is
pointed at that process (its URL and caBundle), as the chart points it at the Service.
"""

from __future__ import annotations

import base64
import contextlib
import json
import socket
import ssl
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from luna_operator.certs import self_signed
from tests.support.chart import CHART, NO_KUBELET
from tests.support.operator_harness import CRD, Operator, start_webhook_operator
from tests.support.sidecar_harness import HOST, free_port, sidecar_command, wait_for

pytestmark = pytest.mark.kube

CRDS = ("lunaplugins.luna.dev", "lunapluginruntimes.luna.dev")
WEBHOOK = "lunaplugin.luna.dev"


def check(kube: Any, *args: str, kubeconfig: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*sidecar_command(), "check", "--kubeconfig", str(kubeconfig or kube.kubeconfig), *args],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )


def lines(result: subprocess.CompletedProcess[str]) -> dict[str, str]:
    """Check name -> its whole output line."""
    found = {}
    for line in result.stdout.splitlines():
        name = line[6:].split(":", 1)[0]
        found[name] = line
    assert "Traceback" not in result.stderr, result.stderr
    return found


def apply_crds(kube: Any) -> None:
    kube.kubectl("apply", "-f", str(CRD.parent))
    for name in CRDS:
        kube.kubectl("wait", "--for=condition=Established", f"crd/{name}", "--timeout=60s")


@pytest.fixture
def no_crds(kube: Any) -> Iterator[None]:
    """The cluster without the CRDs (other tests of the session get them back afterwards)."""
    kube.kubectl("delete", "crd", *CRDS, "--ignore-not-found", "--wait", "--timeout=60s")
    try:
        yield
    finally:
        apply_crds(kube)


def test_a_cluster_without_the_crds_fails_at_the_crds(kube: Any, no_crds: None) -> None:
    result = check(kube)
    found = lines(result)
    assert result.returncode == 1, result.stdout + result.stderr
    assert found["api server"].startswith("ok    api server: ")
    for name in CRDS:
        line = found[f"crd {name}"]
        assert line.startswith(f"FAIL  crd {name}: not installed"), line
        assert "kubectl apply --server-side -f crds/" in line
    as_json = json.loads(check(kube, "-o", "json").stdout)
    assert as_json["ok"] is False
    crds = {c["name"]: c for c in as_json["checks"] if c["name"].startswith("crd ")}
    assert not crds["crd lunaplugins.luna.dev"]["ok"] and "crds/" in crds["crd lunaplugins.luna.dev"]["fix"]


def test_bad_kubeconfigs_and_an_unreachable_server_say_so(kube: Any, tmp_path: Path) -> None:
    missing = check(kube, kubeconfig=tmp_path / "nothing")
    assert missing.returncode == 2 and "there is no kubeconfig file" in missing.stderr
    assert "Traceback" not in missing.stderr and not missing.stdout
    no_context = check(kube, "--context", "elsewhere")
    assert no_context.returncode == 2 and "no context 'elsewhere'" in no_context.stderr
    config = yaml.safe_load(kube.kubeconfig.read_text())
    config["clusters"][0]["cluster"]["server"] = f"https://{HOST}:{free_port()}"
    gone = tmp_path / "gone.kubeconfig"
    gone.write_text(yaml.safe_dump(config))
    result = check(kube, kubeconfig=gone)
    assert result.returncode == 1
    (line,) = result.stdout.splitlines()
    assert line.startswith("FAIL  api server: ") and "does not answer" in line


def test_the_crds_without_an_operator_fail_at_the_operator(kube: Any, crd: None) -> None:
    result = check(kube, "--release", "absent", "--wait", "3s")
    found = lines(result)
    assert result.returncode == 1
    for name in CRDS:
        assert found[f"crd {name}"].startswith(f"ok    crd {name}: v1alpha1 served and stored"), found
    operator = found["operator"]
    assert operator.startswith("FAIL  operator: no Deployment labelled ") and "instance=absent" in operator
    assert "--release" in operator
    assert found["webhook admission"].startswith("FAIL  ") and found["report guard"].startswith("FAIL  ")
    assert "waiting (" in result.stderr and "operator: no Deployment" in result.stderr


def test_a_crd_of_another_release_is_reported(kube: Any, crd: None) -> None:
    older = yaml.safe_load(CRD.read_text())
    status = older["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["status"]
    del status["properties"]["podsFailing"]  # as a release before that field had it
    kube.kubectl("apply", "-f", "-", input=json.dumps(older))
    try:
        result = check(kube)
        line = lines(result)["crd lunaplugins.luna.dev"]
        assert result.returncode == 1
        assert line.startswith("FAIL  crd lunaplugins.luna.dev: serves v1alpha1 with another schema"), line
        assert "different releases" in line and "crds/" in line
        assert lines(result)["crd lunapluginruntimes.luna.dev"].startswith("ok    ")
    finally:
        apply_crds(kube)


@dataclass
class Release:
    """A chart release whose operator is the local operator process."""

    kube: Any
    name: str
    namespace: str
    operator: Operator
    webhook: str
    """the operator's webhook server, https://127.0.0.1:PORT"""
    cert: Path
    """the certificate it serves"""

    def point_webhook(self, url: str, ca_pem: bytes, failure_policy: str) -> None:
        """Send the release's LunaPlugin webhook to ``url``, trusting ``ca_pem``."""
        configurations = json.loads(
            self.kube.kubectl(
                "get",
                "validatingwebhookconfiguration",
                "-l",
                f"app.kubernetes.io/instance={self.name}",
                "-o",
                "json",
            ).stdout
        )["items"]
        (configuration,) = configurations
        index = [w["name"] for w in configuration["webhooks"]].index(WEBHOOK)
        patch = [
            {
                "op": "replace",
                "path": f"/webhooks/{index}/clientConfig",
                "value": {"url": url, "caBundle": base64.b64encode(ca_pem).decode()},
            },
            {"op": "replace", "path": f"/webhooks/{index}/failurePolicy", "value": failure_policy},
        ]
        self.kube.kubectl(
            "patch",
            "validatingwebhookconfiguration",
            configuration["metadata"]["name"],
            "--type=json",
            "-p",
            json.dumps(patch),
        )

    @property
    def url(self) -> str:
        return f"{self.webhook}/lunaplugin"

    def check(self, *args: str) -> subprocess.CompletedProcess[str]:
        return check(self.kube, "--release", self.name, "--namespace", self.namespace, *args)


def operator_pods_ready(kube: Any, namespace: str, release: str) -> None:
    """Mark the chart's operator pods Ready, as a kubelet would once they run; wait for the Deployment."""
    selector = f"app.kubernetes.io/instance={release},app.kubernetes.io/component=operator"

    def pods() -> list[str]:
        found = kube.kubectl("get", "pods", "-n", namespace, "-l", selector, "-o", "name").stdout.split()
        return [str(name) for name in found]

    for pod in wait_for(pods, timeout=60, what="the operator's pods to be created"):
        ready = {"status": {"conditions": [{"type": "Ready", "status": "True"}]}}
        kube.kubectl(
            "patch", pod, "-n", namespace, "--subresource=status", "--type=merge", "-p", json.dumps(ready)
        )

    def deployment_ready() -> bool:
        found = kube.kubectl(
            "get",
            "deployment",
            "-n",
            namespace,
            "-l",
            selector,
            "-o",
            "jsonpath={.items[0].status.readyReplicas}",
        ).stdout
        return found.strip() == "1"

    wait_for(deployment_ready, timeout=60, what="the operator Deployment to count its pod Ready")


@pytest.fixture
def release(kube: Any, crd: None, namespace: str, tmp_path: Path) -> Iterator[Release]:
    if kube.state_dir is None:
        pytest.skip("the webhook listens on 127.0.0.1, which an external cluster's API server cannot reach")
    name = f"r{namespace[-6:]}"
    kube.helm("install", name, str(CHART), *NO_KUBELET, "--namespace", namespace)
    try:
        operator_pods_ready(kube, namespace, name)
        running, url, cert = start_webhook_operator(kube, namespace, tmp_path)
        try:
            yield Release(kube, name, namespace, running, url, cert)
        finally:
            running.stop()
    finally:
        kube.helm("uninstall", name, "--namespace", namespace, check=False)


def test_a_release_whose_operator_serves_its_webhook_passes(release: Release) -> None:
    release.point_webhook(release.url, release.cert.read_bytes(), "Fail")
    result = release.check("--wait", "60s")
    found = lines(result)
    assert result.returncode == 0, result.stdout + result.stderr
    assert all(line.startswith("ok    ") for line in found.values()), result.stdout
    assert set(found) == {
        "api server",
        *(f"crd {n}" for n in CRDS),
        "operator",
        *WEBHOOK_CHECKS,
        "report guard",
    }
    assert (
        f"Deployment {release.namespace}/{release.name}-luna-plugins-operator: 1/1 pods Ready"
        in found["operator"]
    )
    assert "serves a certificate the caBundle verifies" in found["webhook certificate"]
    assert f'refused by webhook "{WEBHOOK}"' in found["webhook admission"]
    assert f"{release.name}-luna-plugins-reports bound by" in found["report guard"]
    as_json = json.loads(release.check("-o", "json").stdout)
    assert as_json["ok"] is True and all(c["ok"] and not c["fix"] for c in as_json["checks"])


WEBHOOK_CHECKS = ("webhook certificate", "webhook admission")


def test_a_webhook_serving_a_certificate_its_ca_bundle_does_not_trust_fails(release: Release) -> None:
    other_ca, _ = self_signed(release.cert.parent.parent / "other", HOST)
    for policy in ("Fail", "Ignore"):
        release.point_webhook(release.url, other_ca.read_bytes(), policy)
        result = release.check()
        found = lines(result)
        assert result.returncode == 1, result.stdout
        certificate, admission = found["webhook certificate"], found["webhook admission"]
        assert certificate.startswith("FAIL  webhook certificate: "), certificate
        assert "serves a certificate the caBundle does not verify" in certificate
        assert "caBundle" in certificate.split(" -> ", 1)[1]
        assert admission.startswith("FAIL  webhook admission: "), admission
        if policy == "Fail":
            assert "its certificate is not trusted" in admission and "x509" in admission
        else:
            assert "was admitted" in admission and "failurePolicy Ignore" in admission
        assert found["operator"].startswith("ok    ")

    # nobody listening where the webhook points: a failed call, not a certificate verdict
    release.point_webhook(f"https://{HOST}:{free_port()}/lunaplugin", release.cert.read_bytes(), "Fail")
    found = lines(release.check())
    assert "not reachable from here" in found["webhook certificate"]
    admission = found["webhook admission"]
    assert f'failed calling webhook "{WEBHOOK}"' in admission and "not trusted" not in admission


@contextlib.contextmanager
def tls_server(cert: Path, key: Path) -> Iterator[int]:
    """A server on 127.0.0.1 presenting ``cert`` to whoever connects (and answering nothing);
    yields its port."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    listener = socket.create_server((HOST, 0))
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                connection, _ = listener.accept()
            except OSError:
                return
            with contextlib.suppress(OSError), context.wrap_socket(connection, server_side=True):
                pass

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1]
    finally:
        stop.set()
        listener.close()
        thread.join(timeout=10)


def test_a_webhook_certificate_for_another_host_fails(release: Release, tmp_path: Path) -> None:
    """The caBundle trusts the certificate, but it names another address than the one called."""
    cert, key = self_signed(tmp_path / "elsewhere", "10.9.9.9")
    with tls_server(cert, key) as port:
        release.point_webhook(f"https://{HOST}:{port}/lunaplugin", cert.read_bytes(), "Fail")
        result = release.check()
    found = lines(result)
    assert result.returncode == 1
    certificate, admission = found["webhook certificate"], found["webhook admission"]
    assert certificate.startswith("FAIL  webhook certificate: ") and "mismatch" in certificate, certificate
    assert admission.startswith("FAIL  webhook admission: ") and "not trusted" in admission, admission
    assert "10.9.9.9" in admission
