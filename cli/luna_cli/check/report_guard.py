"""Is the report guard in force: a ValidatingAdmissionPolicy over lunapluginruntimes, bound to Deny?

The chart's ``templates/report-guard.yaml`` makes the policy ``<release>-luna-plugins-reports``
and its binding; they are found by what they guard (any policy whose resource rules cover
``luna.dev`` ``lunapluginruntimes``), narrowed to one release's objects when its name is given.
"""

from __future__ import annotations

from typing import Any

from luna_cli.check.kube import Kube
from luna_cli.check.results import Result, failed, passed
from luna_contract.names import GROUP

NAME = "report guard"
API = "/apis/admissionregistration.k8s.io/v1"
ENABLE = "install the chart with reportGuard.enabled=true (the default), Kubernetes 1.30 or later"


def guards_reports(policy: dict[str, Any]) -> bool:
    """Whether ``policy``'s resource rules match LunaPluginRuntime writes."""
    rules = ((policy.get("spec") or {}).get("matchConstraints") or {}).get("resourceRules") or []
    return any(
        set(rule.get("apiGroups") or []) & {GROUP, "*"}
        and set(rule.get("resources") or []) & {"lunapluginruntimes", "*"}
        for rule in rules
        if isinstance(rule, dict)
    )


async def check_report_guard(kube: Kube, release: str | None) -> Result:
    query = {"labelSelector": f"app.kubernetes.io/instance={release}"} if release else {}
    policies = await kube.get(f"{API}/validatingadmissionpolicies", **query)
    if policies.status == 404:
        return failed(NAME, "the API server serves no ValidatingAdmissionPolicy (v1)", ENABLE)
    if not policies.ok:
        return failed(
            NAME,
            f"cannot list ValidatingAdmissionPolicies: {policies.message}",
            "use credentials that may list validatingadmissionpolicies",
        )
    names = sorted(str(p["metadata"]["name"]) for p in policies.body.get("items") or [] if guards_reports(p))
    if not names:
        scope = f" of release {release}" if release else ""
        return failed(NAME, f"no ValidatingAdmissionPolicy{scope} guards lunapluginruntimes", ENABLE)
    bindings = await kube.get(f"{API}/validatingadmissionpolicybindings")
    if not bindings.ok:
        return failed(
            NAME,
            f"cannot list ValidatingAdmissionPolicyBindings: {bindings.message}",
            "use credentials that may list validatingadmissionpolicybindings",
        )
    bound = {
        str((b.get("spec") or {}).get("policyName")): str(b["metadata"]["name"])
        for b in bindings.body.get("items") or []
        if "Deny" in ((b.get("spec") or {}).get("validationActions") or [])
    }
    found = [f"{name} bound by {bound[name]} (Deny)" for name in names if name in bound]
    if not found:
        return failed(
            NAME,
            f"policy {', '.join(names)} is not bound with validationActions Deny: it guards nothing",
            "restore the chart's ValidatingAdmissionPolicyBinding (helm upgrade the release)",
        )
    return passed(NAME, "; ".join(found))
