"""Isolated plugins on real pods: the same sidecar image, a read-only root filesystem, a
non-root user, and the pod's memory limit.

An isolated plugin serves its route through the Service from a process of its own that cannot
read the pod's service-account token or the sidecar's environment; another isolated plugin that
allocates without end is ended (by its memory limit, or by the kernel's OOM killer, which picks
it first) and restarted, while the sidecar container is never restarted and an in-process
plugin keeps answering.
"""

from __future__ import annotations

import uuid
from typing import Any

from tests.node.conftest import NodeCluster
from tests.node.pods import answered, get
from tests.node.workload import (
    RELEASE,
    apply,
    handlers_service,
    install_chart,
    lunaplugin,
    reach,
    wait_ready_replicas,
)
from tests.support.sidecar_harness import wait_for

LOOKS_AROUND = """
import os
from luna_plugins.base.plugins_meta.base_plugins import BaseBackgroundPlugin, pluginHTTPResponse

TOKEN = "/var/run/secrets/kubernetes.io/serviceaccount/token"

def attempt(path):
    try:
        with open(path, "rb") as source:
            source.read(1)
        return "read"
    except OSError as exc:
        return type(exc).__name__

class LooksAround(BaseBackgroundPlugin):
    async def initialize(self):
        self.addRoute("/looks-around", self.look)

    def look(self, request):
        return pluginHTTPResponse(body={
            "pid": os.getpid(),
            "uid": os.getuid(),
            "token": attempt(TOKEN),
            "environ": attempt("/proc/1/environ"),
            "parent_environ": attempt(f"/proc/{os.getppid()}/environ"),
            "luna_variables": sorted(name for name in os.environ if name.startswith("LUNA")),
            "settings": dict(self.settings),
        })
"""

GROWS = """
from luna_plugins.base.plugins_meta.base_plugins import BaseBackgroundPlugin, pluginHTTPResponse

HELD = []

class Grows(BaseBackgroundPlugin):
    async def initialize(self):
        self.addRoute("/grows", self.grow)
        self.addRoute("/grows-alive", lambda request: pluginHTTPResponse(body="alive"))

    def grow(self, request):
        while True:
            HELD.append(bytearray(b"x" * (8 * 1024 * 1024)))
"""

IN_PROCESS = """
import os
from luna_plugins.base.plugins_meta.base_plugins import BaseBackgroundPlugin, pluginHTTPResponse

class Here(BaseBackgroundPlugin):
    async def initialize(self):
        self.addRoute("/here", lambda request: pluginHTTPResponse(body={"pid": os.getpid()}))
"""


def isolated(name: str, code: str, module: str, **spec: Any) -> dict[str, Any]:
    plugin = lunaplugin(name, code, module=module)
    plugin["spec"]["isolation"] = "process"
    plugin["spec"].update(spec)
    return plugin


def diagnosis(kube: Any, namespace: str) -> str:
    """The plugins' status and the sidecar's log, for a failure's message."""
    statuses = [
        f"{item['metadata']['name']}: {item.get('status')}"
        for item in get(kube, namespace, "lunaplugins")["items"]
    ]
    logs = kube.kubectl(
        "logs", "-n", namespace, "-l", "app=handlers", "-c", "luna-sidecar", "--tail", "60", check=False
    )
    return "\n".join(statuses) + "\nsidecar log:\n" + logs.stdout + logs.stderr


def sidecar_restarts(kube: Any, namespace: str) -> int:
    pods = get(kube, namespace, "pods", "-l", "app=handlers")["items"]
    return sum(
        int(status.get("restartCount", 0))
        for pod in pods
        for status in pod.get("status", {}).get("containerStatuses", [])
        if status["name"] == "luna-sidecar"
    )


def test_isolated_plugins_on_a_pod_confined_and_bounded_by_the_pods_memory(node_cluster: NodeCluster) -> None:
    kube = node_cluster.kube
    namespace = f"luna-iso-{uuid.uuid4().hex[:6]}"
    install_chart(
        node_cluster,
        namespace,
        "--set",
        "sidecar.resources.limits.memory=320Mi",
        "--set",
        f"sidecar.isolation.memory={96 * 2**20}",
    )
    try:
        apply(
            kube,
            namespace,
            isolated("looks-around", LOOKS_AROUND, "looks_around", settings={"mine": "own value"}),
            isolated("grows", GROWS, "grows"),
            lunaplugin("here", IN_PROCESS, module="here"),
            *handlers_service(node_cluster.image),
        )
        wait_ready_replicas(kube, namespace, "handlers", 1)
        with reach(node_cluster, namespace, "handlers", 8080) as routes:

            def json_of(path: str) -> Any:
                reply = answered("GET", routes + path)
                return reply.json() if reply is not None and reply.status == 200 else None

            def text_of(path: str) -> str | None:
                reply = answered("GET", routes + path)
                return reply.text if reply is not None and reply.status == 200 else None

            try:
                looked = wait_for(
                    lambda: json_of("/looks-around"), timeout=150, what="the isolated plugin's route"
                )
            except AssertionError as exc:
                raise AssertionError(f"{exc}\n{diagnosis(kube, namespace)}") from None
            here = wait_for(lambda: json_of("/here"), timeout=60, what="the in-process plugin's route")
            assert looked["pid"] != here["pid"], "the isolated plugin runs in a process of its own"
            assert looked["uid"] != 0
            assert looked["token"] != "read" and looked["environ"] != "read", looked
            assert looked["parent_environ"] != "read", looked
            assert looked["luna_variables"] == []
            assert looked["settings"] == {"mine": "own value"}

            wait_for(lambda: text_of("/grows-alive") == "alive", timeout=120, what="the growing plugin")
            reply = answered("GET", routes + "/grows", timeout=60)
            assert reply is not None and reply.status == 503, reply
            wait_for(lambda: text_of("/grows-alive") == "alive", timeout=120, what="its process restarted")
            assert json_of("/here") == here, "the in-process plugin (and the sidecar) kept running"
            assert json_of("/looks-around")["pid"] == looked["pid"], "the other isolated plugin kept running"
            assert sidecar_restarts(kube, namespace) == 0

            def reported() -> dict[str, Any]:
                runtimes = get(kube, namespace, "lunapluginruntimes")["items"]
                for runtime in runtimes:
                    for plugin in runtime.get("spec", {}).get("plugins", []):
                        process = plugin.get("process") or {}
                        if plugin.get("module") == "grows" and process.get("restarts", 0) >= 1:
                            return dict(process)
                return {}

            # the report is refreshed when the process ends, and again once it runs again
            process = wait_for(reported, timeout=60, what="the restart in the pod's report")
            assert process.get("lastExit"), process
    finally:
        kube.kubectl("delete", "deployment,service", "-l", "app=handlers", "-n", namespace, check=False)
        kube.helm("uninstall", RELEASE, "--namespace", namespace, "--wait", "--timeout", "2m", check=False)
        kube.kubectl("delete", "namespace", namespace, "--wait=false", check=False)
