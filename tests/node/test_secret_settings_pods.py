"""Settings from Secrets on real pods: delivered through the kubelet-mounted settings Secret,
rotated, removed; and the value is nowhere but in Secrets.

The plugin serves the SHA-256 of its ``token`` setting (never the value itself), so the test can
tell which value it runs with while the value stays out of every HTTP answer.
"""

from __future__ import annotations

import base64
import hashlib
import json
import time
import uuid

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

TOKEN_DIGEST = """
import hashlib
from luna_plugins.base.plugins_meta.base_plugins import BaseBackgroundPlugin, pluginHTTPResponse

class TokenDigest(BaseBackgroundPlugin):
    async def initialize(self):
        digest = hashlib.sha256(self.settings["token"].encode()).hexdigest()
        self.addRoute("/token-digest", lambda request: pluginHTTPResponse(body=digest))
"""
SIDECAR = "luna-sidecar"
#: the sidecar's GET /plugins, asked inside its pod (the admin listener is on loopback)
PLUGINS = "import urllib.request as u; print(u.urlopen('http://127.0.0.1:8081/plugins').read().decode())"


def offered_secret(value: str) -> dict[str, object]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "forwarder-credentials", "labels": {"luna.dev/plugin-settings": "true"}},
        "data": {"token": base64.b64encode(value.encode()).decode()},
    }


def digest(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def everything_readable_without_secrets(cluster: NodeCluster, namespace: str) -> str:
    """ConfigMaps, LunaPlugins (status included), sidecar reports, Events, every container's log
    of the namespace and of the operator, and the sidecar's GET /plugins answer."""
    kube = cluster.kube
    parts = [
        kube.kubectl(
            "get",
            "configmaps,lunaplugins,lunapluginruntimes,events",
            "-n",
            namespace,
            "-o",
            "json",
        ).stdout
    ]
    for pod in get(kube, namespace, "pods")["items"]:
        for container in pod["spec"]["containers"]:
            name = pod["metadata"]["name"]
            parts.append(
                kube.kubectl("logs", "-n", namespace, name, "-c", container["name"], check=False).stdout
            )
            if container["name"] == SIDECAR:
                script = "import urllib.request; print(urllib.request.urlopen('http://127.0.0.1:8081/plugins').read().decode())"
                answer = kube.kubectl(
                    "exec", "-n", namespace, name, "-c", SIDECAR, "--", "python", "-c", script
                )
                assert '"plugins"' in answer.stdout, answer.stdout
                parts.append(answer.stdout)
    return "\n".join(parts)


def test_a_secret_setting_reaches_the_plugin_is_rotated_and_stays_out_of_everything_else(
    node_cluster: NodeCluster,
) -> None:
    kube = node_cluster.kube
    namespace = f"luna-sec-{uuid.uuid4().hex[:6]}"
    first, second = f"first-{uuid.uuid4().hex}", f"second-{uuid.uuid4().hex}"
    install_chart(node_cluster, namespace)
    try:
        plugin = lunaplugin("forwarder", TOKEN_DIGEST, module="forwarder")
        plugin["spec"]["settingsFrom"] = [
            {"setting": "token", "secretKeyRef": {"name": "forwarder-credentials", "key": "token"}}
        ]
        apply(kube, namespace, offered_secret(first), plugin, *handlers_service(node_cluster.image))
        wait_ready_replicas(kube, namespace, "handlers", 1)
        with reach(node_cluster, namespace, "handlers", 8080) as routes:

            def served() -> str:
                reply = answered("GET", f"{routes}/token-digest")
                return reply.text if reply is not None and reply.status == 200 else ""

            wait_for(lambda: served() == digest(first), timeout=240, what="the plugin on the first token")

            # rotation: the operator rewrites the settings Secret, the kubelet the mounted file,
            # the sidecar reloads the plugin (the bound is the kubelet's sync period, ~1 min)
            rotated = time.monotonic()
            apply(kube, namespace, offered_secret(second))
            wait_for(lambda: served() == digest(second), timeout=240, what="the plugin on the rotated token")
            print(f"rotation reached the plugin in {time.monotonic() - rotated:.1f} s")

            haystack = everything_readable_without_secrets(node_cluster, namespace)
            haystack += kube.kubectl(
                "logs", "-n", namespace, "-l", "app.kubernetes.io/component=operator"
            ).stdout
            assert first not in haystack and second not in haystack

            # the Secret goes: the plugin says so, and the version running keeps its value
            kube.kubectl("delete", "secret", "forwarder-credentials", "-n", namespace)

            def pending() -> str:
                status = get(kube, namespace, "lunaplugin", "forwarder").get("status") or {}
                return str(status.get("message")) if status.get("phase") == "Pending" else ""

            message = wait_for(pending, timeout=60, what="the plugin Pending on the missing Secret")
            assert "forwarder-credentials" in message and "keeps serving" in message, message
            assert served() == digest(second)
            held = get(kube, namespace, "secret", "luna-plugins-handlers-settings")
            stored = json.loads(base64.b64decode(held["data"]["forwarder.json"]))
            assert stored == {"token": second}
    finally:
        kube.kubectl("delete", "deployment,service", "-l", "app=handlers", "-n", namespace, check=False)
        kube.helm("uninstall", RELEASE, "--namespace", namespace, "--wait", "--timeout", "2m", check=False)
        kube.kubectl("delete", "namespace", namespace, "--wait=false", check=False)
