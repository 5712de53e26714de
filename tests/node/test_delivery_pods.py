"""At-least-once delivery on real pods: the queue on a PersistentVolumeClaim outlives the pod.

A StatefulSet runs the stand-in handlers service (one replica) with the sidecar injected; its
``volumeClaimTemplate`` is named like the chart's queue volume (``luna-sidecar-queues``), so the
injection keeps the pod's claim instead of adding the emptyDir. The claim binds a static hostPath
PersistentVolume the test makes (no dynamic provisioner here). A LunaPlugin asks for
``spec.delivery: {mode: at-least-once}`` (the chart's default stays at-most-once) and forwards
the service's events to a sink pod behind a Service; the sink answers 503 until the test says it
is up. Events are posted to the sidecar's intake while the sink is down, the pod is deleted
mid-outage, the sink comes back, and the new pod (same name, same claim) delivers the backlog:
every accepted event arrives, a redelivered one with the same delivery id.
"""

from __future__ import annotations

import json
import shutil
import uuid
from pathlib import Path
from typing import Any

from tests.node.conftest import NodeCluster
from tests.node.pods import RESTRICTED_CONTAINER, answered, get, recent_events
from tests.node.workload import RELEASE, apply, handlers_service, install_chart, lunaplugin, reach
from tests.support.sidecar_harness import wait_for

SIDECAR = "luna-sidecar"
QUEUE_VOLUME = "luna-sidecar-queues"  # the chart's queue volume (luna_operator.injection.QUEUE_VOLUME)
POD = "handlers-0"
SINK_PORT = 8000
EVENTS = 20

#: the third party: answers 503 to POST /events until POST /up; GET /received lists what it took
SINK_SERVER = """
import json, threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

state = {"up": False, "received": []}
lock = threading.Lock()


class Sink(BaseHTTPRequestHandler):
    def reply(self, status, body=b"{}"):
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if self.path in ("/up", "/down"):
            state["up"] = self.path == "/up"
            return self.reply(200)
        if self.path != "/events":
            return self.reply(404)
        if not state["up"]:
            return self.reply(503, b'{"error": "down"}')
        with lock:
            state["received"].append(json.loads(body))
        return self.reply(200)

    def do_GET(self):
        if self.path == "/received":
            with lock:
                return self.reply(200, json.dumps(state["received"]).encode())
        return self.reply(200, json.dumps({"up": state["up"]}).encode())

    def log_message(self, *args):
        pass


ThreadingHTTPServer(("0.0.0.0", 8000), Sink).serve_forever()
"""

#: the plugin: one POST per batch, with the delivery id as idempotency key; a refusal raises
FORWARDER = """
from aiohttp import ClientSession, ClientTimeout

from luna_plugins.delivery import delivery_context
from luna_plugins.handler_event.base_plugin import BaseEventSendingPlugin, Event


class Forwarder(BaseEventSendingPlugin):
    async def initialize(self):
        self.session = ClientSession(timeout=ClientTimeout(total=5))

    async def close(self):
        await self.session.close()

    async def sendEvents(self, events, handlerId, accountId, requestId, createEventTime,
                         endEventTime, logger, *args, **kwargs):
        delivery = delivery_context()
        documents = [e.asDict() if isinstance(e, Event) else e.asHandlerEventDict() for e in events]
        message = {"id": delivery.id, "attempt": delivery.attempt, "requestId": requestId,
                   "events": documents}
        headers = {"Idempotency-Key": delivery.id}
        async with self.session.post(self.settings["sink"], json=message, headers=headers) as response:
            if response.status != 200:
                raise RuntimeError(f"the sink answered {response.status}")
"""

#: run in the sidecar container: POST the events to its intake, print the answers' statuses
POST_EVENTS = f"""
import json, urllib.error, urllib.request

codes = []
for n in range({EVENTS}):
    body = {{"events": [{{"n": n}}], "handlerId": "h", "accountId": "a", "requestId": f"r{{n}}",
            "createEventTime": "2026-12-07T00:00:00+00:00", "endEventTime": "2026-12-07T00:00:01+00:00"}}
    request = urllib.request.Request(
        "http://127.0.0.1:8081/events/sending_event", data=json.dumps(body).encode(),
        headers={{"Content-Type": "application/json"}}, method="POST")
    try:
        codes.append(urllib.request.urlopen(request, timeout=30).status)
    except urllib.error.HTTPError as exc:
        codes.append(exc.code)
print(json.dumps(codes))
"""
PLUGINS = "import urllib.request as u; print(u.urlopen('http://127.0.0.1:8081/plugins').read().decode())"


def sink(image: str) -> list[dict[str, Any]]:
    labels = {"app": "sink"}
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "sink", "labels": labels},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "securityContext": {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}},
                    "containers": [
                        {
                            "name": "sink",
                            "image": image,
                            "imagePullPolicy": "Never",
                            "command": ["python", "-c", SINK_SERVER],
                            "ports": [{"name": "http", "containerPort": SINK_PORT}],
                            "readinessProbe": {"httpGet": {"path": "/", "port": "http"}, "periodSeconds": 2},
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
        "metadata": {"name": "sink"},
        "spec": {"selector": labels, "ports": [{"name": "http", "port": SINK_PORT, "targetPort": "http"}]},
    }
    return [deployment, service]


def persistent_volume(name: str, storage_class: str, namespace: str, path: str) -> dict[str, Any]:
    """A static hostPath volume, reserved (claimRef) for the StatefulSet's one claim."""
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolume",
        "metadata": {"name": name},
        "spec": {
            "capacity": {"storage": "1Gi"},
            "accessModes": ["ReadWriteOnce"],
            "persistentVolumeReclaimPolicy": "Retain",
            "storageClassName": storage_class,
            "claimRef": {"namespace": namespace, "name": f"{QUEUE_VOLUME}-{POD}"},
            "hostPath": {"path": path, "type": "DirectoryOrCreate"},
        },
    }


def stateful_handlers(image: str, storage_class: str) -> list[dict[str, Any]]:
    """The stand-in handlers service as a StatefulSet of one replica whose queue volume is its
    own claim; an init container gives that volume to the sidecar's user (a hostPath volume is
    created root-owned, and the kubelet applies no fsGroup to it)."""
    account, deployment, service = handlers_service(image)
    spec = deployment["spec"]
    pod = spec["template"]["spec"]
    pod["initContainers"] = [
        {
            "name": "queue-owner",
            "image": image,
            "imagePullPolicy": "Never",
            "command": [
                "python",
                "-c",
                "import os; os.chown('/queues', 10001, 10001); os.chmod('/queues', 0o770)",
            ],
            "volumeMounts": [{"name": QUEUE_VOLUME, "mountPath": "/queues"}],
            "securityContext": {
                "runAsUser": 0,
                "runAsNonRoot": False,
                "allowPrivilegeEscalation": False,
                "readOnlyRootFilesystem": True,
                "capabilities": {"drop": ["ALL"], "add": ["CHOWN", "FOWNER"]},
                "seccompProfile": {"type": "RuntimeDefault"},
            },
        }
    ]
    pod["securityContext"] = {"seccompProfile": {"type": "RuntimeDefault"}}
    statefulset = {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": deployment["metadata"],
        "spec": {
            "serviceName": service["metadata"]["name"],
            "replicas": 1,
            "selector": spec["selector"],
            "template": spec["template"],
            "volumeClaimTemplates": [
                {
                    "metadata": {"name": QUEUE_VOLUME},
                    "spec": {
                        "accessModes": ["ReadWriteOnce"],
                        "storageClassName": storage_class,
                        "resources": {"requests": {"storage": "1Gi"}},
                    },
                }
            ],
        },
    }
    return [account, statefulset, service]


def ready_pod(cluster: NodeCluster, namespace: str, not_uid: str | None = None) -> dict[str, Any]:
    """Pod handlers-0 once all its containers are ready (another one than ``not_uid``)."""

    def ready() -> dict[str, Any] | None:
        found = get(cluster.kube, namespace, "pods", "-l", "app=handlers")["items"]
        for pod in found:
            if pod["metadata"]["name"] != POD or pod["metadata"].get("deletionTimestamp"):
                continue
            if pod["metadata"]["uid"] == not_uid:
                continue
            statuses = pod["status"].get("containerStatuses") or []
            if len(statuses) == 2 and all(status.get("ready") for status in statuses):
                return dict(pod)
        return None

    try:
        found: dict[str, Any] = wait_for(ready, timeout=300, what=f"pod {POD} ready with its sidecar")
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{recent_events(cluster.kube, namespace)}") from None
    return found


def sidecar_plugin(cluster: NodeCluster, namespace: str, module: str) -> dict[str, Any] | None:
    """The sidecar's ``GET /plugins`` entry of ``module``, asked inside the pod."""
    answer = cluster.kube.kubectl(
        "exec", "-n", namespace, POD, "-c", SIDECAR, "--", "python", "-c", PLUGINS, check=False, timeout=60
    )
    if answer.returncode != 0:
        return None
    for plugin in json.loads(answer.stdout)["plugins"]:
        if plugin["name"] == module:
            return dict(plugin)
    return None


def queue_of(cluster: NodeCluster, namespace: str) -> dict[str, Any] | None:
    plugin = sidecar_plugin(cluster, namespace, "forwarder")
    if plugin is None or plugin["state"] != "running" or not plugin["classes"]:
        return None
    delivery = plugin["classes"][0].get("delivery")
    return dict(delivery) if delivery else None


def test_the_backlog_on_a_claim_survives_the_pods_deletion_and_reaches_the_sink(
    node_cluster: NodeCluster,
) -> None:
    kube = node_cluster.kube
    suffix = uuid.uuid4().hex[:6]
    namespace = f"luna-dlv-{suffix}"
    volume, storage_class = f"luna-dlv-{suffix}", f"luna-dlv-{suffix}"
    host_path = f"/tmp/luna-dlv-{suffix}"
    install_chart(node_cluster, namespace)
    try:
        apply(kube, namespace, *sink(node_cluster.image))
        sink_ip = get(kube, namespace, "service", "sink")["spec"]["clusterIP"]
        apply(kube, namespace, persistent_volume(volume, storage_class, namespace, host_path))
        plugin = lunaplugin(
            "forwarder",
            FORWARDER,
            module="forwarder",
            settings={"sink": f"http://{sink_ip}:{SINK_PORT}/events"},
        )
        plugin["spec"]["delivery"] = {
            "mode": "at-least-once",
            "retry": {"initialBackoff": 0.2, "maxBackoff": 1, "maxElapsed": 0},  # retried forever
            "breaker": {"failures": 3, "openSeconds": 2},
        }
        apply(kube, namespace, plugin, *stateful_handlers(node_cluster.image, storage_class))
        stored = get(kube, namespace, "lunaplugin", "forwarder")["spec"]
        assert stored.get("delivery", {}).get("mode") == "at-least-once", (
            "the cluster's LunaPlugin CRD dropped spec.delivery: it is older than this tree "
            "(helm never upgrades CRDs; apply crds/ first)"
        )
        first = ready_pod(node_cluster, namespace)
        # the injection kept the pod's own claim as the queue volume
        (queues,) = [v for v in first["spec"]["volumes"] if v["name"] == QUEUE_VOLUME]
        assert queues == {
            "name": QUEUE_VOLUME,
            "persistentVolumeClaim": {"claimName": f"{QUEUE_VOLUME}-{POD}"},
        }
        wait_for(
            lambda: (
                (get(kube, namespace, "lunaplugin", "forwarder").get("status") or {}).get("loaded") == "1/1"
            ),
            timeout=240,
            what="the plugin loaded on the pod",
        )
        queue = wait_for(lambda: queue_of(node_cluster, namespace), timeout=60, what="the durable queue")
        assert queue["mode"] == "at-least-once" and queue["queueDir"].startswith(
            "/var/lib/luna-plugins/queues/"
        )

        with reach(node_cluster, namespace, "sink", SINK_PORT) as sink_url:
            # the sink is down from the start: every batch is accepted, none delivered
            posted = kube.kubectl(
                "exec", "-n", namespace, POD, "-c", SIDECAR, "--", "python", "-c", POST_EVENTS, timeout=120
            )
            codes = json.loads(posted.stdout.strip().splitlines()[-1])
            assert codes == [202] * EVENTS, codes
            accepted = {f"r{n}" for n in range(EVENTS)}
            wait_for(
                lambda: (
                    (q := queue_of(node_cluster, namespace)) is not None
                    and q["pending"] == EVENTS
                    and q["headAttempt"] >= 2
                ),
                timeout=60,
                what="the backlog retried against the sink that is down",
            )

            # the pod is deleted mid-outage; the StatefulSet makes it again, with the same claim
            kube.kubectl("delete", "pod", POD, "-n", namespace, "--wait=true", timeout=180)
            second = ready_pod(node_cluster, namespace, not_uid=first["metadata"]["uid"])
            assert second["metadata"]["uid"] != first["metadata"]["uid"]
            backlog = wait_for(
                lambda: (q := queue_of(node_cluster, namespace)) is not None and q["pending"] == EVENTS and q,
                timeout=120,
                what="the new pod to find the backlog on the claim",
            )
            assert backlog["deadLetters"] == 0

            # the sink comes back: the new pod delivers every accepted event
            reply = answered("POST", f"{sink_url}/up")
            assert reply is not None and reply.status == 200

            def received() -> list[dict[str, Any]]:
                answer = answered("GET", f"{sink_url}/received")
                return list(answer.json()) if answer is not None and answer.status == 200 else []

            def all_arrived() -> list[dict[str, Any]] | None:
                found = received()
                return found if {message["requestId"] for message in found} >= accepted else None

            arrived = wait_for(all_arrived, timeout=180, what="every accepted event at the sink")
        ids: dict[str, set[str]] = {}
        for message in arrived:
            ids.setdefault(message["requestId"], set()).add(message["id"])
        assert set(ids) == accepted
        assert all(len(found) == 1 for found in ids.values()), ids  # a redelivery keeps its id
        for message in arrived:  # each batch carried its own event
            assert [event.get("n") for event in message["events"]] == [int(message["requestId"][1:])]
        wait_for(
            lambda: (q := queue_of(node_cluster, namespace)) is not None and q["pending"] == 0,
            timeout=60,
            what="an empty queue",
        )
    finally:
        for doomed in (["statefulset", "handlers"], ["deployment", "sink"], ["service", "handlers", "sink"]):
            kube.kubectl("delete", *doomed, "-n", namespace, "--ignore-not-found", check=False, timeout=180)
        kube.kubectl("delete", "lunaplugins", "--all", "-n", namespace, "--timeout=60s", check=False)
        kube.kubectl("delete", "pvc", "--all", "-n", namespace, "--wait=true", check=False, timeout=120)
        kube.kubectl("delete", "pv", volume, "--ignore-not-found", "--wait=true", check=False, timeout=120)
        kube.helm("uninstall", RELEASE, "--namespace", namespace, "--wait", "--timeout", "2m", check=False)
        kube.kubectl("delete", "namespace", namespace, "--wait=false", check=False)
        if node_cluster.state_dir is not None:  # our own node: its hostPath is this machine's
            shutil.rmtree(Path(host_path), ignore_errors=True)
