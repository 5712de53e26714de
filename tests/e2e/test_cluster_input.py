"""Cluster mode trusts nothing it reads from the API. Real API server, real sidecar processes.

The ConfigMaps here are written with kubectl, as a careless hand (or anyone with write access to
ConfigMaps) could: an active list of the wrong shape is ignored, reported once (log, ``GET
/plugins``, the per-pod report) while the last good state keeps serving; code whose SHA-256 the
active list does not name is never loaded.
"""

from __future__ import annotations

import hashlib
import json
import time
from typing import Any

import pytest

from tests.support.operator_harness import Cluster
from tests.support.sidecar_harness import Sidecar, http, wait_for

pytestmark = pytest.mark.kube

KEY = "LUNA_HANDLERS_ACTIVE_PLUGINS"


def route_code(path: str, answer: str) -> str:
    return (
        "from luna_plugins.base.plugins_meta.base_plugins import BaseBackgroundPlugin, pluginHTTPResponse\n\n"
        "class Routes(BaseBackgroundPlugin):\n"
        "    async def initialize(self):\n"
        f"        self.addRoute({path!r}, lambda request: pluginHTTPResponse(body={answer!r}))\n"
    )


def sha(code: str) -> str:
    return hashlib.sha256(code.encode()).hexdigest()


def config_map(name: str, data: dict[str, str]) -> str:
    return json.dumps(
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": name, "labels": {"luna.dev/service": "handlers"}},
            "data": data,
        }
    )


def code_config_map(module: str, code: str) -> str:
    return config_map(f"lunaplugin-{module.replace('_', '-')}", {f"{module}.py": code})


def active_list(modules: dict[str, str], **override: str) -> str:
    """The active list naming ``modules`` (module -> the code it runs); ``override`` replaces keys."""
    details = {
        module: {"codeHash": sha(code), "configMap": f"lunaplugin-{module.replace('_', '-')}", "settings": {}}
        for module, code in modules.items()
    }
    data = {KEY: json.dumps(list(modules)), "plugins.json": json.dumps(details)}
    data.update(override)
    return config_map(
        "luna-plugins-handlers", {key: value for key, value in data.items() if value != "<drop>"}
    )


def report(cluster: Cluster, pod: str) -> dict[str, Any]:
    found = cluster.get("lunapluginruntime", f"{pod}-handlers")
    return (found or {}).get("spec") or {}


def problems(sidecar: Sidecar) -> list[str]:
    result: list[str] = http("GET", sidecar.admin + "/plugins").json()["problems"]
    return result


HELLO = route_code("/hello", "hello")
GOOD = {"hello": HELLO}

#: an active list the operator would never write -> what the sidecar says about it
BAD_ACTIVE_LISTS = [
    (active_list(GOOD, **{"plugins.json": "[]"}), "key plugins.json: expected a JSON object, got a list"),
    (
        active_list(GOOD, **{KEY: '[{"module": "hello"}]'}),
        f"key {KEY}[0]: expected a module name, got an object",
    ),
    (active_list(GOOD, **{KEY: '"hello"'}), f"key {KEY}: expected a JSON list of module names, got a string"),
    (active_list(GOOD, **{KEY: "<drop>"}), f"ConfigMap luna-plugins-handlers has no key {KEY}"),
    (active_list(GOOD, **{KEY: '["hello", "hello"]'}), "'hello' is listed twice"),
    (active_list(GOOD, **{KEY: '["os"]'}), "'os' would shadow the module of that name"),
    (active_list(GOOD, **{KEY: "[not json"}), f"key {KEY}: not valid JSON"),
    (
        active_list(GOOD, **{"plugins.json": json.dumps({"hello": {"codeHash": "0" * 7, "configMap": "x"}})}),
        "codeHash must be a SHA-256 in lower-case hex",
    ),
]


def test_a_bad_active_list_is_ignored_and_reported_once_and_the_last_good_state_serves(
    cluster: Cluster, cluster_sidecar: Any
) -> None:
    cluster.apply(code_config_map("hello", HELLO))
    cluster.apply(active_list(GOOD))
    sidecar = cluster_sidecar("pod-a")
    wait_for(lambda: sidecar.get("/hello").text == "hello", what="the good state to serve")
    assert problems(sidecar) == []

    for manifest, message in BAD_ACTIVE_LISTS:
        cluster.apply(manifest)
        wait_for(lambda m=message: any(m in p for p in problems(sidecar)), what=f"the problem: {message}")
        assert sidecar.process.poll() is None, "no crash"
        assert set(sidecar.plugins()) == {"hello"} and sidecar.plugin("hello")["state"] == "running"
        assert sidecar.get("/hello").text == "hello", "the last good state keeps serving"
        wait_for(
            lambda m=message: any(m in p for p in report(cluster, "pod-a").get("problems", [])),
            what="the problem in the per-pod report",
        )
        assert http("GET", sidecar.metrics_url + "/healthz").status == 200
        assert sidecar.metric("luna_desired_state_problems") == 1

    # reported once: more ConfigMap traffic does not repeat it in the log
    last = BAD_ACTIVE_LISTS[-1][1]
    for value in range(5):
        cluster.apply(config_map("unrelated", {"n": str(value)}))
    # each change is looked at within a fraction of a second; a slow machine can only make the
    # count below smaller, never larger
    time.sleep(2)
    assert sidecar.log().count(last) == 1, "logged once, not on every change"
    assert sidecar.get("/hello").text == "hello"

    # fixed: the problem clears, and the fixed list is followed again
    cluster.apply(code_config_map("second", route_code("/second", "second")))
    cluster.apply(active_list({"hello": HELLO, "second": route_code("/second", "second")}))
    wait_for(lambda: sidecar.get("/second").text == "second", what="the fixed list to be applied")
    assert problems(sidecar) == []
    assert "the active list is usable again" in sidecar.log()
    wait_for(lambda: report(cluster, "pod-a").get("problems") == [], what="the report's problems to clear")


def test_only_code_whose_hash_the_active_list_names_is_loaded(cluster: Cluster, cluster_sidecar: Any) -> None:
    cluster.apply(code_config_map("hello", HELLO))
    cluster.apply(active_list(GOOD))
    sidecar = cluster_sidecar("pod-b")
    wait_for(lambda: sidecar.get("/hello").text == "hello", what="hello to serve")

    # someone rewrites the code ConfigMap by hand: not the version named, so not loaded
    cluster.apply(code_config_map("hello", route_code("/hello", "injected")))
    # and a new module whose ConfigMap holds other code than the list names never loads at all
    cluster.apply(code_config_map("sneaky", route_code("/sneaky", "injected")))
    cluster.apply(active_list({"hello": HELLO, "sneaky": route_code("/sneaky", "what the list names")}))
    sneaky = "plugin sneaky: waiting (ConfigMap lunaplugin-sneaky holds code"
    wait_for(lambda: sneaky in sidecar.log(), what="sneaky reported waiting")
    assert "plugin hello: waiting (ConfigMap lunaplugin-hello holds code" in sidecar.log()
    assert sidecar.get("/hello").text == "hello", "the named version keeps running"
    assert sidecar.get("/sneaky").status == 404 and "sneaky" not in sidecar.plugins()
    assert sidecar.log().count(sneaky) == 1


BLOCKS = """
import time
from luna_plugins.base.plugins_meta.base_plugins import BaseBackgroundPlugin, pluginHTTPResponse

def snooze(request):
    time.sleep(0.5)
    return pluginHTTPResponse(body="yawn")

class Blocks(BaseBackgroundPlugin):
    async def initialize(self):
        self.addRoute("/snooze", snooze)
"""


def test_the_per_pod_report_says_which_plugin_blocks_the_loop(cluster: Cluster, cluster_sidecar: Any) -> None:
    cluster.apply(code_config_map("hello", HELLO))
    cluster.apply(code_config_map("blocks", BLOCKS))
    cluster.apply(active_list({"hello": HELLO, "blocks": BLOCKS}))
    sidecar = cluster_sidecar("pod-c")
    wait_for(lambda: sidecar.get("/hello").text == "hello", what="hello to serve")
    assert sidecar.get("/snooze").text == "yawn"

    def blocked() -> dict[str, float]:
        return {
            p["module"]: p.get("loopBlockedSeconds", 0) for p in report(cluster, "pod-c").get("plugins", [])
        }

    wait_for(lambda: blocked().get("blocks", 0) >= 0.3, what="the blocking charged in the report")
    # hello runs as the active list names it: a report lists it only if it blocked the loop too
    # (a stray tick on a machine loaded enough to pause the process)
    assert blocked().get("hello", 0) < 0.3
