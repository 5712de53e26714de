"""Small helpers of the pod suite: one-shot pods, reading objects, waiting on them."""

from __future__ import annotations

import json
import textwrap
from typing import Any

import yaml

from tests.support.kube_fixtures import Kube
from tests.support.sidecar_harness import Reply, http, wait_for

RESTRICTED_CONTAINER = {
    "allowPrivilegeEscalation": False,
    "readOnlyRootFilesystem": True,
    "runAsNonRoot": True,
    "runAsUser": 10001,
    "runAsGroup": 10001,
    "capabilities": {"drop": ["ALL"]},
    "seccompProfile": {"type": "RuntimeDefault"},
}


def answered(method: str, url: str, *, timeout: float = 10.0, **kwargs: Any) -> Reply | None:
    """One HTTP request, None when the connection fails: a Service refuses connections until
    kube-proxy has programmed an endpoint for it, a moment after the pod is Ready."""
    try:
        return http(method, url, timeout=timeout, **kwargs)
    except OSError:
        return None


def wait_ok(url: str, *, timeout: float) -> Reply:
    """Wait until ``GET url`` answers 200; the failure names the last answer."""
    last: list[Reply | None] = [None]

    def ok() -> bool:
        last[0] = answered("GET", url)
        return last[0] is not None and last[0].status == 200

    try:
        wait_for(ok, timeout=timeout, what=f"{url} to answer 200")
    except AssertionError as exc:
        seen = "no connection" if last[0] is None else f"{last[0].status} {last[0].text[:300]!r}"
        raise AssertionError(f"{exc}; last answer: {seen}") from None
    assert last[0] is not None
    return last[0]


def get(kube: Kube, namespace: str, *what: str) -> Any:
    """``kubectl get WHAT -o json`` in ``namespace``, parsed."""
    return json.loads(kube.kubectl("get", *what, "-n", namespace, "-o", "json").stdout)


def python_pod(name: str, image: str, script: str, *, service_account: str | None = None) -> dict[str, Any]:
    """A pod that runs ``script`` with the image's Python once, as UID 10001 on a read-only root."""
    spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "containers": [
            {
                "name": "main",
                "image": image,
                "imagePullPolicy": "Never",
                "command": ["python", "-c", textwrap.dedent(script)],
                "securityContext": RESTRICTED_CONTAINER,
            }
        ],
    }
    if service_account:
        spec["serviceAccountName"] = service_account
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name}, "spec": spec}


def run_pod(kube: Kube, namespace: str, pod: dict[str, Any], timeout: float = 120) -> str:
    """Create ``pod``, wait until it has finished, fail unless it succeeded; returns its log."""
    kube.kubectl("apply", "-n", namespace, "-f", "-", input=yaml.safe_dump(pod))
    name = pod["metadata"]["name"]

    def finished() -> str:
        phase: str = get(kube, namespace, "pod", name)["status"].get("phase", "")
        return phase if phase in ("Succeeded", "Failed") else ""

    phase = wait_for(finished, timeout=timeout, what=f"pod {name} to finish")
    log = kube.kubectl("logs", "-n", namespace, name, check=False).stdout
    assert phase == "Succeeded", f"pod {name} {phase}:\n{log}"
    return log


def ready_pods(kube: Kube, namespace: str, selector: str) -> list[dict[str, Any]]:
    """Pods of ``selector`` whose every container is ready (terminating ones excluded)."""
    pods = get(kube, namespace, "pods", "-l", selector)["items"]
    return [
        pod
        for pod in pods
        if not pod["metadata"].get("deletionTimestamp")
        and pod["status"].get("containerStatuses")
        and all(status.get("ready") for status in pod["status"]["containerStatuses"])
    ]


def recent_events(kube: Kube, namespace: str, limit: int = 30) -> str:
    """The namespace's latest events, one per line (for the message of a failed assertion)."""
    events = get(kube, namespace, "events")["items"]
    events.sort(key=lambda event: str(event.get("lastTimestamp") or event.get("eventTime") or ""))
    return "\n".join(
        f"{event.get('lastTimestamp') or event.get('eventTime')} {event['involvedObject'].get('name')}: "
        f"{event.get('reason')}: {event.get('message', '')[:200]}"
        for event in events[-limit:]
    )
