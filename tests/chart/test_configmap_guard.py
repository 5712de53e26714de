"""The chart's ConfigMap guard (a ValidatingAdmissionPolicy and its binding): only the operator's
ServiceAccount may write ConfigMaps with a ``luna.dev/`` label, enforced by the real API server
and tried with real tokens (TokenRequest): a namespace editor's, the operator's, an RBAC
cluster-admin's, the admin certificate's (``system:masters``). The system actors still work: the
garbage collector deletes a deleted plugin's ConfigMaps, the namespace controller empties a
deleted namespace, ``helm uninstall`` removes the guard."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.support.accounts import service_account_kube
from tests.support.chart import CHART, NO_KUBELET, of_kind, render
from tests.support.operator_harness import Cluster, plugin_manifest, route_code, start_operator
from tests.support.sidecar_harness import wait_for

pytestmark = pytest.mark.kube

REFUSED = "ValidatingAdmissionPolicy"


def labelled_configmap(name: str, data: str = "print('hi')", **labels: str) -> str:
    body = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "labels": labels or {"luna.dev/service": "handlers"}},
        "data": {f"{name.replace('-', '_')}.py": data},
    }
    return json.dumps(body)


@dataclass
class Guarded:
    """An installed release whose guard covers ``namespace`` and ``spare``, with the accounts."""

    release: str
    namespace: str
    spare: str
    admin: Any
    editor: Any
    operator: Any
    cluster_admin: Any

    def as_(self, who: Any, *args: str, input: str | None = None, namespace: str | None = None) -> Any:
        return who.kubectl(*args, "-n", namespace or self.namespace, input=input, check=False)


@pytest.fixture
def guarded(kube: Any, crd: None, namespace: str, tmp_path: Path) -> Iterator[Guarded]:
    release, spare = f"r{namespace[-6:]}", f"{namespace[:50]}-spare"
    kube.kubectl("create", "namespace", spare)
    kube.helm(
        "install",
        release,
        str(CHART),
        *NO_KUBELET,
        "--namespace",
        namespace,
        "--set",
        f"operator.namespaces={{{namespace},{spare}}}",
    )
    kube.kubectl("create", "serviceaccount", "editor", "-n", namespace)
    kube.kubectl(
        "create",
        "rolebinding",
        "editor",
        "-n",
        namespace,
        "--clusterrole=edit",
        f"--serviceaccount={namespace}:editor",
    )
    kube.kubectl("create", "serviceaccount", "root", "-n", namespace)
    kube.kubectl(
        "create",
        "clusterrolebinding",
        f"{namespace}-root",
        "--clusterrole=cluster-admin",
        f"--serviceaccount={namespace}:root",
    )
    accounts = tmp_path / "accounts"
    guard = Guarded(
        release,
        namespace,
        spare,
        admin=kube,
        editor=service_account_kube(kube, namespace, "editor", accounts),
        operator=service_account_kube(kube, namespace, f"{release}-luna-plugins", accounts),
        cluster_admin=service_account_kube(kube, namespace, "root", accounts),
    )

    def in_force() -> bool:  # the API server picks a new policy up a moment after it is stored
        result = guard.as_(guard.editor, "create", "-f", "-", input=labelled_configmap("probe"))
        if result.returncode == 0:
            kube.kubectl("delete", "configmap", "probe", "-n", namespace)
        return REFUSED in result.stderr

    wait_for(in_force, timeout=30, what="the ConfigMap guard to be in force")
    try:
        yield guard
    finally:
        kube.helm("uninstall", release, "--namespace", namespace, check=False)
        kube.kubectl("delete", "clusterrolebinding", f"{namespace}-root", "--ignore-not-found", check=False)
        kube.kubectl("delete", "namespace", spare, "--wait=false", "--ignore-not-found", check=False)


def refused(result: Any, operation: str) -> bool:
    return bool(
        result.returncode != 0
        and REFUSED in result.stderr
        and "only the luna-plugins operator" in result.stderr
        and f"may not {operation}" in result.stderr
    )


def test_a_namespace_editor_cannot_write_plugin_configmaps_and_the_operator_can(guarded: Guarded) -> None:
    g = guarded
    # the editor: no labelled ConfigMap, however it tries
    assert refused(g.as_(g.editor, "create", "-f", "-", input=labelled_configmap("evil")), "CREATE")
    assert refused(
        g.as_(
            g.editor,
            "create",
            "-f",
            "-",
            input=labelled_configmap("evil", **{"luna.dev/role": "active-list"}),
        ),
        "CREATE",
    )
    assert (
        g.as_(g.editor, "create", "configmap", "plain", "--from-literal=a=b").returncode == 0
    )  # others: as usual
    assert refused(g.as_(g.editor, "label", "configmap", "plain", "luna.dev/service=handlers"), "UPDATE")
    assert g.as_(g.editor, "delete", "configmap", "plain").returncode == 0
    # the operator's ServiceAccount: create and change (replace, as it does); its ClusterRole grants no
    # delete (the garbage collector deletes), so a Role lets it try: the guard does not stand in the way
    assert g.as_(g.operator, "create", "-f", "-", input=labelled_configmap("lunaplugin-hand")).returncode == 0
    replaced = g.as_(
        g.operator, "replace", "-f", "-", input=labelled_configmap("lunaplugin-hand", "print('v2')")
    )
    assert replaced.returncode == 0, replaced.stderr
    # the editor cannot change it, take the label off (to edit it unguarded afterwards), or delete it
    evil = json.dumps({"data": {"lunaplugin_hand.py": "import os; os.system('evil')"}})
    assert refused(
        g.as_(g.editor, "patch", "configmap", "lunaplugin-hand", "--type=merge", "-p", evil), "UPDATE"
    )
    assert refused(g.as_(g.editor, "label", "configmap", "lunaplugin-hand", "luna.dev/service-"), "UPDATE")
    unlabel = json.dumps({"metadata": {"labels": None}})
    assert refused(
        g.as_(g.editor, "patch", "configmap", "lunaplugin-hand", "--type=merge", "-p", unlabel), "UPDATE"
    )
    assert refused(g.as_(g.editor, "delete", "configmap", "lunaplugin-hand"), "DELETE")
    held = g.admin.kubectl("get", "configmap", "lunaplugin-hand", "-n", g.namespace, "-o", "json").stdout
    assert json.loads(held)["data"] == {"lunaplugin_hand.py": "print('v2')"}
    # an RBAC cluster-admin is refused too; the system:masters certificate is the break-glass
    assert refused(g.as_(g.cluster_admin, "delete", "configmap", "lunaplugin-hand"), "DELETE")
    assert (
        g.as_(
            g.admin, "label", "--overwrite", "configmap", "lunaplugin-hand", "luna.dev/service=x"
        ).returncode
        == 0
    )
    g.admin.kubectl("create", "role", "deleter", "-n", g.namespace, "--verb=delete", "--resource=configmaps")
    g.admin.kubectl(
        "create",
        "rolebinding",
        "deleter",
        "-n",
        g.namespace,
        "--role=deleter",
        f"--serviceaccount={g.namespace}:{g.release}-luna-plugins",
    )
    deleted = g.as_(g.operator, "delete", "configmap", "lunaplugin-hand")
    assert deleted.returncode == 0, deleted.stderr
    # every namespace the operator watches is guarded
    in_spare = labelled_configmap("evil")
    assert refused(g.as_(g.cluster_admin, "create", "-f", "-", input=in_spare, namespace=g.spare), "CREATE")


@pytest.mark.compat
def test_the_operator_and_the_garbage_collector_work_under_the_guard(
    guarded: Guarded, kube: Any, tmp_path: Path
) -> None:
    g = guarded
    cluster = Cluster(kube, g.namespace)
    operator = start_operator(g.operator, g.namespace, tmp_path)
    try:
        cluster.apply(plugin_manifest("guarded", g.namespace, route_code("/g", "1")))
        cluster.wait_phase("guarded", "Ready", timeout=30)
        cluster.apply(plugin_manifest("guarded", g.namespace, route_code("/g", "2")))  # a replace
        wait_for(
            lambda: "2" in cluster.get("configmap", "lunaplugin-guarded")["data"]["guarded.py"], what="v2"
        )  # type: ignore[index]
        tamper = json.dumps({"data": {"LUNA_HANDLERS_ACTIVE_PLUGINS": '["evil"]'}})
        assert refused(
            g.as_(g.editor, "patch", "configmap", "luna-plugins-handlers", "--type=merge", "-p", tamper),
            "UPDATE",
        )
    finally:
        operator.stop()
    assert "Forbidden" not in operator.log() and REFUSED not in operator.log(), operator.log()[-3000:]
    # with the operator gone, the garbage collector deletes the plugin's ConfigMap and the active list
    kube.kubectl("delete", "lunaplugin", "guarded", "-n", g.namespace, "--timeout=30s")
    wait_for(
        lambda: not cluster.items("configmaps", "luna.dev/role"),
        timeout=90,
        what="the garbage collector to delete the plugin's ConfigMap and the active list",
    )


def test_deleting_a_guarded_namespace_completes(guarded: Guarded, kube: Any) -> None:
    g = guarded
    assert (
        g.as_(g.admin, "create", "-f", "-", input=labelled_configmap("left"), namespace=g.spare).returncode
        == 0
    )
    kube.kubectl("delete", "namespace", g.spare, "--timeout=60s")  # the namespace controller empties it
    assert kube.kubectl("get", "namespace", g.spare, check=False).returncode != 0


@pytest.mark.kube
def _render_without_report_guard(kube: Any, *args: str) -> list[dict[str, Any]]:
    """The chart's objects with only the ConfigMap guard's policy (the report guard has its own tests)."""
    return render(kube, "--set", "reportGuard.enabled=false", *args)


def test_the_guard_follows_its_values(kube: Any) -> None:
    objects = _render_without_report_guard(kube)
    (policy,) = of_kind(objects, "ValidatingAdmissionPolicy")
    (binding,) = of_kind(objects, "ValidatingAdmissionPolicyBinding")
    assert binding["spec"]["policyName"] == policy["metadata"]["name"]
    assert binding["spec"]["validationActions"] == ["Deny"]
    assert "matchResources" not in binding["spec"]  # watching all namespaces: guarding all
    users = json.loads(policy["spec"]["variables"][0]["expression"])
    assert users[0] == "system:serviceaccount:luna-system:luna-luna-plugins"
    assert "system:serviceaccount:kube-system:generic-garbage-collector" in users
    assert "system:serviceaccount:kube-system:namespace-controller" in users
    assert json.loads(policy["spec"]["variables"][1]["expression"]) == ["system:masters"]
    (binding,) = of_kind(
        _render_without_report_guard(kube, "--set", "operator.namespaces={a,b}"),
        "ValidatingAdmissionPolicyBinding",
    )
    (expression,) = binding["spec"]["matchResources"]["namespaceSelector"]["matchExpressions"]
    assert expression == {"key": "kubernetes.io/metadata.name", "operator": "In", "values": ["a", "b"]}
    custom = _render_without_report_guard(
        kube,
        "--set",
        "serviceAccount.create=false",
        "--set",
        "serviceAccount.name=mine",
        "--set",
        "configMapGuard.allowedGroups={ops}",
        "--set",
        "configMapGuard.allowedUsers={alice}",
    )
    (policy,) = of_kind(custom, "ValidatingAdmissionPolicy")
    users = json.loads(policy["spec"]["variables"][0]["expression"])
    assert users[0] == "system:serviceaccount:luna-system:mine" and users[-1] == "alice"
    assert json.loads(policy["spec"]["variables"][1]["expression"]) == ["ops"]
    off = _render_without_report_guard(kube, "--set", "configMapGuard.enabled=false")
    assert not of_kind(off, "ValidatingAdmissionPolicy") and not of_kind(
        off, "ValidatingAdmissionPolicyBinding"
    )


def offered_secret(name: str, value: str) -> str:
    body = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "labels": {"luna.dev/plugin-settings": "true"}},
        "stringData": {"token": value},
    }
    return json.dumps(body)


def test_settings_secrets_are_the_operators_and_offered_secrets_the_users(
    guarded: Guarded, kube: Any, tmp_path: Path
) -> None:
    g = guarded
    cluster = Cluster(kube, g.namespace)
    # the editor offers a Secret of its own to plugins: its label is not guarded
    made = g.as_(g.editor, "create", "-f", "-", input=offered_secret("creds", "guarded-value-1"))
    assert made.returncode == 0, made.stderr
    operator = start_operator(g.operator, g.namespace, tmp_path)
    try:
        from_secret = [{"setting": "token", "secretKeyRef": {"name": "creds", "key": "token"}}]
        cluster.apply(plugin_manifest("sec", g.namespace, route_code("/s", "1"), settingsFrom=from_secret))
        cluster.wait_phase("sec", "Ready", timeout=30)
        settings = "luna-plugins-handlers-settings"
        wait_for(lambda: cluster.get("secret", settings), what="the settings Secret")
        # the operator's ServiceAccount wrote it; the editor may neither change nor delete it
        tamper = json.dumps({"stringData": {"sec.json": '{"token": "mine"}'}})
        assert refused(g.as_(g.editor, "patch", "secret", settings, "--type=merge", "-p", tamper), "UPDATE")
        assert refused(g.as_(g.editor, "delete", "secret", settings), "DELETE")
        rotated = g.as_(g.editor, "apply", "-f", "-", input=offered_secret("creds", "guarded-value-2"))
        assert rotated.returncode == 0, rotated.stderr

        def holds_rotated() -> bool:
            data = (cluster.get("secret", settings) or {}).get("data") or {}
            return "guarded-value-2" in base64.b64decode(data.get("sec.json", "")).decode()

        wait_for(holds_rotated, timeout=30, what="the rotated value in the settings Secret")
    finally:
        operator.stop()
    assert "Forbidden" not in operator.log() and REFUSED not in operator.log(), operator.log()[-3000:]
    assert "guarded-value" not in operator.log()
