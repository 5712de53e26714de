"""The chart's report guard (a ValidatingAdmissionPolicy): a ServiceAccount writes only the
sidecar report of the pod its token is bound to. Tried on the real API server with real tokens
(TokenRequest bound to real Pod objects, as the kubelet's projected tokens are), issue: hardening."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.support.accounts import service_account_kube, stand_in_pod
from tests.support.chart import CHART, NO_KUBELET
from tests.support.sidecar_harness import wait_for

pytestmark = pytest.mark.kube

REFUSED = "ValidatingAdmissionPolicy"


def report(pod: str, uid: str | None, *, name: str | None = None, service: str = "handlers") -> str:
    metadata: dict[str, Any] = {"name": name or f"{pod}-{service}", "labels": {"luna.dev/service": service}}
    if uid is not None:
        metadata["ownerReferences"] = [{"apiVersion": "v1", "kind": "Pod", "name": pod, "uid": uid}]
    body = {
        "apiVersion": "luna.dev/v1alpha1",
        "kind": "LunaPluginRuntime",
        "metadata": metadata,
        "spec": {"service": service, "pod": pod, "heartbeatTime": "2026-12-07T09:00:00Z", "plugins": []},
    }
    return json.dumps(body)


@dataclass
class Pods:
    namespace: str
    uids: dict[str, str]
    sidecar_of: dict[str, Any]
    unbound: Any
    admin: Any

    def as_(self, who: Any, *args: str, input: str | None = None) -> Any:
        return who.kubectl(*args, "-n", self.namespace, input=input, check=False)


@pytest.fixture
def pods(kube: Any, crd: None, namespace: str, tmp_path: Path) -> Iterator[Pods]:
    release = f"r{namespace[-6:]}"
    kube.helm("install", release, str(CHART), *NO_KUBELET, "--namespace", namespace)
    account = f"{release}-luna-plugins-sidecar"
    uids = {name: stand_in_pod(kube, namespace, name, account) for name in ("pod-a", "pod-b")}
    accounts = tmp_path / "accounts"
    found = Pods(
        namespace,
        uids,
        {
            name: service_account_kube(kube, namespace, account, accounts, pod=(name, uid))
            for name, uid in uids.items()
        },
        service_account_kube(kube, namespace, account, accounts),
        kube,
    )

    def in_force() -> bool:  # the API server picks a new policy up a moment after it is stored
        result = found.as_(found.unbound, "create", "-f", "-", input=report("probe", None))
        if result.returncode == 0:
            kube.kubectl("delete", "lunapluginruntime", "probe-handlers", "-n", namespace)
        return REFUSED in result.stderr

    wait_for(in_force, timeout=30, what="the report guard to be in force")
    try:
        yield found
    finally:
        kube.helm("uninstall", release, "--namespace", namespace, check=False)


def refused(result: Any, words: str) -> bool:
    return bool(result.returncode != 0 and REFUSED in result.stderr and words in result.stderr)


@pytest.mark.compat
def test_a_pod_writes_its_own_report_and_no_other(pods: Pods) -> None:
    a, b = pods.sidecar_of["pod-a"], pods.sidecar_of["pod-b"]
    own = pods.as_(a, "create", "-f", "-", input=report("pod-a", pods.uids["pod-a"]))
    assert own.returncode == 0, own.stderr
    patched = pods.as_(
        a, "patch", "lunapluginruntime", "pod-a-handlers", "--type=merge", "-p", '{"spec": {"plugins": []}}'
    )
    assert patched.returncode == 0, patched.stderr

    # another pod's report: not created, changed or deleted, whatever it names
    assert refused(
        pods.as_(a, "create", "-f", "-", input=report("pod-b", pods.uids["pod-b"])),
        "pod pod-a may write only its own",
    )
    assert refused(
        pods.as_(a, "create", "-f", "-", input=report("pod-b", None, name="pod-a-handlers-x")),
        "pod pod-a may write only its own",
    ), "spec.pod names another pod"
    assert refused(
        pods.as_(a, "create", "-f", "-", input=report("pod-a", pods.uids["pod-b"], name="pod-a-other")),
        "may be owned only by the pod that writes it",
    ), "owned by another pod"
    assert refused(
        pods.as_(
            b,
            "patch",
            "lunapluginruntime",
            "pod-a-handlers",
            "--type=merge",
            "-p",
            '{"spec": {"service": "x"}}',
        ),
        "pod pod-b may write only its own",
    )
    assert refused(
        pods.as_(b, "delete", "lunapluginruntime", "pod-a-handlers"), "pod pod-b may write only its own"
    )

    # a token bound to no pod (what `kubectl create token` gives anyone who may ask for one)
    assert refused(
        pods.as_(pods.unbound, "create", "-f", "-", input=report("pod-c", None)),
        "holds a token not bound to a pod",
    )
    # users are not affected
    assert pods.as_(pods.admin, "delete", "lunapluginruntime", "pod-a-handlers").returncode == 0


def test_the_report_guard_follows_its_value(kube: Any) -> None:
    from tests.support.chart import of_kind, render

    names = {policy["metadata"]["name"] for policy in of_kind(render(kube), "ValidatingAdmissionPolicy")}
    assert names == {"luna-luna-plugins-configmaps", "luna-luna-plugins-reports"}
    off = render(kube, "--set", "reportGuard.enabled=false")
    assert [p["metadata"]["name"] for p in of_kind(off, "ValidatingAdmissionPolicy")] == [
        "luna-luna-plugins-configmaps"
    ]
