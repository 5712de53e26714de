"""Cluster mode's desired state from the mirrored ConfigMaps: exact hashes, never half an update."""

from __future__ import annotations

import hashlib
import json

from luna_sidecar.kube_source import MirroredConfigMap, active_list_key, active_list_name, desired_plugins
from luna_sidecar.sources import PluginSource

CODE_V1 = "class P(BaseBackgroundPlugin):\n    pass\n"
CODE_V2 = "class P(BaseBackgroundPlugin):\n    version = 2\n"


def sha(code: str) -> str:
    return hashlib.sha256(code.encode()).hexdigest()


def mirror(modules: dict[str, str], code_in_configmaps: dict[str, str]) -> dict[str, MirroredConfigMap]:
    """An active list naming ``modules`` (module -> wanted code) and plugin ConfigMaps holding
    ``code_in_configmaps`` (module -> code actually there)."""
    details = {
        module: {"codeHash": sha(code), "configMap": f"lunaplugin-{module}", "settings": {"k": module}}
        for module, code in modules.items()
    }
    items = {
        active_list_name("handlers"): MirroredConfigMap(
            active_list_name("handlers"),
            {active_list_key("handlers"): json.dumps(list(modules)), "plugins.json": json.dumps(details)},
            {},
        )
    }
    for module, code in code_in_configmaps.items():
        name = f"lunaplugin-{module}"
        items[name] = MirroredConfigMap(name, {f"{module}.py": code}, {"luna.dev/code-hash": sha(code)})
    return items


def test_modules_whose_code_arrived_are_desired_in_list_order() -> None:
    found = desired_plugins(
        "handlers", mirror({"b": CODE_V1, "a": CODE_V2}, {"a": CODE_V2, "b": CODE_V1}), lambda module: None
    )
    assert found is not None
    desired, waiting = found
    assert [entry.module for entry in desired] == ["b", "a"] and waiting == []
    first = desired[0].source
    assert first is not None and first.code == CODE_V1.encode() and first.code_hash == sha(CODE_V1)
    assert first.settings == {"k": "b"} and first.origin == "configmap/lunaplugin-b/b.py"


def test_a_module_whose_new_code_has_not_arrived_keeps_its_running_version() -> None:
    running = PluginSource("a", CODE_V1.encode(), "configmap/lunaplugin-a/a.py")
    found = desired_plugins("handlers", mirror({"a": CODE_V2}, {"a": CODE_V1}), {"a": running}.get)
    assert found is not None
    desired, waiting = found
    assert waiting == ["a"] and [entry.source for entry in desired] == [running]


def test_a_new_module_without_its_code_yet_is_left_out_not_failed() -> None:
    found = desired_plugins("handlers", mirror({"a": CODE_V1}, {}), lambda module: None)
    assert found == ([], ["a"])


def test_no_active_list_or_a_broken_one_means_no_change() -> None:
    assert desired_plugins("handlers", {}, lambda module: None) is None
    broken = {
        active_list_name("handlers"): MirroredConfigMap(
            active_list_name("handlers"), {active_list_key("handlers"): "[not json"}, {}
        )
    }
    assert desired_plugins("handlers", broken, lambda module: None) is None
