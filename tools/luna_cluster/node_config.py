"""The node's addresses, file layout and the configuration files of its components (pure functions).

One node per machine: the CNI bridge ``luna0`` carries the node address ``10.213.0.1`` and the pods
of ``10.213.0.0/24``; Services get addresses of ``10.213.128.0/24``, routed to the bridge so that
kube-proxy's rules on the host apply. Nothing here touches the system: :mod:`.hostnet` and
:mod:`.node` use these values to do that.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

NODE_NAME = "luna-node"
BRIDGE = "luna0"
POD_CIDR = "10.213.0.0/24"
#: the bridge's address: the node's InternalIP, where the API server, the kubelet and DNS listen
NODE_IP = "10.213.0.1"
SERVICE_CIDR = "10.213.128.0/24"
#: the ``kubernetes`` Service's ClusterIP (the first address of the range)
SERVICE_IP = "10.213.128.1"
CLUSTER_DOMAIN = "cluster.local"
CNI_NETWORK = "luna"
KUBELET_PORT = 10250
DNS_PORT = 53
#: cgroup (in every v1 hierarchy) under which the kubelet puts its pods
CGROUP_ROOT = "/luna-node"
#: the pod sandbox image, made by :mod:`.oci` from a static ``catatonit``
PAUSE_IMAGE = "localhost/luna-pause:catatonit"
CONTAINERD_NAMESPACE = "k8s.io"
#: the longest path of a unix socket (``sun_path`` is 108 bytes with its NUL)
MAX_SOCKET_PATH = 107


@dataclass(frozen=True)
class NodeLayout:
    """Where the node keeps its files, below ``DIR/node`` of a cluster state directory."""

    root: Path

    @property
    def state_file(self) -> Path:
        """What ``up --node`` changed on the host, so that ``down`` can undo exactly that."""
        return self.root / "host-changes.json"

    @property
    def containerd_dir(self) -> Path:
        return self.root / "containerd"

    @property
    def containerd_config(self) -> Path:
        return self.containerd_dir / "config.toml"

    @property
    def containerd_root(self) -> Path:
        """Images and snapshots; kept by ``down`` (not ``--purge``) so a later ``up`` skips imports."""
        return self.containerd_dir / "root"

    @property
    def containerd_state(self) -> Path:
        return self.containerd_dir / "state"

    @property
    def containerd_socket(self) -> Path:
        return self.containerd_dir / "containerd.sock"

    @property
    def runc_root(self) -> Path:
        return self.containerd_dir / "runc"

    @property
    def cni_conf_dir(self) -> Path:
        return self.root / "cni" / "net.d"

    @property
    def cni_ipam_dir(self) -> Path:
        return self.root / "cni" / "ipam"

    @property
    def kubelet_dir(self) -> Path:
        return self.root / "kubelet"

    @property
    def kubelet_config(self) -> Path:
        return self.root / "kubelet-config.yaml"

    @property
    def pod_logs(self) -> Path:
        return self.root / "pod-logs"

    @property
    def resolv_conf(self) -> Path:
        return self.root / "resolv.conf"

    @property
    def kube_proxy_config(self) -> Path:
        return self.root / "kube-proxy-config.yaml"

    @property
    def corefile(self) -> Path:
        return self.root / "Corefile"

    def kubeconfig(self, component: str) -> Path:
        return self.root / f"{component}.kubeconfig"


def _toml_string(value: str | Path) -> str:
    # a TOML basic string is a JSON string for everything we write (paths, names)
    return json.dumps(str(value))


def containerd_config(layout: NodeLayout, cni_bin_dir: Path, runc: Path) -> str:
    """containerd 2.x configuration (version 3) for the kubelet's CRI.

    ``restrict_oom_score_adj``: the kubelet asks for negative OOM scores that need
    ``CAP_SYS_RESOURCE``, which some machines (VMs, containers) do not grant; the network
    namespaces live under the state directory, so ``down`` finds and removes them.
    """
    return f"""version = 3
root = {_toml_string(layout.containerd_root)}
state = {_toml_string(layout.containerd_state)}
disabled_plugins = [
  "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.zfs",
  "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.snapshotter.v1.blockfile",
  "io.containerd.snapshotter.v1.erofs",
  "io.containerd.tracing.processor.v1.otlp",
  "io.containerd.internal.v1.tracing",
  "io.containerd.nri.v1.nri",
]

[grpc]
  address = {_toml_string(layout.containerd_socket)}

[plugins."io.containerd.cri.v1.images"]
  snapshotter = "overlayfs"
  [plugins."io.containerd.cri.v1.images".pinned_images]
    sandbox = {_toml_string(PAUSE_IMAGE)}

[plugins."io.containerd.cri.v1.runtime"]
  restrict_oom_score_adj = true
  netns_mounts_under_state_dir = true
  enable_selinux = false
  disable_apparmor = true
  [plugins."io.containerd.cri.v1.runtime".cni]
    bin_dirs = [{_toml_string(cni_bin_dir)}]
    conf_dir = {_toml_string(layout.cni_conf_dir)}
    max_conf_num = 1
  [plugins."io.containerd.cri.v1.runtime".containerd]
    default_runtime_name = "runc"
    [plugins."io.containerd.cri.v1.runtime".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.cri.v1.runtime".containerd.runtimes.runc.options]
        BinaryName = {_toml_string(runc)}
        Root = {_toml_string(layout.runc_root)}
        SystemdCgroup = false

[plugins."io.containerd.grpc.v1.cri"]
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
"""


def cni_config(layout: NodeLayout) -> str:
    """One bridge network with host-local addresses; no masquerading: pods reach only this machine."""
    conflist = {
        "cniVersion": "1.0.0",
        "name": CNI_NETWORK,
        "plugins": [
            {
                "type": "bridge",
                "bridge": BRIDGE,
                "isGateway": True,
                "ipMasq": False,
                "hairpinMode": True,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{"subnet": POD_CIDR, "gateway": NODE_IP}]],
                    "routes": [{"dst": "0.0.0.0/0"}],
                    "dataDir": str(layout.cni_ipam_dir),
                },
            }
        ],
    }
    return json.dumps(conflist, indent=2) + "\n"


def kubelet_config(
    layout: NodeLayout, *, ca: Path, serving_cert: Path, serving_key: Path, healthz_port: int
) -> dict[str, object]:
    """KubeletConfiguration: client-certificate and webhook authentication, webhook authorization.

    Image garbage collection and eviction thresholds are set out of reach: the images are
    imported, not pulled, so a collected image could not come back.
    """
    return {
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        "address": NODE_IP,
        "port": KUBELET_PORT,
        "readOnlyPort": 0,
        "healthzBindAddress": "127.0.0.1",
        "healthzPort": healthz_port,
        "tlsCertFile": str(serving_cert),
        "tlsPrivateKeyFile": str(serving_key),
        "authentication": {
            "anonymous": {"enabled": False},
            "webhook": {"enabled": True},
            "x509": {"clientCAFile": str(ca)},
        },
        "authorization": {"mode": "Webhook"},
        "cgroupDriver": "cgroupfs",
        "cgroupRoot": CGROUP_ROOT,
        # hybrid cgroup v1 hosts are still common on VMs; the kubelet refuses them unless told
        "failCgroupV1": False,
        "containerRuntimeEndpoint": f"unix://{layout.containerd_socket}",
        "clusterDNS": [NODE_IP],
        "clusterDomain": CLUSTER_DOMAIN,
        "resolvConf": str(layout.resolv_conf),
        "podLogsDir": str(layout.pod_logs),
        "failSwapOn": False,
        "staticPodPath": "",
        "registerNode": True,
        "rotateCertificates": False,
        "serializeImagePulls": False,
        "imageGCHighThresholdPercent": 100,
        "imageGCLowThresholdPercent": 99,
        "evictionHard": {
            "memory.available": "100Mi",
            "nodefs.available": "1%",
            "nodefs.inodesFree": "1%",
            "imagefs.available": "1%",
        },
        "maxPods": 110,
        "podPidsLimit": -1,
        "shutdownGracePeriod": "0s",
    }


def kube_proxy_config(layout: NodeLayout, *, healthz_port: int, metrics_port: int) -> dict[str, object]:
    """KubeProxyConfiguration in iptables mode; it leaves the conntrack sysctls as they are."""
    return {
        "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
        "kind": "KubeProxyConfiguration",
        "clientConnection": {"kubeconfig": str(layout.kubeconfig("kube-proxy"))},
        "hostnameOverride": NODE_NAME,
        "mode": "iptables",
        "clusterCIDR": POD_CIDR,
        "healthzBindAddress": f"127.0.0.1:{healthz_port}",
        "metricsBindAddress": f"127.0.0.1:{metrics_port}",
        "nodePortAddresses": [f"{NODE_IP}/32"],
        "conntrack": {
            "maxPerCore": 0,
            "min": 0,
            "tcpEstablishedTimeout": "0s",
            "tcpCloseWaitTimeout": "0s",
        },
    }


def corefile(kubeconfig: Path, *, health_port: int, ready_port: int) -> str:
    """CoreDNS for the cluster domain on the node address; other names are not resolved at all."""
    return f"""{CLUSTER_DOMAIN}:{DNS_PORT} in-addr.arpa:{DNS_PORT} ip6.arpa:{DNS_PORT} {{
    bind {NODE_IP}
    errors
    health 127.0.0.1:{health_port}
    ready 127.0.0.1:{ready_port}
    kubernetes {CLUSTER_DOMAIN} in-addr.arpa ip6.arpa {{
        kubeconfig {kubeconfig}
        pods insecure
    }}
    cache 5
}}
.:{DNS_PORT} {{
    bind {NODE_IP}
    errors
}}
"""


def resolv_conf() -> str:
    """The resolver file the kubelet reads for pods with ``dnsPolicy: Default``: the node's DNS only."""
    return f"nameserver {NODE_IP}\n"
