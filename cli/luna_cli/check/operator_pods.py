"""Is the operator running: its Deployment(s), found by the chart's labels, fully Ready?

The chart labels the operator's Deployment ``app.kubernetes.io/name=luna-plugins`` and
``app.kubernetes.io/component=operator``, and ``app.kubernetes.io/instance=<release>``:
:func:`operator_selector` builds that selector. A Deployment passes when it wants at least one
replica, its controller has seen its latest spec and as many replicas are Ready as it wants;
for one that does not, the first pod that is not Ready is named with the reason Kubernetes gives.
"""

from __future__ import annotations

from typing import Any

from luna_cli.check.kube import Kube
from luna_cli.check.results import Result, failed, passed

NAME = "operator"
CHART_SELECTOR = "app.kubernetes.io/name=luna-plugins,app.kubernetes.io/component=operator"


def operator_selector(release: str | None, selector: str | None) -> str:
    """``selector`` when given, else the chart's operator labels (of ``release`` when given)."""
    if selector:
        return selector
    return CHART_SELECTOR + (f",app.kubernetes.io/instance={release}" if release else "")


async def check_operator(kube: Kube, selector: str, namespace: str | None) -> Result:
    """One result for every Deployment ``selector`` matches (in ``namespace``, else in all)."""
    where = f"in namespace {namespace}" if namespace else "in any namespace"
    path = f"/apis/apps/v1/namespaces/{namespace}/deployments" if namespace else "/apis/apps/v1/deployments"
    reply = await kube.get(path, labelSelector=selector)
    if not reply.ok:
        return failed(
            NAME,
            f"cannot list Deployments {where}: {reply.message}",
            "pass --operator-namespace NS (the release's namespace), or use credentials that may "
            "list Deployments",
        )
    deployments = [d for d in reply.body.get("items") or [] if isinstance(d, dict)]
    if not deployments:
        return failed(
            NAME,
            f"no Deployment labelled {selector} {where}",
            "install the chart (helm install luna-plugins charts/luna-plugins), or name the release with "
            "--release NAME or the labels with --selector",
        )
    states = [await _state(kube, deployment) for deployment in deployments]
    problems = [problem for _, problem in states if problem]
    summary = "; ".join(state for state, _ in states)
    if problems:
        return failed(NAME, summary, problems[0])
    return passed(NAME, summary)


async def _state(kube: Kube, deployment: dict[str, Any]) -> tuple[str, str]:
    """(what the Deployment shows, what to do: empty when it is fine)."""
    meta, spec, status = (
        deployment.get("metadata") or {},
        deployment.get("spec") or {},
        deployment.get("status") or {},
    )
    namespace, name = meta.get("namespace", ""), meta.get("name", "")
    wanted = int(spec.get("replicas", 1))
    ready = int(status.get("readyReplicas") or 0)
    shown = f"Deployment {namespace}/{name}: {ready}/{wanted} pods Ready"
    if wanted < 1:
        return f"{shown} (scaled to 0)", f"kubectl -n {namespace} scale deployment {name} --replicas=1"
    if int(status.get("observedGeneration") or 0) < int(meta.get("generation") or 0):
        return f"{shown}, its latest change not rolled out yet", "wait (--wait 2m)"
    if ready >= wanted:
        return shown, ""
    pod, reason = await _first_unready_pod(kube, namespace, spec)
    if pod is None:
        return f"{shown} (no pod yet)", f"kubectl -n {namespace} describe deployment {name}"
    return (
        f"{shown}; pod {pod}: {reason}",
        f"kubectl -n {namespace} describe pod {pod}; kubectl -n {namespace} logs {pod}",
    )


async def _first_unready_pod(kube: Kube, namespace: str, spec: dict[str, Any]) -> tuple[str | None, str]:
    labels = ((spec.get("selector") or {}).get("matchLabels")) or {}
    selector = ",".join(f"{k}={v}" for k, v in sorted(labels.items()))
    reply = await kube.get(f"/api/v1/namespaces/{namespace}/pods", labelSelector=selector)
    for pod in sorted(
        reply.body.get("items") or [], key=lambda p: str((p.get("metadata") or {}).get("name"))
    ):
        reason = _unready_reason(pod.get("status") or {})
        if reason:
            return str(pod["metadata"]["name"]), reason
    return None, ""


def _unready_reason(status: dict[str, Any]) -> str:
    """Why a pod is not Ready, in Kubernetes' words; empty when it is Ready."""
    conditions = {c.get("type"): c for c in status.get("conditions") or [] if isinstance(c, dict)}
    if (conditions.get("Ready") or {}).get("status") == "True":
        return ""
    for container in status.get("containerStatuses") or []:
        state = container.get("state") or {}
        for kind in ("waiting", "terminated"):
            if kind in state and state[kind].get("reason"):
                return f"container {container.get('name')} {kind}: {state[kind]['reason']}"
    scheduled = conditions.get("PodScheduled") or {}
    if scheduled.get("status") == "False":
        return f"not scheduled: {scheduled.get('message') or scheduled.get('reason')}"
    return f"{status.get('phase', 'Unknown')}, not Ready"
