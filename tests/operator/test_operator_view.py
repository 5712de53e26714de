"""The operator's view: what kopf's indexes keep, and the view over them that knows its own writes."""

from __future__ import annotations

from typing import Any

from luna_operator.records import PluginRecord
from luna_operator.view import (
    IndexView,
    code_from_services,
    config_map_service,
    index_config_maps,
    index_plugins,
    managing_services,
)


def config_map(
    name: str, version: str = "1", labels: dict[str, str] | None = None, **data: str
) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "namespace": "ns", "resourceVersion": version, "labels": labels or {}},
        "data": data,
    }


def plugin(name: str, service: str = "handlers", uid: str | None = None, **spec: Any) -> PluginRecord:
    return PluginRecord("ns", name, uid or f"uid-{name}", 1, "t0", False, {"service": service, **spec})


def test_plugins_are_indexed_by_namespace_and_service() -> None:
    body = {"metadata": {"name": "p", "namespace": "ns", "uid": "u"}, "spec": {"service": "matcher"}}
    ((key, record),) = index_plugins(body).items()
    assert key == ("ns", "matcher") and record.name == "p"


def test_only_configmaps_a_pass_may_touch_are_indexed_and_trimmed() -> None:
    assert index_config_maps(config_map("kube-root-ca.crt", **{"ca.crt": "x"})) == {}
    assert index_config_maps(config_map("someone-elses", labels={"app": "x"})) == {}
    taken = index_config_maps(config_map("lunaplugin-p", theirs="1"))  # someone else's, named like ours
    assert list(taken) == [("ns", "lunaplugin-p")]
    body = config_map(
        "x", labels={"luna.dev/role": "plugin-code", "luna.dev/service": "handlers"}, **{"p.py": "c"}
    )
    body["metadata"]["managedFields"] = [{"manager": "kubectl"}]
    ((key, kept),) = index_config_maps(body).items()
    assert key == ("ns", "x") and kept["data"] == {"p.py": "c"} and "managedFields" not in kept["metadata"]
    assert config_map_service(kept) == "handlers" and config_map_service(config_map("y")) is None


def test_the_view_shows_its_own_write_until_the_index_catches_up() -> None:
    view = IndexView()
    indexed: dict[Any, list[Any]] = {("ns", "lunaplugin-p"): [config_map("lunaplugin-p", "5", code="old")]}
    view.bind({}, indexed)
    view.wrote("ns", config_map("lunaplugin-p", "6", code="new"), "5")
    assert view.config_map("ns", "lunaplugin-p")["data"] == {"code": "new"}  # type: ignore[index]
    assert view.is_echo("ns", "lunaplugin-p", "6") and not view.is_echo("ns", "lunaplugin-p", "5")
    indexed[("ns", "lunaplugin-p")] = [config_map("lunaplugin-p", "7", code="newer")]  # caught up, moved on
    assert view.config_map("ns", "lunaplugin-p")["data"] == {"code": "newer"}  # type: ignore[index]
    view.wrote("ns", config_map("luna-plugins-handlers", "8"), None)  # created: not in the index yet
    assert view.config_map("ns", "luna-plugins-handlers") is not None
    view.deleted("ns", "luna-plugins-handlers")  # and deleted (by the garbage collector) before it showed
    assert view.config_map("ns", "luna-plugins-handlers") is None
    view.wrote("ns", config_map("lunaplugin-p", "9", code="mine"), "7")
    del indexed[("ns", "lunaplugin-p")]  # replaced by us, then deleted: never shown again
    assert view.config_map("ns", "lunaplugin-p") is None


def test_a_plugin_the_api_server_says_is_gone_is_left_out() -> None:
    view = IndexView()
    view.bind({("ns", "handlers"): [plugin("b"), plugin("a")]}, {})
    assert [p.name for p in view.plugins(("ns", "handlers"))] == ["a", "b"]  # oldest first, then by name
    view.forget("uid-a")
    assert [p.name for p in view.plugins(("ns", "handlers"))] == ["b"]
    assert [p.name for p in view.all_plugins()] == ["b"]


def test_which_services_a_configmap_concerns() -> None:
    plugins = [plugin("p", "matcher"), plugin("q", codeFrom={"configMapKeyRef": {"name": "src", "key": "k"}})]
    assert code_from_services("ns", "src", plugins) == {("ns", "handlers")}
    assert code_from_services("other", "src", plugins) == set()
    assert managing_services("ns", "lunaplugin-p", None, plugins) == {("ns", "matcher")}
    assert managing_services("ns", "luna-plugins-search", None, plugins) == {("ns", "search")}
    assert managing_services("ns", "x", "handlers", plugins) == {("ns", "handlers")}
    assert managing_services("ns", "x", None, plugins) == set()
