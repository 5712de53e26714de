"""Cluster mode's desired state from the mirrored ConfigMaps: exact hashes, never half an update."""

from __future__ import annotations

import hashlib
import json

import pytest

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
    assert found.plugins is not None and found.waiting == {} and found.problems == []
    assert [entry.module for entry in found.plugins] == ["b", "a"]
    first = found.plugins[0].source
    assert first is not None and first.code == CODE_V1.encode() and first.code_hash == sha(CODE_V1)
    assert first.settings == {"k": "b"} and first.origin == "configmap/lunaplugin-b/b.py"


def test_a_module_whose_new_code_has_not_arrived_keeps_its_running_version() -> None:
    running = PluginSource("a", CODE_V1.encode(), "configmap/lunaplugin-a/a.py")
    found = desired_plugins("handlers", mirror({"a": CODE_V2}, {"a": CODE_V1}), {"a": running}.get)
    assert found.plugins is not None and [entry.source for entry in found.plugins] == [running]
    held, named = sha(CODE_V1)[:12], sha(CODE_V2)[:12]
    assert found.waiting == {"a": f"ConfigMap lunaplugin-a holds code {held}, the active list names {named}"}


def test_a_new_module_without_its_code_yet_is_left_out_not_failed() -> None:
    found = desired_plugins("handlers", mirror({"a": CODE_V1}, {}), lambda module: None)
    assert found.plugins == [] and found.waiting == {"a": "ConfigMap lunaplugin-a not found"}


def test_no_active_list_means_no_change() -> None:
    assert desired_plugins("handlers", {}, lambda module: None).plugins is None


def test_a_broken_active_list_means_no_change_and_says_why() -> None:
    broken = {
        active_list_name("handlers"): MirroredConfigMap(
            active_list_name("handlers"), {active_list_key("handlers"): "[not json"}, {}
        )
    }
    found = desired_plugins("handlers", broken, lambda module: None)
    assert found.plugins is None
    assert len(found.problems) == 1 and "not valid JSON" in found.problems[0]


class _Stream:
    """What ``kubernetes_asyncio.watch.Watch().stream`` yields, for canned events."""

    def __init__(self, events: list[dict[str, object]]) -> None:
        self._events = events

    async def __aenter__(self) -> _Stream:
        return self

    async def __aexit__(self, *exc: object) -> None:
        return None

    def __aiter__(self) -> _Stream:
        return self

    async def __anext__(self) -> dict[str, object]:
        if not self._events:
            raise StopAsyncIteration
        return self._events.pop(0)


async def test_a_bookmark_moves_the_resume_version_without_a_relist(monkeypatch: pytest.MonkeyPatch) -> None:
    """The API server sends bookmarks about once a minute; their object is a plain dict (kubernetes_asyncio
    deserializes only real objects), so reading it as a ConfigMap used to end the watch and re-LIST."""
    from types import SimpleNamespace

    from luna_sidecar import kube_source

    bookmark = {"metadata": {"resourceVersion": "42"}}
    events = [{"type": "BOOKMARK", "object": bookmark, "raw_object": bookmark}]
    monkeypatch.setattr(
        kube_source.watch, "Watch", lambda: SimpleNamespace(stream=lambda *a, **k: _Stream(events))
    )
    changed: list[int] = []
    mirror = kube_source.ConfigMapMirror(
        SimpleNamespace(), "ns", "luna.dev/service=handlers", lambda: changed.append(1)
    )
    assert await mirror._watch("7") == "42"  # resume from the bookmark, no re-list
    assert changed == []
