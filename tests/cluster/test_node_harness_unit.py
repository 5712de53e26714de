"""Pure logic of the node harness: its configuration files, listeners, sandbox image and refusals."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import tarfile
import tomllib
from pathlib import Path

import pytest

from luna_cluster import cluster, hostnet, image, node, node_config, oci, tools
from luna_cluster.node_config import NODE_IP, NodeLayout
from tests.support.kube_fixtures import _cluster_command

ALLOWED_HOSTS = {"127.0.0.1", NODE_IP}


def _layout(tmp_path: Path) -> NodeLayout:
    return NodeLayout(tmp_path / "node")


def test_containerd_config_is_version_3_with_the_kubelets_needs(tmp_path: Path) -> None:
    layout = _layout(tmp_path)
    config = tomllib.loads(
        node_config.containerd_config(layout, tmp_path / "cni-bin", Path("/usr/sbin/runc"))
    )
    assert config["version"] == 3
    assert config["grpc"]["address"] == str(layout.containerd_socket)
    assert config["root"].startswith(str(layout.root)) and config["state"].startswith(str(layout.root))
    runtime = config["plugins"]["io.containerd.cri.v1.runtime"]
    # without CAP_SYS_RESOURCE a negative OOM score fails every sandbox
    assert runtime["restrict_oom_score_adj"] is True
    # network namespaces under the state directory, where `down` finds them
    assert runtime["netns_mounts_under_state_dir"] is True
    assert runtime["cni"]["conf_dir"] == str(layout.cni_conf_dir)
    runc = runtime["containerd"]["runtimes"]["runc"]["options"]
    assert runc["SystemdCgroup"] is False and runc["Root"] == str(layout.runc_root)
    images = config["plugins"]["io.containerd.cri.v1.images"]
    assert images["pinned_images"]["sandbox"] == node_config.PAUSE_IMAGE
    assert config["plugins"]["io.containerd.grpc.v1.cri"]["stream_server_address"] == "127.0.0.1"


def test_kubelet_authenticates_callers_and_asks_the_api_server() -> None:
    config = node_config.kubelet_config(
        NodeLayout(Path("/s/node")),
        ca=Path("/s/ca.crt"),
        serving_cert=Path("/s/k.crt"),
        serving_key=Path("/s/k.key"),
        healthz_port=1234,
    )
    authentication = config["authentication"]
    assert authentication == {
        "anonymous": {"enabled": False},
        "webhook": {"enabled": True},
        "x509": {"clientCAFile": "/s/ca.crt"},
    }
    assert config["authorization"] == {"mode": "Webhook"}
    assert config["readOnlyPort"] == 0
    assert config["address"] == NODE_IP and config["healthzBindAddress"] == "127.0.0.1"
    assert config["failCgroupV1"] is False and config["cgroupDriver"] == "cgroupfs"
    assert config["clusterDNS"] == [NODE_IP]
    # imported images could not come back: never collect them
    assert config["imageGCHighThresholdPercent"] == 100


def test_every_node_listener_is_on_loopback_or_the_node_address(tmp_path: Path) -> None:
    layout = _layout(tmp_path)
    proxy = node_config.kube_proxy_config(layout, healthz_port=1, metrics_port=2)
    for key in ("healthzBindAddress", "metricsBindAddress"):
        assert str(proxy[key]).rsplit(":", 1)[0] in ALLOWED_HOSTS
    assert proxy["nodePortAddresses"] == [f"{NODE_IP}/32"]
    corefile = node_config.corefile(Path("/k"), health_port=3, ready_port=4)
    binds = [line.split()[1] for line in corefile.splitlines() if line.strip().startswith("bind ")]
    assert binds and set(binds) == {NODE_IP}
    for line in corefile.splitlines():
        if line.strip().startswith(("health ", "ready ")):
            assert line.split()[1].startswith("127.0.0.1:")
    # the DNS server resolves the cluster's names and nothing else (no forwarding anywhere)
    assert "forward" not in corefile


def test_the_api_server_advertises_the_node_address_with_a_node_and_loopback_without(tmp_path: Path) -> None:
    state = cluster.StateDir.at(tmp_path)
    with_node = cluster._apiserver_args(state, Path("kube-apiserver"), 1, 3, node=True)
    assert f"--bind-address={NODE_IP}" in with_node and f"--advertise-address={NODE_IP}" in with_node
    assert "--endpoint-reconciler-type=none" not in with_node  # the lease reconciler keeps `kubernetes`
    assert any(arg.startswith("--kubelet-client-certificate=") for arg in with_node)
    assert "--enable-admission-plugins=NodeRestriction" in with_node
    without = cluster._apiserver_args(state, Path("kube-apiserver"), 1, 3)
    assert "--bind-address=127.0.0.1" in without and "--endpoint-reconciler-type=none" in without


def test_node_lifecycle_controller_runs_only_with_a_node() -> None:
    assert "-node-lifecycle-controller" not in cluster.controllers(node=True)
    assert "-node-lifecycle-controller" in cluster.controllers(node=False)
    for controllers in (cluster.controllers(node=True), cluster.controllers(node=False)):
        assert "-cloud-node-lifecycle-controller" in controllers


def test_sandbox_image_is_a_valid_oci_layout(tmp_path: Path) -> None:
    binary = tmp_path / "pause"
    binary.write_bytes(b"\x7fELF fake static binary")
    archive = tmp_path / "image.tar"
    oci.write_single_binary_image(binary, "localhost/p:1", ["/pause", "-P"], archive)
    with tarfile.open(archive) as tar:
        names = tar.getnames()
        assert "oci-layout" in names and "index.json" in names
        files = {
            member.name: tar.extractfile(member).read() for member in tar.getmembers() if member.isfile()
        }
    for name, data in files.items():
        if name.startswith("blobs/sha256/"):
            assert hashlib.sha256(data).hexdigest() == name.rsplit("/", 1)[1]
    index = json.loads(files["index.json"])
    entry = index["manifests"][0]
    assert entry["annotations"]["io.containerd.image.name"] == "localhost/p:1"
    manifest = json.loads(files[f"blobs/sha256/{entry['digest'].split(':')[1]}"])
    config = json.loads(files[f"blobs/sha256/{manifest['config']['digest'].split(':')[1]}"])
    assert config["config"]["Entrypoint"] == ["/pause", "-P"]
    layer = files[f"blobs/sha256/{manifest['layers'][0]['digest'].split(':')[1]}"]
    assert config["rootfs"]["diff_ids"] == [f"sha256:{hashlib.sha256(layer).hexdigest()}"]
    with tarfile.open(fileobj=__import__("io").BytesIO(layer)) as inner:
        member = inner.getmember("pause")
        assert member.mode == 0o755 and inner.extractfile(member).read() == binary.read_bytes()


def test_host_changes_survive_a_restart_of_the_process(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the machine's own record (/run/luna-plugins/node.json) is not this test's to write: a later
    # `up --node` on this machine would take the made-up owner for a node to clean up after
    monkeypatch.setattr(hostnet, "RECORD_FILE", tmp_path / "run" / "node.json")
    layout = _layout(tmp_path)
    changes = hostnet.HostChanges(
        owner="/x", sysctls={"net/ipv4/ip_forward": "0"}, bridge=True, cgroups=["/a"]
    )
    changes.save(layout)
    again = hostnet.HostChanges.load(layout)
    assert again == changes
    layout.state_file.write_text("{not json")
    assert hostnet.HostChanges.load(layout) == hostnet.HostChanges()


def test_image_names_are_normalized_as_containerd_does() -> None:
    assert node._normalized("luna-plugins:dev") == "docker.io/library/luna-plugins:dev"
    assert node._normalized("me/luna:1") == "docker.io/me/luna:1"
    assert node._normalized("localhost/luna-pause:x") == "localhost/luna-pause:x"
    assert node._normalized("registry.example:5000/a/b:c") == "registry.example:5000/a/b:c"


def test_base_image_recipe_hash_follows_the_recipe(monkeypatch: pytest.MonkeyPatch) -> None:
    first = image.base_recipe_hash("http://deb.debian.org/debian")
    assert first == image.base_recipe_hash("http://deb.debian.org/debian")
    assert first != image.base_recipe_hash("http://mirror.example/debian")
    monkeypatch.setattr(image, "BASE_PACKAGES", (*image.BASE_PACKAGES, "curl"))
    assert first != image.base_recipe_hash("http://deb.debian.org/debian")


def test_node_modules_pin_their_versions_and_tags() -> None:
    versions = {module.name: tools.module_version(module) for module in tools.NODE_MODULES}
    assert versions["node"] == tools.module_version(tools.MODULES[0])  # kubelet matches the API server
    assert versions["containerd"].startswith("v2.")
    containerd = next(module for module in tools.NODE_MODULES if module.name == "containerd")
    assert "no_btrfs" in containerd.tags
    key = tools.cache_key(containerd, b"m", b"s", "go", "v2.4.2")
    untagged = tools.ToolModule(containerd.name, containerd.upstream, containerd.packages, containerd.ldflags)
    assert key != tools.cache_key(untagged, b"m", b"s", "go", "v2.4.2")


def _cluster_cli(*args: str, **kwargs: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        _cluster_command(*args),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        **kwargs,  # type: ignore[call-overload]
    )


def test_up_node_without_root_says_so_in_one_line_and_exits_2(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from luna_cluster.cli import main

    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    assert main(["up", "--node", "--state-dir", str(tmp_path / "state")]) == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1 and "needs root" in lines[0], lines
    assert not (tmp_path / "state" / "cluster.json").exists()


def test_up_node_without_a_container_runtime_says_so_and_exits_2(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("as non-root the missing root is reported first")
    bare = tmp_path / "bin"
    bare.mkdir()
    env = {**os.environ, "PATH": str(bare)}
    result = _cluster_cli("up", "--node", "--state-dir", str(tmp_path / "state"), env=env)
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "runc is not installed" in lines[0], result.stderr
