"""``luna-cluster kind-image``: a kind node image built offline, from Go modules and Debian packages.

kind's own node images come from a registry (``kindest/node``), and ``kind build node-image``
pulls its base image and the images it preloads. Where no registry is reachable this module makes
an equivalent image from what this harness already builds:

- the root filesystem: Debian ``bookworm`` with systemd, iptables and runc, by ``debootstrap``
  (cached as a tarball, keyed by its package list);
- the files kind expects in a node (``/usr/local/bin/entrypoint``, ``/kind/``, the systemd units of
  containerd and the kubelet, containerd's configuration), read from the kind Go module of
  ``tools/kind`` (the same release as the ``kind`` binary), with two changes this machine needs:
  containerd's ``restrict_oom_score_adj`` and no negative ``OOMScoreAdjust`` in systemd units
  (both need ``CAP_SYS_RESOURCE``);
- the node's binaries (kubelet, kubeadm, kubectl, containerd, crictl, the CNI plugins) and the
  control-plane images (kube-apiserver, kube-controller-manager, kube-scheduler, kube-proxy, etcd,
  CoreDNS, the pod sandbox), made as OCI images without an engine (:mod:`.oci`) and preloaded into
  the node's containerd store as kind does (``ctr images import --no-unpack``, pinned);
- pod networking: a bridge CNI configuration for the one node (kind's kindnetd is not published as
  a Go module that the module proxy serves, so the cluster is created with kind's default CNI off);
- storage: local-path-provisioner from its Go module and its own manifest (as kind's default
  ``standard`` StorageClass), its helper pods on the node's Debian.

The image is named ``luna-plugins/kind-node:<kube version>-<hash>``, the hash of its recipe (the
cached builds it is made from, the root filesystem's recipe, the kind release and
:data:`RECIPE_VERSION`): it is rebuilt only when one of those changes. :func:`cluster_config` is the
kind configuration such an image needs.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

import yaml

from . import node as node_mod
from . import oci, procs, tools
from .image import (
    DEFAULT_MIRROR,
    Engine,
    ImageError,
    debootstrap_root,
    find_engine,
    find_image_id,
    run_logged,
    spawn_private_dockerd,
)
from .node_config import PAUSE_IMAGE
from .state import StateDir

#: bump when the way the node image is put together changes (its inputs are hashed anyway)
RECIPE_VERSION = "2"
NODE_REPOSITORY = "luna-plugins/kind-node"
SUITE = "bookworm"
#: what kind's base image installs that a node here needs (kind's list, without the storage and
#: FUSE tools), and Debian's runc
ROOTFS_PACKAGES = (
    "systemd",
    "iptables",
    "nftables",
    "conntrack",
    "iproute2",
    "ethtool",
    "kmod",
    "libseccomp2",
    "pigz",
    "ca-certificates",
    "procps",
    "runc",
    # kind's createContainer hook (/kind/bin/mount-product-files.sh) runs jq
    "jq",
)
ROOTFS_RECIPE_VERSION = "1"
#: kind's default pod subnet, and the node's share of it (the bridge CNI configuration's range)
POD_SUBNET = "10.244.0.0/16"
NODE_POD_RANGE = "10.244.0.0/24"
REGISTRY = "registry.k8s.io"
#: where the images of ours that no kubeadm default names live
LOCAL_REPOSITORY = "localhost/luna-kind"
#: the folder on the node where local-path-provisioner makes volumes (``/var`` is a Docker volume)
VOLUME_ROOT = "/var/local-path-provisioner"
IMAGE_PATH = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
#: where the Docker daemon for kind listens when no other answers (its data stays in the user cache
#: directory: the node image is kept there)
KIND_DOCKER_DIR = Path("/run/luna-plugins/kind-docker")
#: the network kind creates for its nodes (``KIND_EXPERIMENTAL_DOCKER_NETWORK`` changes it)
KIND_NETWORK = "kind"
#: the Go modules the node image is made from (the control plane's, the node's, kubeadm, crictl,
#: local-path-provisioner)
MODULES = (*tools.MODULES, *tools.NODE_MODULES, *tools.KIND_NODE_MODULES)
STORAGE_MODULE = next(module for module in MODULES if module.name == "local-path-provisioner")


@dataclass(frozen=True)
class NodeImages:
    """The versions inside a node image and the image names kubeadm and containerd look for."""

    kube_version: str
    etcd_version: str
    coredns_version: str
    storage_version: str

    def references(self) -> dict[str, str]:
        """Component -> image reference. kubeadm's names for the Kubernetes images; etcd and CoreDNS
        under kubeadm's repositories with their own versions as tags (:func:`cluster_config` tells
        kubeadm those tags); the sandbox image is the local node's."""
        kube = {
            name: f"{REGISTRY}/{name}:{self.kube_version}"
            for name in ("kube-apiserver", "kube-controller-manager", "kube-scheduler", "kube-proxy")
        }
        return {
            **kube,
            "etcd": f"{REGISTRY}/etcd:{self.etcd_version}",
            "coredns": f"{REGISTRY}/coredns/coredns:{self.coredns_version}",
            "pause": PAUSE_IMAGE,
            "local-path-provisioner": f"{LOCAL_REPOSITORY}/local-path-provisioner:{self.storage_version}",
            "local-path-helper": f"{LOCAL_REPOSITORY}/local-path-helper:{SUITE}",
        }


def recipe_hash(parts: Mapping[str, str]) -> str:
    """Hash of named inputs (order-independent); 12 hex digits."""
    digest = hashlib.sha256()
    for name, value in sorted(parts.items()):
        for part in (name.encode(), value.encode()):
            digest.update(len(part).to_bytes(8, "big"))
            digest.update(part)
    return digest.hexdigest()[:12]


def rootfs_recipe(mirror: str) -> dict[str, str]:
    return {
        "rootfs-recipe": ROOTFS_RECIPE_VERSION,
        "suite": SUITE,
        "mirror": mirror,
        "packages": ",".join(ROOTFS_PACKAGES),
    }


def node_recipe(*, rootfs: str, builds: Mapping[str, Path], kind_version: str) -> dict[str, str]:
    """Everything that makes a node image what it is: ``rootfs`` the root filesystem's recipe
    hash, ``builds`` binary -> cached path (whose folder names the module, version and build key)."""
    return {
        "recipe": RECIPE_VERSION,
        "rootfs": rootfs,
        "kind": kind_version,
        "pod-range": NODE_POD_RANGE,
        "pause": PAUSE_IMAGE,
        **{f"bin:{name}": path.parent.name for name, path in builds.items()},
    }


def reference(kube_version: str, key: str) -> str:
    return f"{NODE_REPOSITORY}:{kube_version}-{key}"


def cluster_config(images: NodeImages) -> str:
    """The kind ``Cluster`` configuration a node image of ours needs: kind's CNI off (the image has
    its own), kubeadm told the etcd and CoreDNS tags of the preloaded images, the kubelet allowed to
    run on cgroup v1 (Kubernetes 1.35+ refuses it otherwise)."""
    return f"""\
kind: Cluster
apiVersion: kind.x-k8s.io/v1alpha4
networking:
  disableDefaultCNI: true
  podSubnet: {POD_SUBNET}
kubeadmConfigPatches:
- |
  kind: ClusterConfiguration
  etcd:
    local:
      imageTag: {images.etcd_version}
  dns:
    imageTag: {images.coredns_version}
- |
  kind: KubeletConfiguration
  failCgroupV1: false
- |
  kind: InitConfiguration
  nodeRegistration:
    ignorePreflightErrors:
    - SystemVerification
"""


def cni_config() -> str:
    """The node's pod network: one bridge, addresses from :data:`NODE_POD_RANGE`, NAT to the node."""
    config = {
        "cniVersion": "1.0.0",
        "name": "kind-bridge",
        "plugins": [
            {
                "type": "bridge",
                "bridge": "cni0",
                "isGateway": True,
                "ipMasq": True,
                "hairpinMode": True,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{"subnet": NODE_POD_RANGE}]],
                    "routes": [{"dst": "0.0.0.0/0"}],
                },
            }
        ],
    }
    return json.dumps(config, indent=2) + "\n"


def storage_manifest(upstream: str, images: NodeImages) -> str:
    """local-path-provisioner's own manifest (``deploy/local-path-storage.yaml`` of its module) as
    kind's default storage: our images, volumes under :data:`VOLUME_ROOT`, and its StorageClass
    named ``standard`` and marked default, as kind's is."""
    references = images.references()
    documents = [document for document in yaml.safe_load_all(upstream) if document]
    found = set()
    for document in documents:
        kind = document.get("kind")
        if kind == "Deployment":
            for container in document["spec"]["template"]["spec"]["containers"]:
                container["image"] = references["local-path-provisioner"]
                container["imagePullPolicy"] = "IfNotPresent"
        elif kind == "StorageClass":
            document["metadata"]["name"] = "standard"
            document["metadata"].setdefault("annotations", {})[
                "storageclass.kubernetes.io/is-default-class"
            ] = "true"
        elif kind == "ConfigMap":
            data = document["data"]
            config = json.loads(data["config.json"])
            for entry in config["nodePathMap"]:
                entry["paths"] = [VOLUME_ROOT]
            data["config.json"] = json.dumps(config, indent=2)
            helper = yaml.safe_load(data["helperPod.yaml"])
            for container in helper["spec"]["containers"]:
                container["image"] = references["local-path-helper"]
            data["helperPod.yaml"] = yaml.safe_dump(helper, sort_keys=False)
        else:
            continue
        found.add(kind)
    missing = {"Deployment", "StorageClass", "ConfigMap"} - found
    if missing:
        raise ImageError(f"local-path-provisioner's manifest has no {', '.join(sorted(missing))}")
    return yaml.safe_dump_all(documents, sort_keys=False)


def containerd_config(upstream: str) -> str:
    """kind's containerd configuration with the sandbox image of ours and ``restrict_oom_score_adj``
    on (the kubelet's negative OOM scores need ``CAP_SYS_RESOURCE``)."""
    lines = []
    replaced = {"sandbox_image": False, "restrict_oom_score_adj": False}
    for line in upstream.splitlines():
        key = line.strip().split("=", 1)[0].strip()
        if key == "sandbox_image":
            line = f'  sandbox_image = "{PAUSE_IMAGE}"'
            replaced[key] = True
        elif key == "restrict_oom_score_adj":
            line = "  restrict_oom_score_adj = true"
            replaced[key] = True
        lines.append(line)
    missing = [key for key, done in replaced.items() if not done]
    if missing:
        raise ImageError(f"kind's containerd configuration has no {', '.join(missing)} setting to change")
    return "\n".join(lines) + "\n"


# --- building -------------------------------------------------------------------------------------


def _cache() -> Path:
    return tools.cache_root() / "kind"


def module_dir(module: tools.ToolModule) -> Path:
    """The source of the upstream module ``module`` pins (downloaded into the Go module cache if
    needed): kind's node files, local-path-provisioner's manifest."""
    wanted = f"{module.upstream}@{tools.module_version(module)}"
    result = subprocess.run(
        [tools.go_binary(), "mod", "download", "-json", wanted],
        cwd=module.directory,
        env=tools.build_env(),
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise ImageError(f"`go mod download {wanted}` failed: {result.stderr.strip()}")
    return Path(json.loads(result.stdout)["Dir"])


def node_rootfs(out: TextIO) -> tuple[Path, str]:
    """The node's Debian root filesystem as a tarball (built by debootstrap once) and its recipe hash."""
    mirror = os.environ.get("LUNA_DEBIAN_MIRROR", DEFAULT_MIRROR)
    key = recipe_hash(rootfs_recipe(mirror))
    archive = _cache() / f"rootfs-{SUITE}-{key}.tar"
    if archive.is_file():
        return archive, key
    debootstrap = shutil.which("debootstrap")
    if debootstrap is None or os.geteuid() != 0:
        raise ImageError("a kind node image is built with debootstrap, as root (apt-get install debootstrap)")
    archive.parent.mkdir(parents=True, exist_ok=True)
    log = tools.cache_root() / "logs" / f"kind-rootfs-{key}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    print(
        f"building the kind node's root filesystem from Debian {SUITE} packages (~3 min)",
        file=out,
        flush=True,
    )
    with tempfile.TemporaryDirectory(prefix="rootfs-", dir=archive.parent) as scratch:
        root = Path(scratch) / "root"
        debootstrap_root(debootstrap, SUITE, ROOTFS_PACKAGES, root, mirror, log, out)
        staging = archive.with_suffix(".tmp")
        run_logged(
            ["tar", "--numeric-owner", "--xattrs", "-C", str(root), "-cf", str(staging), "."],
            log,
            "packing the root filesystem",
            out,
        )
        staging.replace(archive)
    return archive, key


def _write(path: Path, text: str | bytes, mode: int = 0o644) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.is_symlink() or path.exists():
        path.unlink()
    path.write_bytes(text.encode() if isinstance(text, str) else text)
    path.chmod(mode)


def _install(source: Path, target: Path, mode: int = 0o755) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, target)
    target.chmod(mode)


def _symlink(link: Path, to: str) -> None:
    link.parent.mkdir(parents=True, exist_ok=True)
    if link.is_symlink() or link.exists():
        link.unlink()
    link.symlink_to(to)


def _kind_files(root: Path, kind_dir: Path) -> None:
    """The files of kind's base image (``images/base/files``), with their modes."""
    files = kind_dir / "images" / "base" / "files"
    for source in sorted(files.rglob("*")):
        if not source.is_file():
            continue
        inside = source.relative_to(files)
        if inside.parts[0] == "LICENSES":
            continue
        executable = inside.parts[:3] == ("usr", "local", "bin") or inside.parts[:2] == ("kind", "bin")
        target = root / inside
        if inside == Path("etc/containerd/config.toml"):
            _write(target, containerd_config(source.read_text()))
        else:
            _install(source, target, 0o755 if executable else 0o644)


def _systemd(root: Path) -> None:
    """What kind's base image does to systemd: only the services a node needs, started by
    ``/sbin/init``; plus drop-ins that keep units from lowering their OOM score (no
    ``CAP_SYS_RESOURCE``: systemd would refuse to start them)."""
    unit_dirs = [root / "lib/systemd/system", root / "etc/systemd/system"]
    for wants in ("multi-user.target.wants", "local-fs.target.wants", "basic.target.wants"):
        for folder in unit_dirs:
            for entry in (folder / wants).glob("*"):
                entry.unlink()
    for pattern in ("*udev*", "*initctl*"):
        for entry in (root / "lib/systemd/system/sockets.target.wants").glob(pattern):
            entry.unlink()
    for entry in (root / "lib/systemd/system/sysinit.target.wants").glob("systemd-tmpfiles-setup.service"):
        entry.unlink()
    for folder in (root / "etc/systemd/system").glob("*.wants"):
        for entry in folder.glob("*"):
            entry.unlink()
    journald = root / "etc/systemd/journald.conf"
    journald.write_text(journald.read_text() + "ReadKMsg=no\n")
    _symlink(root / "usr/sbin/init", "/usr/lib/systemd/systemd")
    for unit in ("kubelet.service", "containerd.service", "undo-mount-hacks.service"):
        _symlink(root / "etc/systemd/system/multi-user.target.wants" / unit, f"/etc/systemd/system/{unit}")
    _symlink(root / "etc/systemd/system/systemd-binfmt.service", "/dev/null")
    for unit in ("containerd.service", "systemd-journald.service"):
        _write(root / f"etc/systemd/system/{unit}.d/10-oom-score.conf", "[Service]\nOOMScoreAdjust=0\n")


def _runtime_spec(ctr: Path) -> str:
    """containerd's default OCI spec with kind's hook and without rlimits (kind's ``cri-base.json``)."""
    result = subprocess.run([str(ctr), "oci", "spec"], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise ImageError(f"`ctr oci spec` failed: {result.stderr.strip()}")
    spec = json.loads(result.stdout)
    spec.setdefault("hooks", {}).setdefault("createContainer", []).append(
        {"path": "/kind/bin/mount-product-files.sh"}
    )
    spec.get("process", {}).pop("rlimits", None)
    return json.dumps(spec, indent=2) + "\n"


def _binaries(root: Path, builds: Mapping[str, Path]) -> None:
    for name in ("containerd", "containerd-shim-runc-v2", "ctr", "crictl"):
        _install(builds[name], root / "usr/local/bin" / name)
    for name in ("kubelet", "kubeadm", "kubectl"):
        _install(builds[name], root / "usr/bin" / name)
    for name in ("bridge", "host-local", "loopback"):
        _install(builds[name], root / "opt/cni/bin" / name)


def _images(scratch: Path, rootfs: Path, builds: Mapping[str, Path], images: NodeImages) -> list[Path]:
    """The OCI archives of the control-plane images, the sandbox image's included."""
    references = images.references()
    archives: list[Path] = []
    env = {"Env": [IMAGE_PATH]}
    for name in ("kube-apiserver", "kube-controller-manager", "kube-scheduler", "kube-proxy", "etcd"):
        layer = scratch / f"{name}.layer.tar"
        oci.write_layer({f"usr/local/bin/{name}": builds[name]}, layer)
        # kube-proxy runs iptables (and conntrack): its image is the node's Debian with the binary
        layers = [rootfs, layer] if name == "kube-proxy" else [layer]
        archive = scratch / f"{name}.oci.tar"
        oci.write_image(archive, references[name], layers, {**env, "Entrypoint": [f"/usr/local/bin/{name}"]})
        layer.unlink()
        archives.append(archive)
    layer = scratch / "coredns.layer.tar"
    oci.write_layer({"coredns": builds["coredns"]}, layer)
    archive = scratch / "coredns.oci.tar"
    oci.write_image(archive, references["coredns"], [layer], {**env, "Entrypoint": ["/coredns"]})
    layer.unlink()
    archives.append(archive)
    layer = scratch / "local-path-provisioner.layer.tar"
    oci.write_layer({"usr/local/bin/local-path-provisioner": builds["local-path-provisioner"]}, layer)
    archive = scratch / "local-path-provisioner.oci.tar"
    oci.write_image(archive, references["local-path-provisioner"], [layer], env)
    layer.unlink()
    archives.append(archive)
    # its helper pods run sh, mkdir and rm: the node's Debian (the same layer as kube-proxy's)
    archive = scratch / "local-path-helper.oci.tar"
    oci.write_image(archive, references["local-path-helper"], [rootfs], env)
    archives.append(archive)
    archives.append(node_mod.pause_image_archive())
    return archives


@contextlib.contextmanager
def _containerd(root: Path, containerd: Path, scratch: Path, log: Path) -> Iterator[str]:
    """A containerd on this machine whose store is the node's ``/var/lib/containerd`` (no CRI);
    yields its socket's address and stops it afterwards."""
    state = Path(tempfile.mkdtemp(prefix="luna-kind-ctrd-", dir="/run"))
    address = str(state / "containerd.sock")
    config = scratch / "containerd-import.toml"
    config.write_text(
        "version = 3\n"
        f'root = "{root / "var/lib/containerd"}"\n'
        f'state = "{state}"\n'
        'disabled_plugins = ["io.containerd.grpc.v1.cri", "io.containerd.cri.v1.runtime", '
        '"io.containerd.cri.v1.images", "io.containerd.nri.v1.nri"]\n'
        f'[grpc]\n  address = "{address}"\n'
        f'[ttrpc]\n  address = "{address}.ttrpc"\n'
    )
    with log.open("ab") as handle:
        process = subprocess.Popen(
            [str(containerd), "--config", str(config)], stdout=handle, stderr=subprocess.STDOUT
        )
    try:
        deadline = time.monotonic() + 60
        while not Path(address).is_socket():
            if process.poll() is not None or time.monotonic() > deadline:
                raise ImageError(f"containerd for the image import did not start; see {log}")
            time.sleep(0.2)
        yield address
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        shutil.rmtree(state, ignore_errors=True)


def _preload(
    root: Path, builds: Mapping[str, Path], archives: list[Path], scratch: Path, log: Path
) -> list[str]:
    """Import ``archives`` into the node's containerd store as kind does (content only, pinned)."""
    with _containerd(root, builds["containerd"], scratch, log) as address:
        ctr = [str(builds["ctr"]), "--address", address, "--namespace", "k8s.io"]
        for archive in archives:
            result = subprocess.run(
                [
                    *ctr,
                    "images",
                    "import",
                    "--label=io.cri-containerd.pinned=pinned",
                    "--all-platforms",
                    "--no-unpack",
                    "--digests",
                    str(archive),
                ],
                capture_output=True,
                text=True,
                check=False,
            )
            if result.returncode != 0:
                raise ImageError(
                    f"importing {archive.name} into the node image failed: {result.stderr.strip()}"
                )
        listed = subprocess.run([*ctr, "images", "list", "-q"], capture_output=True, text=True, check=False)
    return sorted(line for line in listed.stdout.splitlines() if line and not line.startswith("sha256:"))


def ensure_builds(out: TextIO) -> dict[str, Path]:
    """Every binary the node image holds (built or reused), and kind's."""
    return tools.ensure_all(out, node=True, extras=(tools.KIND, *tools.KIND_NODE_MODULES))


def node_images() -> NodeImages:
    """The versions the Go modules of :data:`MODULES` pin."""
    versions = {module.name: tools.module_version(module) for module in MODULES}
    return NodeImages(
        kube_version=versions["kube"],
        etcd_version=versions["etcd"],
        coredns_version=versions["coredns"],
        storage_version=versions["local-path-provisioner"],
    )


def build(docker: Engine, out: TextIO) -> tuple[str, NodeImages]:
    """The node image (reused when an image of the same recipe exists); its reference and versions."""
    started = time.monotonic()
    builds = ensure_builds(out)
    images = node_images()
    kind_version = tools.module_version(tools.KIND)
    rootfs, rootfs_key = node_rootfs(out)
    used = {name: path for name, path in builds.items() if name != "helm"}  # helm is not in the node
    key = recipe_hash(node_recipe(rootfs=rootfs_key, builds=used, kind_version=kind_version))
    name = reference(images.kube_version, key)
    if find_image_id(docker, name) is not None:
        print(f"reusing the kind node image {name}", file=out, flush=True)
        return name, images
    print(f"building the kind node image {name}", file=out, flush=True)
    log = tools.cache_root() / "logs" / f"kind-node-{key}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    kind_dir = module_dir(tools.KIND)
    storage = (module_dir(STORAGE_MODULE) / "deploy" / "local-path-storage.yaml").read_text()
    with tempfile.TemporaryDirectory(prefix="node-", dir=_cache()) as scratch_name:
        scratch = Path(scratch_name)
        root = scratch / "root"
        root.mkdir()
        run_logged(
            ["tar", "--numeric-owner", "--xattrs", "-C", str(root), "-xpf", str(rootfs)],
            log,
            "unpacking the root filesystem",
            out,
        )
        _kind_files(root, kind_dir)
        _systemd(root)
        _binaries(root, builds)
        _write(root / "etc/containerd/cri-base.json", _runtime_spec(builds["ctr"]))
        _write(root / "etc/cni/net.d/10-kind-bridge.conflist", cni_config())
        (root / "etc/kubernetes/manifests").mkdir(parents=True, exist_ok=True)
        _write(root / "kind/version", images.kube_version)
        _write(root / "kind/manifests/default-storage.yaml", storage_manifest(storage, images))
        archives = _images(scratch, rootfs, builds, images)
        print("preloading the control-plane images into the node's containerd", file=out, flush=True)
        loaded = _preload(root, builds, archives, scratch, log)
        _write(root / "kind/images", "".join(f"{line}\n" for line in loaded))
        for archive in archives:
            if archive.parent == scratch:
                archive.unlink()
        tarball = scratch / "node.tar"
        run_logged(
            ["tar", "--numeric-owner", "--xattrs", "-C", str(root), "-cf", str(tarball), "."],
            log,
            "packing the node image",
            out,
        )
        shutil.rmtree(root)
        # (docker import takes no STOPSIGNAL: kind removes its nodes with `docker rm -f` anyway)
        run_logged(
            [
                docker.cli,
                "import",
                "--change",
                'ENTRYPOINT ["/usr/local/bin/entrypoint", "/sbin/init"]',
                "--change",
                "ENV container=docker",
                str(tarball),
                name,
            ],
            log,
            "docker import of the node image",
            out,
            env=docker.env,
        )
    print(f"built the kind node image {name} in {time.monotonic() - started:.0f}s", file=out, flush=True)
    _remove_superseded(docker, name, rootfs, out)
    return name, images


def _remove_superseded(docker: Engine, current: str, rootfs: Path, out: TextIO) -> None:
    """Remove the node images of other recipes (those no container uses) and the other root
    filesystems: rebuilds do not pile up gigabytes."""
    listed = docker.run("image", "ls", "--format", "{{.Repository}}:{{.Tag}}", NODE_REPOSITORY, check=False)
    for other in listed.stdout.decode().split():
        if other != current and docker.run("image", "rm", other, check=False).returncode == 0:
            print(f"removed the superseded node image {other}", file=out)
    for archive in rootfs.parent.glob(f"rootfs-{SUITE}-*.tar"):
        if archive != rootfs:
            archive.unlink()


# --- the engine -----------------------------------------------------------------------------------

#: Linux capabilities by number (``capability.h``), as Docker and runc name them
CAPABILITIES = (
    "CHOWN DAC_OVERRIDE DAC_READ_SEARCH FOWNER FSETID KILL SETGID SETUID SETPCAP LINUX_IMMUTABLE "
    "NET_BIND_SERVICE NET_BROADCAST NET_ADMIN NET_RAW IPC_LOCK IPC_OWNER SYS_MODULE SYS_RAWIO SYS_CHROOT "
    "SYS_PTRACE SYS_PACCT SYS_ADMIN SYS_BOOT SYS_NICE SYS_RESOURCE SYS_TIME SYS_TTY_CONFIG MKNOD LEASE "
    "AUDIT_WRITE AUDIT_CONTROL SETFCAP MAC_OVERRIDE MAC_ADMIN SYSLOG WAKE_ALARM BLOCK_SUSPEND AUDIT_READ "
    "PERFMON BPF CHECKPOINT_RESTORE"
).split()


def missing_capabilities(status: str) -> list[str]:
    """The capabilities (``CAP_SYS_RESOURCE``, ...) missing from the bounding set that ``status``
    (the text of ``/proc/self/status``) shows."""
    for line in status.splitlines():
        if line.startswith("CapBnd:"):
            mask = int(line.split()[1], 16)
            return [f"CAP_{name}" for bit, name in enumerate(CAPABILITIES) if not mask >> bit & 1]
    return []


def runc_wrapper(python: str, runc: str, missing: list[str]) -> str:
    """A runc that first drops ``missing`` from the capabilities of the container (``--bundle``'s
    ``config.json``) or process (``--process``) it is asked to start.

    kind starts its nodes with ``docker run --privileged``, and Docker 20.10 gives a privileged
    container every capability it knows; where this machine's bounding set lacks one, runc fails
    with "unable to apply caps: operation not permitted". Docker's own daemon for kind runs
    containers through this wrapper (``--add-runtime``); a container gets what the machine has."""
    return f"""#!{python}
# runc without the capabilities this machine lacks (written by luna-cluster kind-image)
import json, os, sys

MISSING = set({sorted(missing)!r})


def drop(path, in_process):
    with open(path) as handle:
        spec = json.load(handle)
    process = spec if in_process else spec.get("process", {{}})
    capabilities = process.get("capabilities") or {{}}
    for kind in list(capabilities):
        capabilities[kind] = [name for name in capabilities[kind] or [] if name not in MISSING]
    with open(path, "w") as handle:
        json.dump(spec, handle)


args = sys.argv[1:]
for index, arg in enumerate(args):
    for flag, in_process in (("--bundle", False), ("--process", True)):
        value = None
        if arg == flag and index + 1 < len(args):
            value = args[index + 1]
        elif arg.startswith(flag + "="):
            value = arg.split("=", 1)[1]
        if value:
            drop(value if in_process else os.path.join(value, "config.json"), in_process)
os.execv({runc!r}, [{runc!r}, *args])
"""


def _kind_docker_env() -> dict[str, str]:
    return {**os.environ, "DOCKER_HOST": f"unix://{KIND_DOCKER_DIR / 'docker.sock'}"}


def engine(state: StateDir, out: TextIO) -> Engine:
    """The user's Docker if it answers; else a Docker daemon of our own for kind, started for
    ``state`` (stopped by :func:`stop_engine`).

    That daemon changes nothing on this machine's firewall: no iptables rules, no NAT, no change to
    IP forwarding or to the FORWARD policy (tests of the local node depend on it). kind's nodes are
    reached from here over its network's bridge (the API server through the port docker's userland
    proxy publishes on 127.0.0.1); they reach nothing else, which an offline node image does not need.
    """

    def start(dockerd: str) -> tuple[str, subprocess.Popen[bytes]]:
        print(f"starting a Docker daemon for kind ({KIND_DOCKER_DIR / 'docker.sock'})", file=out, flush=True)
        KIND_DOCKER_DIR.mkdir(parents=True, exist_ok=True)
        runtime: list[str] = []
        missing = missing_capabilities(Path("/proc/self/status").read_text())
        runc = shutil.which("runc")
        if missing and runc:
            print(f"  (its containers run without {', '.join(missing)}: this machine has none)", file=out)
            wrapper = KIND_DOCKER_DIR / "runc"
            python = shutil.which("python3") or sys.executable
            _write(wrapper, runc_wrapper(python, runc, missing), 0o755)
            runtime = [f"--add-runtime=luna-runc={wrapper}", "--default-runtime=luna-runc"]
        data_root = tools.cache_root() / "kind-docker"
        process = spawn_private_dockerd(
            state, "kind-dockerd", dockerd, KIND_DOCKER_DIR, data_root, "--ip6tables=false", *runtime
        )
        return "kind-dockerd", process

    return find_engine(state, "kind-image", _kind_docker_env(), start)


def stop_engine(state: StateDir, out: TextIO) -> bool:
    """Stop the Docker daemon :func:`engine` started for ``state`` (if any), after removing the
    network kind made in it (its bridge would outlive the daemon); True when none of ours runs."""
    pid = procs.read_pid(state.pid_file("kind-dockerd"))
    if pid is None:
        return True
    dockerd = shutil.which("dockerd")
    if dockerd and procs.is_ours(pid, Path(dockerd), str(KIND_DOCKER_DIR)):
        cli = shutil.which("docker")
        if cli:
            subprocess.run(
                [cli, "network", "rm", KIND_NETWORK], env=_kind_docker_env(), capture_output=True, check=False
            )
        if not procs.stop(pid, timeout=60):
            print(f"could not stop the Docker daemon for kind (pid {pid})", file=out)
            return False
        print(f"stopped the Docker daemon for kind (pid {pid})", file=out)
        # its socket, runtime state and runc wrapper (its data stays: the node image is kept)
        shutil.rmtree(KIND_DOCKER_DIR, ignore_errors=True)
    state.pid_file("kind-dockerd").unlink(missing_ok=True)
    return True
