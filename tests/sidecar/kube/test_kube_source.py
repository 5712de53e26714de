"""Cluster mode's desired state from the mirrored ConfigMaps: exact hashes, never half an update."""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

import pytest

from luna_contract.names import active_list_key, active_list_name
from luna_contract.secret_settings import ENTRY_FIELD, encode, version_of
from luna_sidecar.desired.secret_settings import SecretSettingsDir
from luna_sidecar.desired.sources import PluginSource
from luna_sidecar.kube.kube_source import MirroredConfigMap, desired_plugins

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


# --- secret settings (spec.settingsFrom), as the kubelet mounts them --------------------------


def mount(folder: Path, files: dict[str, bytes]) -> None:
    """Write ``files`` the way the kubelet updates a mounted Secret: a new timestamped folder, then
    the ``..data`` link switched to it, and each key a link through ``..data``."""
    version = folder / f"..{time.monotonic_ns()}"
    version.mkdir(parents=True)
    for name, data in files.items():
        (version / name).write_bytes(data)
    link = folder / "..data_tmp"
    link.symlink_to(version.name)
    link.replace(folder / "..data")
    for name in files:
        target = folder / name
        if not target.is_symlink():
            target.symlink_to(f"..data/{name}")


def with_secret(items: dict[str, MirroredConfigMap], module: str, version: str) -> None:
    name = active_list_name("handlers")
    data = dict(items[name].data)
    details = json.loads(data["plugins.json"])
    details[module][ENTRY_FIELD] = version
    data["plugins.json"] = json.dumps(details)
    items[name] = MirroredConfigMap(name, data, {})


def test_secret_settings_join_the_settings_once_the_mounted_version_is_the_named_one(tmp_path: Path) -> None:
    items = mirror({"a": "x = 1\n"}, {"a": "x = 1\n"})
    token = encode({"token": "s3cret"})
    with_secret(items, "a", version_of(token))
    secrets = SecretSettingsDir(tmp_path)

    found = desired_plugins("handlers", items, lambda module: None, secrets)
    assert found.plugins == [] and "not mounted yet" in found.waiting["a"]

    mount(tmp_path, {"a.json": encode({"token": "old"})})
    found = desired_plugins("handlers", items, lambda module: None, secrets)
    assert found.plugins == [] and "not yet the version" in found.waiting["a"]
    assert "old" not in found.waiting["a"] and "s3cret" not in found.waiting["a"]

    mount(tmp_path, {"a.json": token})
    found = desired_plugins("handlers", items, lambda module: None, secrets)
    assert found.plugins is not None
    (plugin,) = found.plugins
    assert plugin.source is not None and dict(plugin.source.settings) == {"k": "a", "token": "s3cret"}


def test_a_rotated_secret_keeps_the_running_version_until_the_kubelet_catches_up(tmp_path: Path) -> None:
    items = mirror({"a": "x = 1\n"}, {"a": "x = 1\n"})
    with_secret(items, "a", version_of(encode({"token": "new"})))
    mount(tmp_path, {"a.json": encode({"token": "old"})})
    running = PluginSource("a", b"x = 1\n", "configmap/lunaplugin-a/a.py", {"k": "a", "token": "old"})
    found = desired_plugins("handlers", items, lambda module: running, SecretSettingsDir(tmp_path))
    assert found.plugins is not None
    assert [plugin.source for plugin in found.plugins] == [running]


def test_the_mounted_folder_reports_a_kubelet_update_as_a_change(tmp_path: Path) -> None:
    secrets = SecretSettingsDir(tmp_path)
    mount(tmp_path, {"a.json": b"{}"})
    assert not secrets.changed()  # the first look only remembers
    assert not secrets.changed()
    mount(tmp_path, {"a.json": b'{"k":"v"}'})
    assert secrets.changed() and not secrets.changed()


def test_an_update_between_reading_and_the_first_check_is_still_a_change(tmp_path: Path) -> None:
    """Seen on a real node: the sidecar read the old file, the kubelet switched ``..data`` 0.2 s
    later, and the first check only remembered the new state: the plugin waited forever."""
    secrets = SecretSettingsDir(tmp_path)
    mount(tmp_path, {"a.json": b"{}"})
    secrets.reading()
    mount(tmp_path, {"a.json": b'{"k":"v"}'})
    assert secrets.changed() and not secrets.changed()


def test_mounted_settings_of_the_wrong_shape_are_refused_without_showing_them(tmp_path: Path) -> None:
    for bad in (b"not json", b'["a"]', b'{"k": 1}'):
        items = mirror({"a": "x = 1\n"}, {"a": "x = 1\n"})
        with_secret(items, "a", version_of(bad))
        mount(tmp_path, {"a.json": bad})
        found = desired_plugins("handlers", items, lambda module: None, SecretSettingsDir(tmp_path))
        assert found.plugins == [] and bad.decode() not in found.waiting["a"], found.waiting


def test_without_a_mounted_folder_a_plugin_with_secret_settings_waits_and_says_why() -> None:
    items = mirror({"a": "x = 1\n"}, {"a": "x = 1\n"})
    with_secret(items, "a", version_of(b"{}"))
    found = desired_plugins("handlers", items, lambda module: None, None)
    assert found.plugins == [] and "--secret-settings-dir" in found.waiting["a"]


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

    from luna_sidecar.kube import kube_source

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


def test_a_canary_runs_on_the_pods_it_names_and_nowhere_else() -> None:
    items = mirror({"a": CODE_V1}, {"a": CODE_V1})
    details = json.loads(items[active_list_name("handlers")].data["plugins.json"])
    details["a"]["canary"] = {
        "codeHash": sha(CODE_V2),
        "configMap": "lunaplugin-a-canary",
        "pods": ["handlers-2"],
    }
    active = items[active_list_name("handlers")]
    items[active.name] = MirroredConfigMap(
        active.name, {**active.data, "plugins.json": json.dumps(details)}, {}
    )
    items["lunaplugin-a-canary"] = MirroredConfigMap("lunaplugin-a-canary", {"a.py": CODE_V2}, {})

    canary = desired_plugins("handlers", items, lambda module: None, pod="handlers-2")
    assert canary.plugins is not None and canary.code_hashes == {"a": sha(CODE_V2)}
    assert canary.runs_canary and canary.rollouts == {"a"}
    source = canary.plugins[0].source
    assert source is not None and source.code == CODE_V2.encode()
    assert source.origin == "configmap/lunaplugin-a-canary/a.py" and source.settings == {"k": "a"}
    for pod in ("handlers-1", "handlers-22", None):
        stable = desired_plugins("handlers", items, lambda module: None, pod=pod)
        assert stable.plugins is not None and stable.code_hashes == {"a": sha(CODE_V1)}
        assert not stable.runs_canary and stable.rollouts == {"a"}
        assert stable.plugins[0].source is not None and stable.plugins[0].source.code == CODE_V1.encode()

    # the canary's code has not arrived (or is not what it names): the pod waits, keeping what runs
    items["lunaplugin-a-canary"] = MirroredConfigMap("lunaplugin-a-canary", {"a.py": CODE_V1}, {})
    running = PluginSource("a", CODE_V1.encode(), "configmap/lunaplugin-a/a.py")
    waiting = desired_plugins("handlers", items, {"a": running}.get, pod="handlers-2")
    assert waiting.plugins is not None and [p.source for p in waiting.plugins] == [running]
    assert "holds code" in waiting.waiting["a"]


def with_entry_fields(items: dict[str, MirroredConfigMap], module: str, **fields: object) -> None:
    """Add ``fields`` to ``module``'s entry of the mirrored active list."""
    active = items[active_list_name("handlers")]
    details = json.loads(active.data["plugins.json"])
    details[module].update(fields)
    items[active.name] = MirroredConfigMap(
        active.name, {**active.data, "plugins.json": json.dumps(details)}, {}
    )


def test_an_entrys_isolation_becomes_the_plugin_sources() -> None:
    items = mirror({"isolated": CODE_V1, "plain": CODE_V1}, {"isolated": CODE_V1, "plain": CODE_V1})
    with_entry_fields(items, "isolated", isolation="process")
    found = desired_plugins("handlers", items, lambda module: None)
    assert found.plugins is not None and found.problems == []
    sources = {entry.module: entry.source for entry in found.plugins}
    isolated, plain = sources["isolated"], sources["plain"]
    assert isolated is not None and isolated.isolation == "process"
    assert plain is not None and plain.isolation == "inProcess"
    # the same code with another isolation is another version of the plugin for the runtime
    assert isolated.code_hash == plain.code_hash and isolated.settings == {"k": "isolated"}


def test_a_canary_pod_runs_the_canary_with_the_entrys_isolation() -> None:
    items = mirror({"a": CODE_V1}, {"a": CODE_V1})
    canary = {"codeHash": sha(CODE_V2), "configMap": "lunaplugin-a-canary", "pods": ["handlers-2"]}
    with_entry_fields(items, "a", isolation="process", canary=canary)
    items["lunaplugin-a-canary"] = MirroredConfigMap("lunaplugin-a-canary", {"a.py": CODE_V2}, {})
    for pod, code in (("handlers-2", CODE_V2), ("handlers-1", CODE_V1)):
        found = desired_plugins("handlers", items, lambda module: None, pod=pod)
        assert found.plugins is not None
        source = found.plugins[0].source
        assert source is not None and (source.code, source.isolation) == (code.encode(), "process")


def test_an_entry_with_an_unknown_isolation_keeps_the_plugins_that_run() -> None:
    items = mirror({"a": CODE_V1}, {"a": CODE_V1})
    with_entry_fields(items, "a", isolation="thread")
    found = desired_plugins("handlers", items, lambda module: None)
    assert found.plugins is None  # nothing converges on a list the operator did not write
    (problem,) = found.problems
    assert "entry 'a'" in problem and "isolation must be one of inProcess, process" in problem
