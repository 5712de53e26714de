"""Namespace users bound to the built-in view and edit roles, with real tokens on the real API
server (issue: platform fit): view reads LunaPlugins and reports; writing them comes with edit only
when the chart is told (rbac.aggregateToEdit)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.support.accounts import service_account_kube
from tests.support.chart import CHART, NO_KUBELET
from tests.support.operator_harness import plugin_manifest, route_code
from tests.support.sidecar_harness import wait_for

pytestmark = pytest.mark.kube


def _can(who: Any, namespace: str, verb: str, resource: str) -> bool:
    result = who.kubectl("auth", "can-i", verb, resource, "-n", namespace, check=False)
    return result.stdout.strip() == "yes"


def test_view_and_edit_users_get_what_the_chart_aggregates(
    kube: Any, crd: None, namespace: str, tmp_path: Path
) -> None:
    release = f"r{namespace[-6:]}"
    accounts = {}
    for role in ("view", "edit"):
        kube.kubectl("create", "serviceaccount", role, "-n", namespace)
        kube.kubectl(
            "create",
            "rolebinding",
            role,
            "-n",
            namespace,
            f"--clusterrole={role}",
            f"--serviceaccount={namespace}:{role}",
        )
        accounts[role] = service_account_kube(kube, namespace, role, tmp_path / "accounts")
    viewer, editor = accounts["view"], accounts["edit"]
    kube.helm("install", release, str(CHART), *NO_KUBELET, "--namespace", namespace)
    try:
        # the aggregation controller folds the chart's role into view, edit and admin a moment later
        wait_for(
            lambda: _can(viewer, namespace, "list", "lunaplugins.luna.dev"),
            timeout=30,
            what="view to read LunaPlugins",
        )
        for who in (viewer, editor):
            assert _can(who, namespace, "get", "lunapluginruntimes.luna.dev")
            assert who.kubectl("get", "lp", "-n", namespace).returncode == 0
        manifest = plugin_manifest("by-editor", namespace, route_code("/e", "e"))
        for who in (viewer, editor):
            refused = who.kubectl("apply", "-f", "-", "-n", namespace, input=manifest, check=False)
            assert refused.returncode != 0 and "forbidden" in refused.stderr.lower(), refused.stderr

        kube.helm(
            "upgrade",
            release,
            str(CHART),
            *NO_KUBELET,
            "--namespace",
            namespace,
            "--set",
            "rbac.aggregateToEdit=true",
        )
        wait_for(
            lambda: _can(editor, namespace, "create", "lunaplugins.luna.dev"),
            timeout=30,
            what="edit to write LunaPlugins",
        )
        created = editor.kubectl("apply", "-f", "-", "-n", namespace, input=manifest, check=False)
        assert created.returncode == 0, created.stderr
        assert not _can(viewer, namespace, "create", "lunaplugins.luna.dev"), "view stays read-only"
        assert not _can(editor, namespace, "create", "lunapluginruntimes.luna.dev"), (
            "reports are the sidecars'"
        )
    finally:
        kube.kubectl("delete", "lunaplugins", "--all", "-n", namespace, "--wait=false", check=False)
        kube.helm("uninstall", release, "--namespace", namespace, check=False)
    wait_for(
        lambda: not _can(viewer, namespace, "list", "lunaplugins.luna.dev"),
        timeout=30,
        what="uninstall to take it back",
    )
