"""Pods that asked for the sidecar and run without it: found by a periodic scan and reported.

The injection webhook fails open (``failurePolicy: Ignore``: a cluster must keep creating Pods
while the operator restarts), so a Pod created while no replica answered starts without its
sidecar; so does a Pod that predates the label on its namespace, and a Pod that asks by the
``luna.dev/inject`` annotation only (earlier versions honoured it; the API server now sends only
labelled Pods to the webhook). Nothing in the Pod shows it. :class:`InjectionAudit` lists the
Pods' metadata every ``interval`` seconds and, for each Pod found without the sidecar:

- sets ``luna_operator_pods_missing_sidecar{luna_namespace, reason}`` (the chart's
  ``LunaPodsMissingSidecar`` alert fires on it);
- posts one Warning Event ``SidecarMissing`` on the Pod (``kubectl describe pod``, ``kubectl
  get events``), once per Pod for as long as this replica runs.

:func:`missing_sidecar` is the pure decision. The scan reads metadata only (the API server's
``PartialObjectMetadataList``, in pages): Pod specs, with their environment, are never fetched,
except the few Pods that ask, lack the ``luna.dev/injected`` annotation and may have the sidecar
written into them by hand.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from luna_operator.events import EventRecorder
from luna_operator.injection import INJECT_ANNOTATION, INJECT_LABEL, INJECTED_ANNOTATION
from luna_operator.metrics import OperatorMetrics

log = logging.getLogger("luna.operator")

Reason = Literal["not-injected", "annotation-only"]
"""``not-injected``: labelled (or in a namespace labelled ``enabled``) and created without the
sidecar; ``annotation-only``: asks by the annotation alone, which no webhook call follows."""

REASONS: tuple[Reason, ...] = ("not-injected", "annotation-only")
NAMESPACE_ENABLED = "enabled"
#: namespaces the chart's webhooks never inject into
EXCLUDED_NAMESPACES = frozenset({"kube-system", "kube-node-lease"})
EVENT_REASON = "SidecarMissing"
ADVICE: Mapping[Reason, str] = {
    "not-injected": (
        "asks for the luna-plugins sidecar but was created without it (the injection webhook did not "
        "answer, or the namespace was labelled luna.dev/inject=enabled after the Pod was created); "
        "its plugins do not run. Delete the Pod or restart its workload (kubectl rollout restart) "
        "to get the sidecar."
    ),
    "annotation-only": (
        "asks for the luna-plugins sidecar by the annotation luna.dev/inject only, which the API "
        "server does not send to the injection webhook; its plugins do not run. Label the Pod "
        "template luna.dev/inject=true (or its namespace luna.dev/inject=enabled)."
    ),
}


def _flag(value: object) -> str:
    return str(value if value is not None else "").strip().lower()


def _asks(metadata: Mapping[str, Any], namespace_enabled: bool) -> Reason | None:
    label = _flag((metadata.get("labels") or {}).get(INJECT_LABEL))
    annotation = _flag((metadata.get("annotations") or {}).get(INJECT_ANNOTATION))
    if "disabled" in (label, annotation):
        return None
    if label == "true" or namespace_enabled:
        return "not-injected"
    return "annotation-only" if annotation == "true" else None


def missing_sidecar(
    pod: Mapping[str, Any], *, container: str, namespace_enabled: bool, spec_known: bool = True
) -> Reason | None:
    """Why ``pod`` (a Pod body, or its metadata alone with ``spec_known=False``) is a Pod that
    should run the sidecar ``container`` and does not; None when it does, or does not ask for it.

    A Pod being deleted, or finished (``status.phase`` Succeeded or Failed), runs nothing and is
    not reported. With ``spec_known=False`` only the ``luna.dev/injected`` annotation counts as
    having the sidecar: the caller reads the Pod's spec before reporting it.
    """
    metadata = pod.get("metadata") or {}
    if metadata.get("deletionTimestamp") or metadata.get("namespace") in EXCLUDED_NAMESPACES:
        return None
    if (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed"):
        return None
    reason = _asks(metadata, namespace_enabled)
    if reason is None or INJECTED_ANNOTATION in (metadata.get("annotations") or {}):
        return None
    if spec_known:
        spec = pod.get("spec") or {}
        for listed in (spec.get("containers") or [], spec.get("initContainers") or []):
            if any(isinstance(c, Mapping) and c.get("name") == container for c in listed):
                return None
    return reason


@dataclass(frozen=True)
class MissedPod:
    """One Pod found without the sidecar it asked for."""

    namespace: str
    name: str
    uid: str
    reason: Reason


class PodsApi(Protocol):
    """The reads a scan makes; bodies are plain dicts as the API returns them."""

    async def list_pod_metadata(
        self, namespace: str | None, token: str | None
    ) -> tuple[list[dict[str, Any]], str | None]:
        """One page of the Pods' metadata (of ``namespace``, or every namespace) and the
        continue token of the next page (None after the last)."""
        ...

    async def list_namespace_names(self, label_selector: str) -> list[str]:
        """Names of the namespaces matching ``label_selector``."""
        ...

    async def read_pod(self, namespace: str, name: str) -> dict[str, Any] | None:
        """The Pod, or None when it is gone."""
        ...


class InjectionAudit:
    """Scans for :class:`MissedPod` and reports them (module docstring).

    ``namespaces``: the operator's watched namespaces (empty: all); ``namespace_opt_in``: Pods of
    namespaces labelled ``luna.dev/inject=enabled`` count as asking (the operator serves that
    webhook); ``active``: whether this replica is the one that reports (peering)."""

    def __init__(
        self,
        api: PodsApi,
        container: str,
        metrics: OperatorMetrics,
        events: EventRecorder,
        *,
        namespaces: tuple[str, ...] = (),
        namespace_opt_in: bool = True,
        interval: float = 60.0,
        active: Callable[[], Awaitable[bool]] | None = None,
    ) -> None:
        self.api = api
        self.container = container
        self.metrics = metrics
        self.events = events
        self.namespaces = namespaces
        self.namespace_opt_in = namespace_opt_in
        self.interval = interval
        self.active = active
        self._announced: set[str] = set()
        self.last: list[MissedPod] = []

    async def run(self) -> None:
        """Scan every ``interval`` seconds until cancelled; a failed scan is counted and logged,
        and the figures of the last good scan stay."""
        while True:
            if self.active is None or await self.active():
                await self.audit()
            else:  # the active replica reports; this one's last figures would go stale
                self.metrics.set_missing_sidecars({})
            await asyncio.sleep(self.interval)

    async def audit(self) -> list[MissedPod] | None:
        """One scan: report what it finds; None when the API could not be read."""
        try:
            missed = await self.scan()
        except Exception as exc:
            self.metrics.injection_audits.labels("error").inc()
            log.warning("the scan for Pods without their sidecar failed: %s", exc)
            return None
        self.metrics.injection_audits.labels("ok").inc()
        self.last = missed
        counts: dict[tuple[str, str], int] = {}
        for pod in missed:
            counts[(pod.namespace, pod.reason)] = counts.get((pod.namespace, pod.reason), 0) + 1
        self.metrics.set_missing_sidecars(counts)
        await self._announce(missed)
        return missed

    async def scan(self) -> list[MissedPod]:
        """The Pods in scope that asked for the sidecar and run without it, sorted."""
        enabled: set[str] = set()
        if self.namespace_opt_in:
            enabled = set(await self.api.list_namespace_names(f"{INJECT_LABEL}={NAMESPACE_ENABLED}"))
        found: list[MissedPod] = []
        for namespace in self.namespaces or (None,):
            token: str | None = None
            while True:
                items, token = await self.api.list_pod_metadata(namespace, token)
                for item in items:
                    missed = await self._check(item, enabled)
                    if missed is not None:
                        found.append(missed)
                if not token:
                    break
        return sorted(found, key=lambda p: (p.namespace, p.name))

    async def _check(self, item: Mapping[str, Any], enabled: set[str]) -> MissedPod | None:
        metadata = item.get("metadata") or {}
        namespace, name = str(metadata.get("namespace") or ""), str(metadata.get("name") or "")
        inside = namespace in enabled
        if (
            missing_sidecar(item, container=self.container, namespace_enabled=inside, spec_known=False)
            is None
        ):
            return None
        pod = await self.api.read_pod(namespace, name)  # the sidecar may be written in by hand
        if pod is None:
            return None
        reason = missing_sidecar(pod, container=self.container, namespace_enabled=inside)
        if reason is None:
            return None
        return MissedPod(namespace, name, str((pod.get("metadata") or {}).get("uid") or ""), reason)

    async def _announce(self, missed: list[MissedPod]) -> None:
        current = {pod.uid for pod in missed}
        self._announced &= current  # a Pod that got well (or went) is announced again if it returns
        for pod in missed:
            if pod.uid in self._announced:
                continue
            involved = {
                "apiVersion": "v1",
                "kind": "Pod",
                "name": pod.name,
                "namespace": pod.namespace,
                "uid": pod.uid,
            }
            message = f"Pod {pod.namespace}/{pod.name} {ADVICE[pod.reason]}"
            if await self.events.post_on(involved, "Warning", EVENT_REASON, message):
                self._announced.add(pod.uid)
