"""Moving a LunaPlugin to another service and renaming its module: the real operator keeps the
plugin's ConfigMap (its labels and its ``<module>.py`` key) and both services' active lists in step
on every pass, not only when the code changes; a change that fails does not take effect."""

from __future__ import annotations

import hashlib
from typing import Any

import pytest

from tests.support.operator_harness import Cluster, plugin_manifest, route_code

pytestmark = pytest.mark.kube

BROKEN = "def broken(:\n"


def sha(code: str) -> str:
    return hashlib.sha256(code.encode()).hexdigest()


def config_map(cluster: Cluster, plugin: str) -> dict[str, Any]:
    found = cluster.get("configmap", f"lunaplugin-{plugin}")
    assert found is not None, f"no ConfigMap for {plugin}"
    return found


def test_moving_a_plugin_with_the_same_code_moves_its_configmap(cluster: Cluster, operator: Any) -> None:
    ns, code = cluster.namespace, route_code("/m", "moved")
    cluster.apply(plugin_manifest("mover", ns, code))
    cluster.wait_phase("mover", "Ready")
    cluster.wait_active(["mover"])
    cluster.apply(plugin_manifest("mover", ns, code, service="matcher"))
    cluster.wait_active(["mover"], service="matcher")
    cluster.wait_active([], service="handlers")
    labels = config_map(cluster, "mover")["metadata"]["labels"]
    assert labels["luna.dev/service"] == "matcher"
    assert cluster.wait_phase("mover", "Ready")["codeHash"] == sha(code)
    # the sidecars of matcher select by that label: the plugin's ConfigMap is among them
    selected = cluster.items("configmaps", "luna.dev/service=matcher")
    assert {item["metadata"]["name"] for item in selected} == {"lunaplugin-mover", "luna-plugins-matcher"}


def test_moving_a_plugin_with_broken_code_moves_its_last_good_version(
    cluster: Cluster, operator: Any
) -> None:
    ns, good = cluster.namespace, route_code("/m", "good")
    cluster.apply(plugin_manifest("mover", ns, good))
    cluster.wait_active(["mover"])
    cluster.apply(plugin_manifest("mover", ns, BROKEN, service="matcher"))
    details = cluster.wait_active(["mover"], service="matcher")
    assert details["mover"]["codeHash"] == sha(good)
    cluster.wait_active([], service="handlers")
    status = cluster.wait_phase("mover", "Invalid")
    assert "keeps serving" in status["message"] and status["codeHash"] == sha(good)
    moved = config_map(cluster, "mover")
    assert moved["metadata"]["labels"]["luna.dev/service"] == "matcher"
    assert moved["data"] == {"mover.py": good}


def test_renaming_the_module_with_the_same_code_renames_its_key(cluster: Cluster, operator: Any) -> None:
    ns, code = cluster.namespace, route_code("/r", "renamed")
    cluster.apply(plugin_manifest("renamer", ns, code))
    cluster.wait_active(["renamer"])
    cluster.apply(plugin_manifest("renamer", ns, code, module="renamed"))
    details = cluster.wait_active(["renamed"])
    assert details["renamed"]["codeHash"] == sha(code)
    assert config_map(cluster, "renamer")["data"] == {"renamed.py": code}
    assert cluster.wait_phase("renamer", "Ready")["module"] == "renamed"


def test_renaming_the_module_with_a_code_change(cluster: Cluster, operator: Any) -> None:
    ns, first, second = cluster.namespace, route_code("/r", "1"), route_code("/r", "2")
    cluster.apply(plugin_manifest("renamer", ns, first))
    cluster.wait_active(["renamer"])
    cluster.apply(plugin_manifest("renamer", ns, second, module="renamed"))
    assert cluster.wait_active(["renamed"])["renamed"]["codeHash"] == sha(second)
    assert config_map(cluster, "renamer")["data"] == {"renamed.py": second}


def test_a_rename_with_broken_code_keeps_the_old_module_serving(cluster: Cluster, operator: Any) -> None:
    ns, good = cluster.namespace, route_code("/r", "good")
    cluster.apply(plugin_manifest("renamer", ns, good))
    cluster.wait_active(["renamer"])
    cluster.apply(plugin_manifest("renamer", ns, BROKEN, module="renamed"))
    status = cluster.wait_phase("renamer", "Invalid")
    assert "keeps serving as module 'renamer'" in status["message"], status
    assert (status["module"], status["codeHash"]) == ("renamer", sha(good))
    assert cluster.active()[0] == ["renamer"]
    assert config_map(cluster, "renamer")["data"] == {"renamer.py": good}
    # fixed: the rename takes effect
    cluster.apply(plugin_manifest("renamer", ns, good, module="renamed"))
    cluster.wait_active(["renamed"])
    assert config_map(cluster, "renamer")["data"] == {"renamed.py": good}


def test_a_rename_to_a_reserved_name_keeps_the_old_module_serving(cluster: Cluster, operator: Any) -> None:
    ns, good = cluster.namespace, route_code("/r", "good")
    cluster.apply(plugin_manifest("renamer", ns, good))
    cluster.wait_active(["renamer"])
    cluster.apply(plugin_manifest("renamer", ns, route_code("/r", "new"), module="json"))
    status = cluster.wait_phase("renamer", "Invalid")
    assert "'json' would shadow the module" in status["message"] and "keeps serving" in status["message"]
    assert cluster.active()[0] == ["renamer"]
    assert config_map(cluster, "renamer")["data"] == {"renamer.py": good}


def test_a_relabelled_configmap_is_put_back_by_the_next_pass(cluster: Cluster, operator: Any) -> None:
    """Labels are reconciled on every pass (here the periodic one), not only when code changes."""
    from tests.support.sidecar_harness import wait_for

    ns = cluster.namespace
    cluster.apply(plugin_manifest("steady", ns, route_code("/s")))
    cluster.wait_active(["steady"])
    cluster.kube.kubectl(
        "label", "--overwrite", "configmap", "lunaplugin-steady", "-n", ns, "luna.dev/service=elsewhere"
    )
    wait_for(
        lambda: config_map(cluster, "steady")["metadata"]["labels"]["luna.dev/service"] == "handlers",
        timeout=40,
        what="the operator to put the service label back",
    )
