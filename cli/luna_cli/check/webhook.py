"""Does the LunaPlugin admission webhook work: a trusted certificate, and broken code refused?

The webhooks are found by what they do: every webhook of a ValidatingWebhookConfiguration whose
rules cover CREATE of ``luna.dev`` ``lunaplugins`` (the chart's and the one the operator registers
itself alike), narrowed to one release's configurations when its name is given.

Proof goes through the API server, as every real request does: a server-side dry-run create of a
LunaPlugin whose code does not parse (nothing is stored). The answer tells apart a refusal by the
webhook (``admission webhook "X" denied the request``: it works), a call that failed (``failed
calling webhook "X"``: a certificate the API server does not trust, or no server), and an
admission (no webhook refused: not called, or failing open under ``failurePolicy: Ignore``).

Two results: ``webhook certificate`` (the caBundle is usable and the served certificate verifies
against it: by a handshake when the webhook has a URL reachable from here, else by the API
server's call) and ``webhook admission``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Literal

from luna_cli.check.certificates import BundleError, Handshake, expiry_note, handshake, read_bundle
from luna_cli.check.kube import Kube, Reply
from luna_cli.check.results import Result, failed, passed
from luna_contract.crds import EXPECTED
from luna_contract.names import GROUP

CERTIFICATE = "webhook certificate"
ADMISSION = "webhook admission"
CONFIGURATIONS = "/apis/admissionregistration.k8s.io/v1/validatingwebhookconfigurations"
INSTALL = "install the chart with webhook.enabled=true (the default), or run the operator with --webhook"
#: the probe: valid for the CRD's schema, refused by the webhook (the code does not parse)
PROBE_NAME = "luna-plugins-check"
PROBE_CODE = "def broken(:\n"

_DENIED = re.compile(r'admission webhook "(?P<webhook>[^"]+)" denied the request:?\s*(?P<why>.*)', re.DOTALL)
_FAILED = re.compile(r'failed calling webhook "(?P<webhook>[^"]+)":?\s*(?P<why>.*)', re.DOTALL)


@dataclass(frozen=True)
class Webhook:
    """One webhook entry that validates LunaPlugins."""

    configuration: str
    name: str
    client_config: dict[str, Any]
    namespace_selector: dict[str, Any]
    failure_policy: str

    @property
    def label(self) -> str:
        return f"{self.configuration}/{self.name}"


#: how the API server answered the probe: a webhook denied it, a webhook call failed, it was
#: admitted, or anything else (the namespace is missing, the caller may not create plugins, ...)
Outcome = Literal["refused", "call-failed", "admitted", "error"]


@dataclass(frozen=True)
class Admission:
    """How the API server answered the dry-run create of the broken probe."""

    outcome: Outcome
    webhook: str
    """the webhook the message names (refused, call-failed)"""
    message: str
    status: int | None = None


def covers_lunaplugins(webhook: dict[str, Any]) -> bool:
    """Whether the webhook's rules match CREATE of LunaPlugins."""
    for rule in webhook.get("rules") or []:
        if (
            set(rule.get("apiGroups") or []) & {GROUP, "*"}
            and set(rule.get("resources") or []) & {"lunaplugins", "*"}
            and set(rule.get("operations") or []) & {"CREATE", "*"}
        ):
            return True
    return False


def webhooks_of(configurations: list[dict[str, Any]]) -> list[Webhook]:
    return [
        Webhook(
            str(configuration["metadata"]["name"]),
            str(webhook.get("name")),
            webhook.get("clientConfig") or {},
            webhook.get("namespaceSelector") or {},
            str(webhook.get("failurePolicy") or "Fail"),
        )
        for configuration in configurations
        for webhook in configuration.get("webhooks") or []
        if isinstance(webhook, dict) and covers_lunaplugins(webhook)
    ]


def probe_namespace(webhooks: list[Webhook], requested: str | None, default: str) -> str:
    """``requested``, else ``default`` unless the webhooks' namespace selectors name other
    namespaces by ``kubernetes.io/metadata.name`` (the chart's ``operator.namespaces``): then the
    first of those."""
    if requested:
        return requested
    named: list[str] = []
    for webhook in webhooks:
        selector = webhook.namespace_selector
        if "kubernetes.io/metadata.name" in (selector.get("matchLabels") or {}):
            named.append(str(selector["matchLabels"]["kubernetes.io/metadata.name"]))
        for expression in selector.get("matchExpressions") or []:
            if expression.get("key") == "kubernetes.io/metadata.name" and expression.get("operator") == "In":
                named.extend(str(value) for value in expression.get("values") or [])
    return default if not named or default in named else named[0]


def probe_plugin(namespace: str) -> dict[str, Any]:
    crd = next(crd for crd in EXPECTED if crd.kind == "LunaPlugin")
    return {
        "apiVersion": f"{GROUP}/{crd.version}",
        "kind": crd.kind,
        "metadata": {"name": PROBE_NAME, "namespace": namespace},
        "spec": {"code": PROBE_CODE},
    }


def classify(reply: Reply) -> Admission:
    """What the API server's answer to the probe means."""
    if reply.ok:
        return Admission("admitted", "", "", reply.status)
    message = reply.message
    patterns: tuple[tuple[Outcome, re.Pattern[str]], ...] = (("refused", _DENIED), ("call-failed", _FAILED))
    for outcome, pattern in patterns:
        found = pattern.search(message)
        if found:
            return Admission(outcome, found.group("webhook"), found.group("why").strip(), reply.status)
    return Admission("error", "", message, reply.status)


def is_tls_failure(message: str) -> bool:
    lowered = message.lower()
    return any(word in lowered for word in ("x509", "tls:", "certificate"))


async def check_webhook(kube: Kube, release: str | None, namespace: str | None) -> list[Result]:
    """The ``webhook certificate`` and ``webhook admission`` results."""
    query = {"labelSelector": f"app.kubernetes.io/instance={release}"} if release else {}
    reply = await kube.get(CONFIGURATIONS, **query)
    if not reply.ok:
        detail = f"cannot list ValidatingWebhookConfigurations: {reply.message}"
        fix = "use credentials that may list validatingwebhookconfigurations"
        return [failed(CERTIFICATE, detail, fix), failed(ADMISSION, detail, fix)]
    webhooks = webhooks_of([c for c in reply.body.get("items") or [] if isinstance(c, dict)])
    if not webhooks:
        scope = f" of release {release}" if release else ""
        detail = f"no ValidatingWebhookConfiguration{scope} validates {GROUP} lunaplugins"
        return [failed(CERTIFICATE, detail, INSTALL), failed(ADMISSION, detail, INSTALL)]
    where = probe_namespace(webhooks, namespace, kube.namespace)
    plugins = (
        f"/apis/{GROUP}/{probe_plugin(where)['apiVersion'].split('/')[1]}/namespaces/{where}/lunaplugins"
    )
    admission = classify(await kube.post(plugins, probe_plugin(where), dryRun="All"))
    certificates = [await _certificate(webhook, admission) for webhook in webhooks]
    return [_combine(CERTIFICATE, certificates), _admission(admission, webhooks, where)]


async def _certificate(webhook: Webhook, admission: Admission) -> Result:
    try:
        bundle = read_bundle(webhook.client_config.get("caBundle"))
    except BundleError as exc:
        return failed(
            CERTIFICATE,
            f"{webhook.label}: {exc}",
            "set the caBundle to the CA of the webhook's serving certificate (the chart does it)",
        )
    expiry = expiry_note(bundle)
    if expiry == "CA EXPIRED":
        return failed(
            CERTIFICATE, f"{webhook.label}: the caBundle's CA has expired", "renew the webhook's CA"
        )
    url = webhook.client_config.get("url")
    if url:
        shook = await handshake(str(url), bundle)
    else:
        service = webhook.client_config.get("service") or {}
        shook = Handshake(None, f"Service {service.get('namespace')}/{service.get('name')}")
    note = f" ({expiry})" if expiry else ""
    if shook.verified:
        return passed(CERTIFICATE, f"{webhook.label}: {shook.detail}{note}")
    mismatch_fix = (
        f"make the caBundle of {webhook.configuration} and the webhook's serving certificate agree: the "
        "certificate must be signed by that CA and name the host the API server calls (after a "
        "renewal, the operator must serve the new certificate)"
    )
    if shook.verified is False:
        return failed(CERTIFICATE, f"{webhook.label}: {shook.detail}", mismatch_fix)
    if admission.webhook == webhook.name and admission.outcome == "refused":
        return passed(CERTIFICATE, f"{webhook.label}: the API server verified it, calling the webhook{note}")
    if (
        admission.webhook == webhook.name
        and admission.outcome == "call-failed"
        and is_tls_failure(admission.message)
    ):
        return failed(
            CERTIFICATE,
            f"{webhook.label}: the API server does not trust it: {admission.message}",
            mismatch_fix,
        )
    return failed(
        CERTIFICATE,
        f"{webhook.label}: not verified: {shook.detail}, and the API server's call did not get through",
        "see webhook admission below",
    )


def _combine(name: str, results: list[Result]) -> Result:
    """One result of several webhooks: ok when every one is."""
    details = "; ".join(result.detail for result in results)
    fix = next((result.fix for result in results if not result.ok), "")
    return Result(name, not fix and all(result.ok for result in results), details, fix)


def _admission(admission: Admission, webhooks: list[Webhook], namespace: str) -> Result:
    ours = {webhook.name for webhook in webhooks}
    probe = f"(server-side dry run in namespace {namespace})"
    if admission.outcome == "refused" and admission.webhook in ours:
        return passed(
            ADMISSION, f'a LunaPlugin with broken code is refused by webhook "{admission.webhook}" {probe}'
        )
    if admission.outcome == "refused":
        return failed(
            ADMISSION,
            f'refused by webhook "{admission.webhook}", not one that validates LunaPlugins: '
            f"{admission.message}",
            "see which webhook that is: kubectl get validatingwebhookconfigurations",
        )
    if admission.outcome == "call-failed":
        if is_tls_failure(admission.message):
            return failed(
                ADMISSION,
                f'the API server failed calling webhook "{admission.webhook}": its certificate is not '
                f"trusted: {admission.message}",
                "see webhook certificate above",
            )
        return failed(
            ADMISSION,
            f'the API server failed calling webhook "{admission.webhook}": {admission.message}',
            "is the operator Ready and serving its webhook? see the operator check and its logs",
        )
    if admission.outcome == "admitted":
        ignoring = [webhook.label for webhook in webhooks if webhook.failure_policy == "Ignore"]
        open_note = (
            f"; {', '.join(ignoring)} has failurePolicy Ignore: a call that fails admits everything"
            if ignoring
            else ""
        )
        return failed(
            ADMISSION,
            f"a LunaPlugin with broken code was admitted {probe}: no webhook refused it{open_note}",
            "see webhook certificate and operator above; the API server logs 'failing open' for such calls",
        )
    if admission.status == 404:
        return failed(
            ADMISSION, f"{admission.message} {probe}", "pass --namespace NS, a namespace the operator watches"
        )
    if admission.status == 403:
        return failed(
            ADMISSION,
            f"not allowed to create LunaPlugins {probe}: {admission.message}",
            "use credentials that may create lunaplugins, or --namespace",
        )
    return failed(
        ADMISSION,
        f"refused, but not by a webhook {probe}: {admission.message}",
        "the CRD may not be the one of this release: see the crd checks",
    )
