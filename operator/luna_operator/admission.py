"""The operator's admission webhooks: validation of LunaPlugins (the pass's own checks, at
`kubectl apply` time) and the sidecar injection into Pods; both counted in the metrics."""

from __future__ import annotations

import contextlib
import logging
import time
from typing import Any

import kopf

from luna_contract.names import GROUP, VERSION
from luna_contract.names import PLURAL_PLUGINS as PLURAL
from luna_contract.plugin_modules import module_name
from luna_contract.spec import SpecView
from luna_operator.errors import ApiError, describe
from luna_operator.injection import InjectionRefusedError, InjectionTemplate, plan
from luna_operator.metrics import OperatorMetrics
from luna_operator.sidecar_access import SidecarAccess
from luna_operator.state import OperatorState
from luna_operator.validation import CheckUnavailableError, check_spec, module_taken

log = logging.getLogger("luna.operator")


@contextlib.contextmanager
def _timed(metrics: OperatorMetrics, webhook: str) -> Any:
    """Count one admission request: allowed unless it raises AdmissionError (denied) or else (error)."""
    started = time.monotonic()
    outcome = "allowed"
    try:
        yield
    except kopf.AdmissionError:
        outcome = "denied"
        raise
    except Exception:
        outcome = "error"
        raise
    finally:
        metrics.webhook_requests.labels(webhook, outcome).inc()
        metrics.webhook_duration.labels(webhook).observe(time.monotonic() - started)


def register_injection(
    registry: kopf.OperatorRegistry,
    template: InjectionTemplate,
    namespaces: tuple[str, ...] = (),
    metrics: OperatorMetrics | None = None,
    access: SidecarAccess | None = None,
    *,
    namespace_opt_in: bool = False,
) -> None:
    """The mutating webhooks that give Pods the template's sidecar: ``/inject-sidecar`` for Pods
    labelled ``luna.dev/inject: "true"`` (the annotation of that name is still honoured), and
    ``/inject-sidecar-namespace`` for Pods of namespaces labelled ``luna.dev/inject: enabled``
    (the webhook configurations' selectors send each its Pods; a Pod labelled or annotated
    ``disabled`` is left alone). With ``access``, the Pod's own ServiceAccount is granted what
    the sidecar needs before the Pod is admitted. Pods are not watched: kopf only needs to
    discover the resource to serve admission for it. The failure policy is Ignore: with the
    operator down, Pods are created without the sidecar. Pods outside ``namespaces`` (when set)
    are left alone. ``namespace_opt_in``: serve ``/inject-sidecar-namespace`` too, which injects
    every Pod sent to it, so only where a webhook configuration sends it the Pods of opted-in
    namespaces alone (the chart's; the configuration kopf makes with ``--webhook-managed`` has no
    selectors and gets the first only)."""
    counted = metrics or OperatorMetrics()

    async def inject(body: Any, patch: kopf.Patch, *, namespace_opted_in: bool, dryrun: bool) -> None:
        with _timed(counted, "inject"):
            meta = body.get("metadata") or {}
            namespace = str(meta.get("namespace") or "")
            if namespaces and namespace and namespace not in namespaces:
                return
            try:
                change = plan(body, template, namespace_opted_in=namespace_opted_in)
            except InjectionRefusedError as exc:
                raise kopf.AdmissionError(str(exc), code=422) from None
            except Exception:  # a Pod shaped as we did not expect: created as without the webhook
                log.exception("sidecar injection failed; the pod is created without it")
                return
            if change is None:
                return
            pod = f"{namespace}/{meta.get('name') or str(meta.get('generateName') or '') + '*'}"
            if access is not None and namespace and not dryrun:
                await _grant(access, counted, namespace, change.service_account, pod)
            patch.spec["containers"] = change.containers
            if change.volumes_added:
                patch.spec["volumes"] = change.volumes
            for key, value in change.annotations.items():
                patch.meta.annotations[key] = value
            for key, value in change.labels.items():
                patch.meta.labels[key] = value
            log.info(
                "injected sidecar %r into pod %s (service %s)", change.container_name, pod, change.service
            )
            for warning in change.warnings:
                log.warning("pod %s: %s", pod, warning)

    @kopf.on.mutate(
        "", "v1", "pods", id="inject-sidecar", operations=["CREATE"], ignore_failures=True, registry=registry
    )
    async def inject_sidecar(body: Any, patch: kopf.Patch, dryrun: bool, **_: Any) -> None:
        await inject(body, patch, namespace_opted_in=False, dryrun=dryrun)

    if not namespace_opt_in:
        return

    @kopf.on.mutate(
        "",
        "v1",
        "pods",
        id="inject-sidecar-namespace",
        operations=["CREATE"],
        ignore_failures=True,
        registry=registry,
    )
    async def inject_sidecar_namespace(body: Any, patch: kopf.Patch, dryrun: bool, **_: Any) -> None:
        await inject(body, patch, namespace_opted_in=True, dryrun=dryrun)


async def _grant(
    access: SidecarAccess, metrics: OperatorMetrics, namespace: str, account: str, pod: str
) -> None:
    """Grant the Pod's ServiceAccount the sidecar's access; a failure is logged and counted and the
    Pod still gets the sidecar (which reports the refused calls until the grant succeeds, on the
    next Pod of the account)."""
    try:
        changed = await access.grant(namespace, account)
    except ApiError as exc:
        metrics.sidecar_grants.labels("error").inc()
        log.warning(
            "pod %s: could not grant ServiceAccount %s/%s the sidecar's access (%s): its sidecar's API "
            "calls will be refused until a later Pod of the account is injected",
            pod,
            namespace,
            account,
            describe(exc),
        )
        return
    metrics.sidecar_grants.labels("granted" if changed else "held").inc()


def register_webhook(registry: kopf.OperatorRegistry, state: OperatorState) -> None:
    """The validating admission webhook: the pass's checks at `kubectl apply` time. Its failure
    policy is Ignore, so an operator that is down never blocks users; the pass still marks
    invalid plugins."""

    @kopf.on.validate(
        GROUP,
        VERSION,
        PLURAL,
        registry=registry,
        id="lunaplugin",
        operations=["CREATE", "UPDATE"],
        ignore_failures=True,
    )
    async def validate(spec: Any, body: Any, old: Any = None, **_: Any) -> None:
        with _timed(state.metrics, "validate"):
            await _validate(state, spec, body, old)


async def _validate(state: OperatorState, spec: Any, body: Any, old: Any) -> None:
    meta = body.get("metadata") or {}
    if meta.get("deletionTimestamp") or (old is not None and old.get("spec") == body.get("spec")):
        return  # metadata or status only (finalizers, labels): an invalid plugin must stay deletable
    name = str(meta.get("name") or meta.get("generateName") or "")
    namespace = str(meta.get("namespace") or "")
    fields = SpecView(spec)
    module = module_name(name, fields.module)
    service = fields.service
    checks = check_spec(name, module, spec, prometheus=state.options.prometheus_url is not None)
    problems = [str(p) for p in checks.problems]
    code = fields.raw("code")
    if isinstance(code, str):
        try:
            checked = await state.checker.check(code, pinned_sha256=fields.sha256)
        except CheckUnavailableError as exc:  # no verdict now: admit it, the pass decides
            log.warning("webhook: %s/%s: %s", namespace, name, exc)
            checked = []
        problems += [str(p) for p in checked]
    if fields.enabled:
        for other in state.view.plugins((namespace, service)):
            same = module_name(other.name, other.fields.module) == module
            if other.name != name and not other.deleting and other.fields.enabled and same:
                problems.append(str(module_taken(module, other.name, service)))
    if problems:
        raise kopf.AdmissionError("; ".join(problems), code=422)
