"""What a platform engineer and a service team put on the cluster: the chart, a service, its plugins.

``install_chart`` is ``helm install`` of charts/luna-plugins with the image under test;
``handlers_service`` is the demo stand-in of the LUNA handlers service as a Deployment whose pods
ask for the sidecar by annotation, with a Service in front; ``reach`` gives an HTTP base URL of
a Service from this machine (its ClusterIP on our node, a ``kubectl port-forward`` elsewhere);
``steady_load`` keeps requests flowing to it and counts every answer.
"""

from __future__ import annotations

import contextlib
import re
import socket
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from tests.node.conftest import NodeCluster
from tests.node.pods import RESTRICTED_CONTAINER, get
from tests.support.kube_fixtures import Kube
from tests.support.sidecar_harness import http, wait_for

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "luna-plugins"
EXAMPLE_PLUGINS = ROOT / "examples" / "plugins"
RELEASE = "luna"
SERVICE_PORT = 5090


def install_chart(cluster: NodeCluster, namespace: str, *values: str, timeout: str = "5m") -> None:
    """``helm install`` (or upgrade) the chart into ``namespace`` with the image under test, waiting."""
    cluster.kube.helm(
        "upgrade",
        "--install",
        RELEASE,
        str(CHART),
        "--namespace",
        namespace,
        "--create-namespace",
        *cluster.image_values(),
        *values,
        "--wait",
        "--timeout",
        timeout,
        timeout=600,
    )
    wait_webhook_served(cluster.kube, namespace)


def wait_webhook_served(kube: Kube, namespace: str) -> None:
    """Wait until the API server reaches the operator's webhooks through their Service.

    ``helm --wait`` sees the operator Ready, but kube-proxy programs the webhook Service a moment
    later; until then the API server cannot call the webhooks and, their failure policy being
    Ignore, admits what they would refuse and creates pods without the sidecar. A server-side
    dry run of a LunaPlugin only the webhook refuses tells when they are served."""
    probe = lunaplugin("webhook-probe", "def broken(:\n")
    probe["metadata"]["namespace"] = namespace

    def refused() -> bool:
        result = kube.kubectl(
            "create", "--dry-run=server", "-f", "-", input=yaml.safe_dump(probe), check=False, timeout=60
        )
        return result.returncode != 0 and "denied the request" in result.stderr

    wait_for(refused, timeout=120, what="the operator's webhooks to be served through their Service")


def lunaplugin(
    name: str, code: str, *, module: str | None = None, service: str = "handlers", settings: Any = None
) -> dict[str, Any]:
    spec: dict[str, Any] = {"service": service, "code": code}
    if module:
        spec["module"] = module
    if settings is not None:
        spec["settings"] = settings
    return {"apiVersion": "luna.dev/v1alpha1", "kind": "LunaPlugin", "metadata": {"name": name}, "spec": spec}


def example_code(module: str) -> str:
    return (EXAMPLE_PLUGINS / f"{module}.py").read_text()


def apply(
    kube: Kube, namespace: str, *objects: dict[str, Any] | str, check: bool = True
) -> subprocess.CompletedProcess[str]:
    """``kubectl apply`` of ``objects``; the strings among them are extra kubectl flags."""
    flags = [item for item in objects if isinstance(item, str)]
    manifests = [item for item in objects if not isinstance(item, str)]
    return kube.kubectl(
        "apply",
        "-n",
        namespace,
        *flags,
        "-f",
        "-",
        input=yaml.safe_dump_all(manifests),
        check=check,
        timeout=120,
    )


def handlers_service(image: str, name: str = "handlers", replicas: int = 1) -> list[dict[str, Any]]:
    """The stand-in handlers service: a Deployment whose pods ask for the sidecar (by label) and
    run as a ServiceAccount of their own (the sidecar with them), and its Service."""
    labels = {"app": name}
    account = {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": name}}
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "labels": labels},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {
                    "labels": {**labels, "luna.dev/inject": "true"},
                    "annotations": {"luna.dev/service": "handlers"},
                },
                "spec": {
                    "serviceAccountName": name,
                    "securityContext": {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}},
                    "containers": [
                        {
                            "name": "handlers",
                            "image": image,
                            "imagePullPolicy": "Never",
                            "command": ["python", "/opt/luna-plugins/demo_service.py"],
                            "args": [
                                "--host=0.0.0.0",
                                f"--port={SERVICE_PORT}",
                                "--sidecar=http://127.0.0.1:8081",
                                "--flush-interval=0.2",
                            ],
                            "ports": [{"name": "http", "containerPort": SERVICE_PORT}],
                            # /stats is not monitored: probes do not become requests points
                            "readinessProbe": {
                                "httpGet": {"path": "/stats", "port": "http"},
                                "periodSeconds": 2,
                            },
                            "securityContext": RESTRICTED_CONTAINER,
                        }
                    ],
                },
            },
        },
    }
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "labels": {**labels, "luna.dev/sidecar": "true"}},
        "spec": {
            "selector": labels,
            "ports": [
                {"name": "http", "port": SERVICE_PORT, "targetPort": "http"},
                {"name": "plugin-routes", "port": 8080, "targetPort": "plugin-routes"},
                {"name": "plugin-metrics", "port": 9100, "targetPort": "plugin-metrics"},
            ],
        },
    }
    return [account, deployment, service]


def wait_ready_replicas(kube: Kube, namespace: str, name: str, replicas: int, timeout: float = 180) -> None:
    def ready() -> bool:
        status = get(kube, namespace, "deployment", name)["status"]
        return bool(
            status.get("readyReplicas") == replicas
            and status.get("updatedReplicas") == replicas
            and status.get("replicas") == replicas
        )

    wait_for(ready, timeout=timeout, what=f"deployment {name} to have {replicas} ready replicas")


def _connects(address: str, port: int) -> bool:
    try:
        socket.create_connection((address, port), timeout=5).close()
    except OSError:
        return False
    return True


@contextlib.contextmanager
def reach(cluster: NodeCluster, namespace: str, service: str, port: int) -> Iterator[str]:
    """An HTTP base URL for ``service:port`` from this machine, through kube-proxy (which spreads
    requests over the Service's pods): its ClusterIP on our own node; on another cluster a node
    port of it on a node's address this machine reaches (kind's nodes: over its network's
    bridge), else a ``kubectl port-forward`` (which reaches one pod, and can break under load)."""
    if cluster.state_dir is not None:
        address = get(cluster.kube, namespace, "service", service)["spec"]["clusterIP"]
        wait_for(
            lambda: _connects(address, port),
            timeout=120,
            what=f"Service {service}:{port} ({address}) to accept connections (kube-proxy programs it)",
        )
        yield f"http://{address}:{port}"
        return
    node_url = _node_port_url(cluster, namespace, service, port)
    if node_url is not None:
        yield node_url
        return
    with _port_forward(cluster, namespace, f"svc/{service}", port) as url:
        yield url


def _node_port_url(cluster: NodeCluster, namespace: str, service: str, port: int) -> str | None:
    """``http://NODE:NODEPORT`` for ``service:port`` made a NodePort Service, when this machine
    reaches a node's InternalIP (as it does kind's nodes); None otherwise (a remote cluster)."""
    kube = cluster.kube
    nodes = get(kube, namespace, "nodes")["items"]
    addresses = [
        entry["address"]
        for node in nodes
        for entry in node.get("status", {}).get("addresses") or []
        if entry.get("type") == "InternalIP"
    ]
    if not addresses:
        return None
    spec = get(kube, namespace, "service", service)["spec"]
    if spec.get("type") != "NodePort":
        kube.kubectl("patch", "service", service, "-n", namespace, "-p", '{"spec": {"type": "NodePort"}}')
        spec = get(kube, namespace, "service", service)["spec"]
    node_port = next((entry.get("nodePort") for entry in spec["ports"] if entry["port"] == port), None)
    if not node_port:
        return None
    # kube-proxy opens the port within seconds; a node this machine cannot route to never answers
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        for address in addresses:
            if _connects(address, node_port):
                return f"http://{address}:{node_port}"
        time.sleep(0.5)
    return None


@contextlib.contextmanager
def reach_every_pod(cluster: NodeCluster, namespace: str, service: str, port: int) -> Iterator[list[str]]:
    """HTTP base URLs that together reach every pod behind ``service:port`` from this machine: the
    Service through kube-proxy where :func:`reach` gets there (our own node, or a node port on a
    node this machine reaches); else a port-forward to each of its pods now (one to the Service
    reaches a single pod)."""
    if cluster.state_dir is not None:
        with reach(cluster, namespace, service, port) as url:
            yield [url]
        return
    node_url = _node_port_url(cluster, namespace, service, port)
    if node_url is not None:
        yield [node_url]
        return
    selector = get(cluster.kube, namespace, "service", service)["spec"]["selector"]
    labels = ",".join(f"{key}={value}" for key, value in sorted(selector.items()))
    names = cluster.kube.kubectl("get", "pods", "-n", namespace, "-l", labels, "-o", "name").stdout.split()
    assert names, f"no pod behind Service {service}"
    with contextlib.ExitStack() as stack:
        yield [stack.enter_context(_port_forward(cluster, namespace, name, port)) for name in names]


@contextlib.contextmanager
def _port_forward(cluster: NodeCluster, namespace: str, target: str, port: int) -> Iterator[str]:
    """``kubectl port-forward TARGET :PORT`` (``svc/NAME`` or ``pod/NAME``) while in the block."""
    forward = subprocess.Popen(
        [cluster.kube.kubectl_binary, "port-forward", "-n", namespace, target, f":{port}"],
        env=cluster.kube.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert forward.stdout is not None
        deadline = time.monotonic() + 30
        line = ""
        while time.monotonic() < deadline:
            line = forward.stdout.readline()
            found = re.search(r"127\.0\.0\.1:(\d+) ->", line)
            if found:
                yield f"http://127.0.0.1:{found.group(1)}"
                return
        raise AssertionError(f"kubectl port-forward to {target}:{port} did not start: {line}")
    finally:
        forward.terminate()
        forward.wait(timeout=10)


class Outcomes(Counter[str]):
    """Answers counted by outcome while load threads add to them: read them in the block through
    :meth:`total` and :meth:`now`, which take the threads' lock."""

    def __init__(self) -> None:
        super().__init__()
        self.lock = threading.Lock()

    def add(self, outcome: str) -> None:
        with self.lock:
            self[outcome] += 1

    def total(self) -> int:
        with self.lock:
            return sum(self.values())

    def now(self) -> dict[str, int]:
        with self.lock:
            return dict(self)


@contextlib.contextmanager
def steady_load(urls: str | list[str], path: str, threads: int) -> Iterator[Outcomes]:
    """``threads`` threads GET ``path`` from ``urls`` (taken in turn) until the block ends; yields
    the count of every answer: the body of a 200, ``status N`` otherwise, ``error <type>: <reason>``
    for a request that got no answer. Every request is counted, so a loss shows in the counts."""
    bases = [urls] if isinstance(urls, str) else urls
    outcomes = Outcomes()
    stop = threading.Event()

    def load(base: str) -> None:
        while not stop.is_set():
            try:
                reply = http("GET", f"{base}{path}", timeout=10)
                outcomes.add(reply.text if reply.status == 200 else f"status {reply.status}")
            except OSError as exc:
                outcomes.add(f"error {type(exc).__name__}: {getattr(exc, 'reason', exc)}")

    workers = [
        threading.Thread(target=load, args=(bases[n % len(bases)],), daemon=True) for n in range(threads)
    ]
    for worker in workers:
        worker.start()
    try:
        yield outcomes
    finally:
        stop.set()
        for worker in workers:
            worker.join(timeout=30)
