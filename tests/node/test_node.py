"""The node itself: Ready, authenticated, pods with DNS and the in-cluster API, the image as users run it."""

from __future__ import annotations

import json
import ssl
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import yaml

from tests.node.conftest import NodeCluster
from tests.node.pods import get, python_pod, run_pod


def test_the_node_is_ready_and_schedulable(node_cluster: NodeCluster) -> None:
    (node,) = get(node_cluster.kube, "default", "nodes")["items"]
    conditions = {condition["type"]: condition["status"] for condition in node["status"]["conditions"]}
    assert conditions["Ready"] == "True", conditions
    # the node lifecycle controller lifted the not-ready taint: nothing keeps pods off the node
    assert not node["spec"].get("taints"), node["spec"]
    assert node["status"]["nodeInfo"]["containerRuntimeVersion"].startswith("containerd://2.")


@pytest.mark.own_node("the kubelet's address is known only for our own node")
def test_the_kubelet_refuses_anonymous_callers(node_cluster: NodeCluster) -> None:
    (node,) = get(node_cluster.kube, "default", "nodes")["items"]
    (address,) = [a["address"] for a in node["status"]["addresses"] if a["type"] == "InternalIP"]
    context = ssl.create_default_context(cafile=str(node_cluster.state_dir / "pki" / "ca.crt"))
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(f"https://{address}:10250/pods", context=context, timeout=10)
    assert refused.value.code == 401


def test_logs_and_exec_go_through_the_kubelets_authorization(
    node_cluster: NodeCluster, node_namespace: str
) -> None:
    kube = node_cluster.kube
    pod = python_pod("sleeper", node_cluster.image, "import time; print('up', flush=True); time.sleep(3600)")
    kube.kubectl("apply", "-n", node_namespace, "-f", "-", input=yaml.safe_dump(pod))
    kube.kubectl("wait", "-n", node_namespace, "--for=condition=Ready", "pod/sleeper", "--timeout=120s")
    assert "up" in kube.kubectl("logs", "-n", node_namespace, "sleeper").stdout
    identity = kube.kubectl("exec", "-n", node_namespace, "sleeper", "--", "id", "-u").stdout
    assert identity.strip() == "10001"
    # the image runs on a read-only root filesystem
    write = kube.kubectl("exec", "-n", node_namespace, "sleeper", "--", "touch", "/opt/x", check=False)
    assert write.returncode != 0 and "Read-only file system" in write.stderr + write.stdout


def test_pods_resolve_cluster_names_and_reach_the_api_server_through_its_service(
    node_cluster: NodeCluster, node_namespace: str
) -> None:
    script = """
        import json, socket, ssl, urllib.request
        secrets = "/var/run/secrets/kubernetes.io/serviceaccount"
        address = socket.gethostbyname("kubernetes.default.svc.cluster.local")
        context = ssl.create_default_context(cafile=f"{secrets}/ca.crt")
        token = open(f"{secrets}/token").read()
        request = urllib.request.Request(
            "https://kubernetes.default.svc/version", headers={"Authorization": f"Bearer {token}"}
        )
        version = json.load(urllib.request.urlopen(request, context=context, timeout=10))
        print(json.dumps({"address": address, "minor": version["minor"]}))
    """
    log = run_pod(node_cluster.kube, node_namespace, python_pod("api-probe", node_cluster.image, script))
    service = get(node_cluster.kube, "default", "service", "kubernetes")
    result = json.loads(log.strip().splitlines()[-1])
    assert result["address"] == service["spec"]["clusterIP"]
    assert result["minor"].startswith("3")


def test_names_outside_the_cluster_are_not_resolved(node_cluster: NodeCluster, node_namespace: str) -> None:
    script = """
        import socket
        try:
            socket.gethostbyname("example.com")
        except socket.gaierror:
            print("unresolved")
        else:
            print("resolved")
    """
    log = run_pod(node_cluster.kube, node_namespace, python_pod("dns-probe", node_cluster.image, script))
    assert log.strip() == "unresolved"


def test_the_image_starts_the_operator_and_the_sidecar_as_10001_read_only(
    node_cluster: NodeCluster, node_namespace: str
) -> None:
    script = """
        import importlib.util, os, subprocess
        assert os.getuid() == 10001, os.getuid()
        # the local-cluster harness is a distribution of its own, never installed in the image
        assert importlib.util.find_spec("luna_cluster") is None, "luna_cluster is in the image"
        for command in ("operator", "sidecar"):
            done = subprocess.run(["luna-plugins", command, "--help"], capture_output=True, text=True)
            assert done.returncode == 0, done.stderr
            print(command, "ok")
    """
    log = run_pod(node_cluster.kube, node_namespace, python_pod("image-probe", node_cluster.image, script))
    assert log.split() == ["operator", "ok", "sidecar", "ok"]


@pytest.mark.own_node("our own node's bridge")
def test_the_bridge_keeps_its_own_address_as_pods_come_and_go(node_cluster: NodeCluster) -> None:
    """A bridge whose address was never set takes its lowest port's, which changes with pod churn
    and breaks pods' ARP entries for the gateway for a moment (seen as "No route to host")."""
    from luna_cluster.node_config import BRIDGE

    # /sys/class/net/<if>/addr_assign_type: 3 is NET_ADDR_SET (set by userspace: never recomputed)
    assert (Path("/sys/class/net") / BRIDGE / "addr_assign_type").read_text().strip() == "3"


@pytest.mark.own_node("the engine that built our own node's image")
def test_a_rebuilt_image_replaces_the_one_it_supersedes_in_the_engine(
    node_cluster: NodeCluster, tmp_path: Path
) -> None:
    """Each ``cluster image`` used to leave the image it replaced behind: the engine's data in
    the cache directory grew by the image's size on every rebuild."""
    import io

    from luna_cluster import image
    from luna_cluster.state import StateDir

    out = io.StringIO()
    docker = image.engine(StateDir(node_cluster.state_dir), out)  # the one `cluster image` started
    base = image.choose_base(docker, None, out)
    tag = "luna-plugins-rebuild-test:dev"
    (tmp_path / "Dockerfile").write_text(
        "ARG BASE_IMAGE=python:3.11-slim\nFROM ${BASE_IMAGE}\nARG WHEELS\nCOPY stamp /stamp\n"
    )
    built = []
    try:
        for stamp in ("first", "second"):
            (tmp_path / "stamp").write_text(stamp)
            built.append(image.build(docker, tmp_path, tag, base, out, tmp_path / "build.log"))
        first, second = built
        assert first != second
        assert docker.run("image", "inspect", first, check=False).returncode != 0, out.getvalue()
        assert docker.run("image", "inspect", second, check=False).returncode == 0
        assert "removed the image" in out.getvalue()
        if docker.private:
            dangling = docker.run("images", "--quiet", "--filter", "dangling=true").stdout.split()
            assert dangling == [], out.getvalue()
    finally:
        docker.run("image", "rm", tag, check=False)
