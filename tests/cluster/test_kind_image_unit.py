"""Pure parts of the kind node image (``luna-cluster kind-image``): its recipe hash, the kind
configuration it needs, the files it changes, and the OCI images it preloads."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import tarfile
import tomllib
from pathlib import Path

import pytest
import yaml

from luna_cluster import kind_image, oci
from luna_cluster.image import ImageError
from luna_cluster.node_config import PAUSE_IMAGE

IMAGES = kind_image.NodeImages(
    kube_version="v1.36.3", etcd_version="v3.6.16", coredns_version="v1.15.0", storage_version="v0.0.30"
)

#: the parts of local-path-provisioner's own manifest (deploy/local-path-storage.yaml) that change
STORAGE = """\
apiVersion: v1
kind: Namespace
metadata:
  name: local-path-storage
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: local-path-provisioner
  namespace: local-path-storage
spec:
  template:
    spec:
      containers:
        - name: local-path-provisioner
          image: rancher/local-path-provisioner:v0.0.30
          command: [local-path-provisioner, --debug, start, --config, /etc/config/config.json]
---
apiVersion: storage.k8s.io/v1
kind: StorageClass
metadata:
  name: local-path
provisioner: rancher.io/local-path
---
kind: ConfigMap
apiVersion: v1
metadata:
  name: local-path-config
  namespace: local-path-storage
data:
  config.json: |-
    {"nodePathMap": [{"node": "DEFAULT_PATH_FOR_NON_LISTED_NODES", "paths": ["/opt/local-path-provisioner"]}]}
  setup: |-
    #!/bin/sh
    mkdir -m 0777 -p "$VOL_DIR"
  helperPod.yaml: |-
    apiVersion: v1
    kind: Pod
    metadata:
      name: helper-pod
    spec:
      containers:
      - name: helper-pod
        image: busybox
        imagePullPolicy: IfNotPresent
"""

#: the lines of kind's containerd configuration this module changes, as kind ships them
KIND_CONTAINERD = """\
version = 2
[plugins."io.containerd.grpc.v1.cri".containerd]
  snapshotter = "overlayfs"
[plugins."io.containerd.grpc.v1.cri"]
  # use fixed sandbox image
  sandbox_image = "registry.k8s.io/pause:3.10"
  tolerate_missing_hugepages_controller = true
  restrict_oom_score_adj = false
"""


def _builds(tmp_path: Path, kube_key: str = "75e00f0fb74dd317") -> dict[str, Path]:
    return {
        "kube-apiserver": tmp_path / f"kube-v1.36.3-{kube_key}" / "kube-apiserver",
        "kubelet": tmp_path / "node-v1.36.3-97cf7d068efd8ffc" / "kubelet",
    }


def test_the_recipe_hash_does_not_depend_on_order_but_on_every_name_and_value() -> None:
    parts = {"a": "1", "b": "2"}
    key = kind_image.recipe_hash(parts)
    assert key == kind_image.recipe_hash({"b": "2", "a": "1"})
    assert len(key) == 12
    assert key != kind_image.recipe_hash({"a": "1", "b": "3"})
    assert key != kind_image.recipe_hash({"a": "1", "c": "2"})
    # length-prefixed: moving a character from a name to its value is another recipe
    assert kind_image.recipe_hash({"ab": "c"}) != kind_image.recipe_hash({"a": "bc"})


def test_the_node_recipe_changes_with_a_rebuilt_binary_but_not_with_the_cache_location(
    tmp_path: Path,
) -> None:
    first = kind_image.node_recipe(rootfs="r1", builds=_builds(tmp_path), kind_version="v0.33.0")
    elsewhere = kind_image.node_recipe(
        rootfs="r1", builds=_builds(tmp_path / "other"), kind_version="v0.33.0"
    )
    assert first == elsewhere
    rebuilt = kind_image.node_recipe(
        rootfs="r1", builds=_builds(tmp_path, kube_key="0000000000000000"), kind_version="v0.33.0"
    )
    assert kind_image.recipe_hash(first) != kind_image.recipe_hash(rebuilt)
    for changed in (
        kind_image.node_recipe(rootfs="r2", builds=_builds(tmp_path), kind_version="v0.33.0"),
        kind_image.node_recipe(rootfs="r1", builds=_builds(tmp_path), kind_version="v0.34.0"),
    ):
        assert kind_image.recipe_hash(first) != kind_image.recipe_hash(changed)
    assert first["recipe"] == kind_image.RECIPE_VERSION


def test_the_rootfs_recipe_names_suite_mirror_and_packages() -> None:
    recipe = kind_image.rootfs_recipe("http://deb.debian.org/debian")
    assert recipe["suite"] == "bookworm"
    assert {"systemd", "iptables", "runc"} <= set(recipe["packages"].split(","))
    assert kind_image.recipe_hash(recipe) != kind_image.recipe_hash(kind_image.rootfs_recipe("http://mirror"))


def test_the_image_reference_carries_the_kubernetes_version_and_the_key() -> None:
    assert kind_image.reference("v1.36.3", "abc123") == "luna-plugins/kind-node:v1.36.3-abc123"


def test_the_images_have_kubeadms_names_and_our_etcd_and_coredns_tags() -> None:
    references = IMAGES.references()
    assert references["kube-apiserver"] == "registry.k8s.io/kube-apiserver:v1.36.3"
    assert references["kube-proxy"] == "registry.k8s.io/kube-proxy:v1.36.3"
    assert references["etcd"] == "registry.k8s.io/etcd:v3.6.16"
    assert references["coredns"] == "registry.k8s.io/coredns/coredns:v1.15.0"
    assert references["pause"] == PAUSE_IMAGE
    assert references["local-path-provisioner"] == "localhost/luna-kind/local-path-provisioner:v0.0.30"


def test_the_cluster_config_turns_off_kinds_cni_and_allows_cgroup_v1() -> None:
    config = yaml.safe_load(kind_image.cluster_config(IMAGES))
    assert config["kind"] == "Cluster"
    assert config["apiVersion"] == "kind.x-k8s.io/v1alpha4"
    assert config["networking"] == {"disableDefaultCNI": True, "podSubnet": kind_image.POD_SUBNET}
    patches = {patch["kind"]: patch for patch in map(yaml.safe_load, config["kubeadmConfigPatches"])}
    assert patches["KubeletConfiguration"]["failCgroupV1"] is False
    cluster = patches["ClusterConfiguration"]
    # kubeadm then names exactly the images the node image holds
    assert f"{kind_image.REGISTRY}/etcd:{cluster['etcd']['local']['imageTag']}" == IMAGES.references()["etcd"]
    assert cluster["dns"]["imageTag"] == IMAGES.coredns_version


def test_the_cni_config_is_one_bridge_on_the_nodes_pod_range() -> None:
    config = json.loads(kind_image.cni_config())
    (bridge,) = config["plugins"]
    assert bridge["type"] == "bridge"
    assert bridge["ipam"]["ranges"] == [[{"subnet": kind_image.NODE_POD_RANGE}]]


def test_containerd_config_gets_our_sandbox_image_and_restricted_oom_scores() -> None:
    changed = kind_image.containerd_config(KIND_CONTAINERD)
    cri = tomllib.loads(changed)["plugins"]["io.containerd.grpc.v1.cri"]
    assert cri["sandbox_image"] == PAUSE_IMAGE
    assert cri["restrict_oom_score_adj"] is True
    assert cri["tolerate_missing_hugepages_controller"] is True  # the rest stays kind's
    assert "# use fixed sandbox image" in changed


def test_containerd_config_without_a_setting_to_change_is_an_error() -> None:
    with pytest.raises(ImageError, match="restrict_oom_score_adj"):
        kind_image.containerd_config(KIND_CONTAINERD.replace("  restrict_oom_score_adj = false\n", ""))


def test_an_image_of_layers_from_files_is_an_oci_layout(tmp_path: Path) -> None:
    binary = tmp_path / "etcd"
    binary.write_bytes(b"\x7fELF not really")
    layer = tmp_path / "layer.tar"
    oci.write_layer({"usr/local/bin/etcd": binary}, layer)
    with tarfile.open(layer) as opened:
        members = {member.name: member for member in opened.getmembers()}
    assert set(members) == {"usr", "usr/local", "usr/local/bin", "usr/local/bin/etcd"}
    assert members["usr/local/bin/etcd"].mode == 0o755
    assert members["usr/local"].isdir()

    target = tmp_path / "image.tar"
    oci.write_image(target, "registry.k8s.io/etcd:v3.6.16", [layer], {"Entrypoint": ["/usr/local/bin/etcd"]})
    with tarfile.open(target) as archive:

        def read(name: str) -> bytes:
            handle = archive.extractfile(name)
            assert handle is not None
            return handle.read()

        index = json.loads(read("index.json"))
        (entry,) = index["manifests"]
        assert entry["annotations"]["io.containerd.image.name"] == "registry.k8s.io/etcd:v3.6.16"
        manifest = json.loads(read(f"blobs/sha256/{entry['digest'].removeprefix('sha256:')}"))
        (layer_entry,) = manifest["layers"]
        blob = read(f"blobs/sha256/{layer_entry['digest'].removeprefix('sha256:')}")
        assert blob == layer.read_bytes()
        assert layer_entry["digest"] == "sha256:" + hashlib.sha256(blob).hexdigest()
        config = json.loads(read(f"blobs/sha256/{manifest['config']['digest'].removeprefix('sha256:')}"))
        assert config["rootfs"]["diff_ids"] == [layer_entry["digest"]]
        assert config["config"]["Entrypoint"] == ["/usr/local/bin/etcd"]


def test_missing_capabilities_are_read_from_the_bounding_set() -> None:
    # this machine's: everything but CAP_SYS_RESOURCE (bit 24)
    assert kind_image.missing_capabilities("Name:\tx\nCapBnd:\t000001fffeffffff\n") == ["CAP_SYS_RESOURCE"]
    assert kind_image.missing_capabilities("CapBnd:\t000001ffffffffff\n") == []
    assert kind_image.missing_capabilities("Name:\tx\n") == []
    assert len(kind_image.CAPABILITIES) == 41
    assert kind_image.CAPABILITIES[24] == "SYS_RESOURCE"


def test_the_runc_wrapper_drops_the_missing_capabilities_then_runs_runc(tmp_path: Path) -> None:
    runc = tmp_path / "runc"
    runc.write_text(f'#!/bin/sh\necho "$@" > {tmp_path / "args"}\n')
    runc.chmod(0o755)
    wrapper = tmp_path / "wrapper"
    wrapper.write_text(kind_image.runc_wrapper(sys.executable, str(runc), ["CAP_SYS_RESOURCE"]))
    wrapper.chmod(0o755)
    every = ["CAP_CHOWN", "CAP_SYS_RESOURCE", "CAP_SYS_ADMIN"]
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    (bundle / "config.json").write_text(
        json.dumps({"process": {"capabilities": {"bounding": every, "effective": every}}, "root": {}})
    )
    process = tmp_path / "process.json"
    process.write_text(json.dumps({"capabilities": {"permitted": every}, "args": ["sh"]}))

    subprocess.run([str(wrapper), "--root", "/r", "create", "--bundle", str(bundle), "c1"], check=True)
    assert (tmp_path / "args").read_text().split() == [
        "--root",
        "/r",
        "create",
        "--bundle",
        str(bundle),
        "c1",
    ]
    capabilities = json.loads((bundle / "config.json").read_text())["process"]["capabilities"]
    assert capabilities == {
        "bounding": ["CAP_CHOWN", "CAP_SYS_ADMIN"],
        "effective": ["CAP_CHOWN", "CAP_SYS_ADMIN"],
    }

    subprocess.run([str(wrapper), "exec", f"--process={process}", "c1"], check=True)
    assert json.loads(process.read_text()) == {
        "capabilities": {"permitted": ["CAP_CHOWN", "CAP_SYS_ADMIN"]},
        "args": ["sh"],
    }


def test_the_storage_manifest_is_kinds_default_standard_class_on_our_images() -> None:
    documents = {doc["kind"]: doc for doc in yaml.safe_load_all(kind_image.storage_manifest(STORAGE, IMAGES))}
    assert set(documents) == {"Namespace", "Deployment", "StorageClass", "ConfigMap"}
    (container,) = documents["Deployment"]["spec"]["template"]["spec"]["containers"]
    assert container["image"] == IMAGES.references()["local-path-provisioner"]
    assert container["imagePullPolicy"] == "IfNotPresent"
    assert container["command"][0] == "local-path-provisioner"  # the rest stays upstream's
    storage_class = documents["StorageClass"]
    assert storage_class["metadata"]["name"] == "standard"
    assert storage_class["metadata"]["annotations"] == {"storageclass.kubernetes.io/is-default-class": "true"}
    data = documents["ConfigMap"]["data"]
    assert json.loads(data["config.json"])["nodePathMap"][0]["paths"] == [kind_image.VOLUME_ROOT]
    (helper,) = yaml.safe_load(data["helperPod.yaml"])["spec"]["containers"]
    assert helper["image"] == IMAGES.references()["local-path-helper"]
    assert data["setup"].startswith("#!/bin/sh")


def test_a_storage_manifest_without_its_provisioner_is_an_error() -> None:
    without = "\n---\n".join(part for part in STORAGE.split("---\n") if "kind: Deployment" not in part)
    with pytest.raises(ImageError, match="no Deployment"):
        kind_image.storage_manifest(without, IMAGES)


@pytest.mark.parametrize("purpose, engine", [("image", "image"), ("kind-image", "kind")])
def test_without_docker_both_engines_say_what_is_missing_for_which_command(
    purpose: str, engine: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Neither the image build nor the kind node image find an engine on a PATH without docker:
    each says which command needed it and what to install, and starts nothing."""
    from luna_cluster import image
    from luna_cluster.image import EngineUnavailableError
    from luna_cluster.state import StateDir

    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    state = StateDir(tmp_path / "state")
    find = image.engine if engine == "image" else kind_image.engine
    with pytest.raises(EngineUnavailableError) as refused:
        find(state, sys.stdout)
    assert str(refused.value).startswith(f"{purpose} needs a container engine")
    assert "apt-get install docker.io" in str(refused.value)
    assert not (tmp_path / "state" / "run").exists() or not any((tmp_path / "state" / "run").iterdir())
