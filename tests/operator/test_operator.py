"""The operator against the real API server, driven with `kubectl apply` as users do."""

from __future__ import annotations

import hashlib
import json
import random
import signal
import string
from pathlib import Path
from typing import Any

import pytest

from tests.support.operator_harness import Cluster, kill_hard, plugin_manifest, route_code, start_operator
from tests.support.sidecar_harness import wait_for

pytestmark = pytest.mark.kube


def sha(code: str) -> str:
    return hashlib.sha256(code.encode()).hexdigest()


@pytest.mark.compat
def test_create_update_disable_reorder_delete(cluster: Cluster, operator: Any) -> None:
    ns = cluster.namespace
    first, second = route_code("/one", "1"), route_code("/two", "2")
    cluster.apply(plugin_manifest("plugin-one", ns, first, settings={"greeting": "hi"}))
    status = cluster.wait_phase("plugin-one", "Ready")
    assert status["codeHash"] == sha(first) and status["module"] == "plugin_one"
    assert status["configMap"] == "lunaplugin-plugin-one" and status["observedGeneration"] == 1
    (ready,) = status["conditions"]
    assert (ready["type"], ready["status"], ready["reason"]) == ("Ready", "True", "Ready")
    config_map = cluster.get("configmap", "lunaplugin-plugin-one")
    assert config_map is not None and config_map["data"] == {"plugin_one.py": first}
    labels = config_map["metadata"]["labels"]
    assert labels["luna.dev/service"] == "handlers" and labels["luna.dev/plugin"] == "plugin-one"
    assert labels["app.kubernetes.io/managed-by"] == "luna-plugins-operator"
    assert config_map["metadata"]["annotations"]["luna.dev/code-hash"] == sha(first)
    (owner,) = config_map["metadata"]["ownerReferences"]
    assert owner["kind"] == "LunaPlugin" and owner["name"] == "plugin-one"
    details = cluster.wait_active(["plugin_one"])
    assert details["plugin_one"] == {
        "codeHash": sha(first),
        "configMap": "lunaplugin-plugin-one",
        "plugin": "plugin-one",
        "settings": {"greeting": "hi"},
    }
    # no sidecar reports in this namespace: the counts are there, as integers, and all zero
    counted = wait_for(
        lambda: (s := cluster.status("plugin-one")).get("podsTotal") is not None and s, what="the pod counts"
    )
    assert (counted["podsReady"], counted["podsTotal"], counted["podsFailing"], counted["loaded"]) == (
        0,
        0,
        0,
        "0/0",
    )

    # update the code
    updated = route_code("/one", "1 again")
    cluster.apply(plugin_manifest("plugin-one", ns, updated, settings={"greeting": "hi"}))
    wait_for(lambda: cluster.active()[1]["plugin_one"]["codeHash"] == sha(updated), what="the new hash")
    assert cluster.get("configmap", "lunaplugin-plugin-one")["data"]["plugin_one.py"] == updated  # type: ignore[index]

    # a second plugin, ordered before the first
    cluster.apply(plugin_manifest("plugin-two", ns, second, order=-5))
    cluster.wait_active(["plugin_two", "plugin_one"])
    printed = cluster.kube.kubectl("get", "lp", "-n", ns).stdout
    assert "SERVICE" in printed and "PHASE" in printed and "plugin_two" in printed

    # disable, then enable again
    cluster.apply(plugin_manifest("plugin-two", ns, second, order=-5, enabled=False))
    cluster.wait_phase("plugin-two", "Disabled")
    cluster.wait_active(["plugin_one"])
    cluster.apply(plugin_manifest("plugin-two", ns, second, order=10))
    cluster.wait_phase("plugin-two", "Ready")
    cluster.wait_active(["plugin_one", "plugin_two"])

    # delete: out of the list first, then the ConfigMap is garbage-collected
    cluster.kube.kubectl("delete", "lunaplugin", "plugin-one", "-n", ns, "--timeout=30s")
    cluster.wait_active(["plugin_two"])
    wait_for(
        lambda: cluster.get("configmap", "lunaplugin-plugin-one") is None,
        timeout=90,  # the controller manager rediscovers new resource types only every 30 s
        what="the garbage collector to delete the plugin's ConfigMap",
    )
    events = cluster.kube.kubectl("get", "events", "-n", ns, "-o", "json").stdout
    assert "LunaPlugin" in events and "Ready" in events


def test_invalid_code_reports_the_line_and_keeps_the_last_good_version(
    cluster: Cluster, operator: Any
) -> None:
    ns = cluster.namespace
    good = route_code()
    cluster.apply(plugin_manifest("keeper", ns, good))
    cluster.wait_phase("keeper", "Ready")
    cluster.apply(plugin_manifest("keeper", ns, good + "\ndef broken(:\n"))
    status = cluster.wait_phase("keeper", "Invalid")
    assert "syntax error" in status["message"] and "line 7" in status["message"]
    assert "keeps serving" in status["message"] and status["codeHash"] == sha(good)
    assert cluster.active()[1]["keeper"]["codeHash"] == sha(good)
    assert cluster.get("configmap", "lunaplugin-keeper")["data"]["keeper.py"] == good  # type: ignore[index]
    cluster.apply(plugin_manifest("never-good", ns, "import os\n"))
    status = cluster.wait_phase("never-good", "Invalid")
    assert "no plugin class" in status["message"] and cluster.active()[0] == ["keeper"]
    warnings = cluster.kube.kubectl("get", "events", "-n", ns, "--field-selector", "type=Warning").stdout
    assert "Invalid" in warnings


def test_duplicate_modules_in_a_service(cluster: Cluster, operator: Any) -> None:
    ns = cluster.namespace
    cluster.apply(plugin_manifest("alpha", ns, route_code("/a"), module="shared"))
    cluster.wait_phase("alpha", "Ready")
    cluster.apply(plugin_manifest("beta", ns, route_code("/b"), module="shared"))
    status = cluster.wait_phase("beta", "Invalid")
    assert "already provided by LunaPlugin 'alpha'" in status["message"]
    # another service may use the same module name
    cluster.apply(plugin_manifest("gamma", ns, route_code("/c"), module="shared", service="matcher"))
    cluster.wait_phase("gamma", "Ready")
    assert cluster.active("matcher")[0] == ["shared"]
    # when the winner goes, the other one takes over
    cluster.kube.kubectl("delete", "lunaplugin", "alpha", "-n", ns, "--timeout=30s")
    cluster.wait_phase("beta", "Ready")
    assert cluster.wait_active(["shared"])["shared"]["plugin"] == "beta"


def test_code_from_a_configmap_follows_its_edits(cluster: Cluster, operator: Any) -> None:
    ns = cluster.namespace
    manifest = plugin_manifest(
        "from-cm", ns, codeFrom={"configMapKeyRef": {"name": "src", "key": "plugin.py"}}
    )
    cluster.apply(manifest)
    assert "ConfigMap 'src' (spec.codeFrom) not found" in cluster.wait_phase("from-cm", "Pending")["message"]
    source = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "src"},
        "data": {"plugin.py": route_code("/v", "1")},
    }
    cluster.apply(json.dumps(source))
    assert cluster.wait_phase("from-cm", "Ready")["codeHash"] == sha(route_code("/v", "1"))
    source["data"] = {"plugin.py": route_code("/v", "2")}
    cluster.apply(json.dumps(source))
    wait_for(
        lambda: cluster.status("from-cm").get("codeHash") == sha(route_code("/v", "2")),
        what="the edited ConfigMap to be rendered",
    )
    assert cluster.get("configmap", "lunaplugin-from-cm")["data"]["from_cm.py"] == route_code("/v", "2")  # type: ignore[index]


@pytest.mark.compat
def test_schema_and_cel_refuse_bad_specs(cluster: Cluster) -> None:
    ns = cluster.namespace
    both = plugin_manifest("both", ns, route_code(), codeFrom={"configMapKeyRef": {"name": "x", "key": "y"}})
    result = cluster.apply(both, check=False)
    assert result.returncode != 0 and "set exactly one of spec.code" in result.stderr
    neither = cluster.apply(plugin_manifest("neither", ns), check=False)
    assert neither.returncode != 0 and "set exactly one of spec.code" in neither.stderr
    bad_service = cluster.apply(plugin_manifest("svc", ns, route_code(), service="Not_A_Label"), check=False)
    assert bad_service.returncode != 0 and "spec.service" in bad_service.stderr
    bad_ref = {"configMapKeyRef": {"name": "../other", "key": "p.py"}}
    refused = cluster.apply(plugin_manifest("ref", ns, codeFrom=bad_ref), check=False)
    assert refused.returncode != 0 and "spec.codeFrom.configMapKeyRef.name" in refused.stderr, refused.stderr
    bad_key = {"configMapKeyRef": {"name": "src", "key": "a/b.py"}}
    refused = cluster.apply(plugin_manifest("ref", ns, codeFrom=bad_key), check=False)
    assert refused.returncode != 0 and "spec.codeFrom.configMapKeyRef.key" in refused.stderr, refused.stderr
    unbounded = {"steps": [{"percent": 100}], "analysis": {"queries": [{"name": "q", "query": "up"}]}}
    refused = cluster.apply(plugin_manifest("unbounded", ns, route_code(), rollout=unbounded), check=False)
    assert refused.returncode != 0 and "a query needs maxValue, minValue or both" in refused.stderr
    explained = cluster.kube.kubectl("explain", "lunaplugin.spec").stdout
    assert "codeFrom" in explained and "Load order within the service" in explained


def test_a_600_kib_plugin_applies_and_reconciles(cluster: Cluster, operator: Any) -> None:
    ns = cluster.namespace
    rows = "".join(f"    {''.join(random.choices(string.ascii_letters, k=70))!r},\n" for _ in range(8200))
    code = route_code() + "\nDATA = [\n" + rows + "]\n"
    assert len(code.encode()) > 600 * 1024
    # client-side apply would copy the object into a 256 KiB annotation: users apply large plugins server-side
    cluster.apply(plugin_manifest("big", ns, code), "--server-side")
    assert cluster.wait_phase("big", "Ready", timeout=60)["codeHash"] == sha(code)
    annotations = cluster.get("lunaplugin", "big")["metadata"].get("annotations") or {}  # type: ignore[index]
    assert sum(len(value) for value in annotations.values()) < 4096, annotations.keys()
    assert cluster.get("configmap", "lunaplugin-big")["data"]["big.py"] == code  # type: ignore[index]


@pytest.mark.compat
def test_admission_webhook_rejects_invalid_code_at_apply(cluster: Cluster, kube: Any, tmp_path: Path) -> None:
    if kube.state_dir is None:
        pytest.skip("the API server calls the webhook on 127.0.0.1: needs the local control plane")
    from tests.support.sidecar_harness import free_port

    ns = cluster.namespace
    running = start_operator(
        kube,
        ns,
        tmp_path,
        "--webhook",
        "--webhook-port",
        str(free_port()),
        "--webhook-certs-dir",
        str(tmp_path / "certs"),
    )
    try:
        attempts = iter(range(1_000_000))

        def rejected() -> Any:
            # a new name every time: once an apply got in before the webhook was registered, the
            # same manifest again would be "unchanged" and never reach the API server's admission
            name = f"bad-{next(attempts)}"
            result = cluster.apply(plugin_manifest(name, ns, "def f(:\n"), check=False)
            return result.returncode != 0 and result

        result = wait_for(rejected, timeout=90, what="the webhook to be registered and reject")
        assert "denied the request" in result.stderr and "line 1: syntax error" in result.stderr
        deep = cluster.apply(plugin_manifest("deep", ns, "x = " + "-" * 10_000 + "1\n"), check=False)
        assert deep.returncode != 0 and "(MemoryError)" in deep.stderr, (
            deep.stderr
        )  # and the webhook lives on
        clash = cluster.apply(plugin_manifest("json", ns, route_code()), check=False)
        assert clash.returncode != 0 and "would shadow the module" in clash.stderr
        queried = {
            "steps": [{"percent": 100}],
            "analysis": {"queries": [{"name": "q", "query": "up", "maxValue": 1}]},
        }
        refused = cluster.apply(plugin_manifest("queried", ns, route_code(), rollout=queried), check=False)
        assert refused.returncode != 0 and "the operator has no Prometheus to ask" in refused.stderr
        cluster.apply(plugin_manifest("fine", ns, route_code()))
        cluster.wait_phase("fine", "Ready")
        assert not cluster.get("lunaplugin", "fine")["metadata"].get("finalizers")  # type: ignore[index]
        duplicate = cluster.apply(plugin_manifest("fine-too", ns, route_code(), module="fine"), check=False)
        assert duplicate.returncode != 0 and "already provided by LunaPlugin 'fine'" in duplicate.stderr
        cluster.kube.kubectl("delete", "lunaplugin", "fine", "-n", ns, "--timeout=30s")
    finally:
        running.stop()
        # kopf registers both kinds (the mutating one empty without --inject): neither may outlive the test
        for kind in ("validatingwebhookconfiguration", "mutatingwebhookconfiguration"):
            kube.kubectl("delete", kind, "lunaplugins.luna.dev", "--ignore-not-found", check=False)


def test_sigkill_mid_reconcile_then_restart_converges(cluster: Cluster, kube: Any, tmp_path: Path) -> None:
    ns = cluster.namespace
    names = [f"p{index:02d}" for index in range(30)]
    manifests = "\n".join(
        plugin_manifest(name, ns, route_code(f"/{name}", name), order=index)
        for index, name in enumerate(names)
    )
    cluster.apply(manifests)
    first = start_operator(kube, ns, tmp_path)
    wait_for(
        lambda: len(cluster.items("configmaps", "luna.dev/role=plugin-code")) >= 3,
        timeout=30,
        what="the operator to be mid-way",
    )
    kill_hard(first.process)
    second = start_operator(kube, ns, tmp_path)
    try:
        wait_for(
            lambda: all(p.get("status", {}).get("phase") == "Ready" for p in cluster.items("lunaplugins")),
            timeout=60,
            what="every plugin Ready after the restart",
        )
        cluster.wait_active(names)
        rendered = cluster.items("configmaps", "luna.dev/role=plugin-code")
        assert sorted(item["metadata"]["labels"]["luna.dev/plugin"] for item in rendered) == names
        # no stuck finalizers: everything deletes
        kube.kubectl("delete", "lunaplugins", "--all", "-n", ns, "--timeout=60s")
        cluster.wait_active([])
        wait_for(
            lambda: not cluster.items("configmaps", "luna.dev/role=plugin-code"),
            timeout=60,
            what="no orphaned plugin ConfigMaps",
        )
    finally:
        second.stop()


def test_delete_while_the_operator_is_down_completes_and_the_list_drops_it_when_it_returns(
    cluster: Cluster, kube: Any, tmp_path: Path
) -> None:
    """No finalizer: a LunaPlugin stays deletable without the operator; the operator's next pass
    (at its start) takes it out of the active list, and the garbage collector its ConfigMap."""
    ns = cluster.namespace
    running = start_operator(kube, ns, tmp_path)
    cluster.apply(
        plugin_manifest("stay", ns, route_code("/s")) + "\n" + plugin_manifest("go", ns, route_code("/g"))
    )
    cluster.wait_active(["go", "stay"])
    assert all(not item["metadata"].get("finalizers") for item in cluster.items("lunaplugins"))
    assert running.stop(signal.SIGTERM) == 0
    kube.kubectl("delete", "lunaplugin", "go", "-n", ns, "--timeout=30s")  # waits until it is gone
    assert cluster.get("lunaplugin", "go") is None
    assert cluster.active()[0] == ["go", "stay"]  # nobody has taken it out yet
    back = start_operator(kube, ns, tmp_path)
    try:
        cluster.wait_active(["stay"])
        wait_for(
            lambda: cluster.get("configmap", "lunaplugin-go") is None,
            timeout=90,  # the controller manager rediscovers new resource types only every 30 s
            what="the garbage collector to delete the deleted plugin's ConfigMap",
        )
        assert cluster.status("stay")["phase"] == "Ready"
    finally:
        back.stop()


def test_plugins_with_the_finalizer_of_an_earlier_version_are_released(
    cluster: Cluster, kube: Any, tmp_path: Path
) -> None:
    """Objects an earlier version put its finalizer on, one of them deleted meanwhile (stuck in
    Terminating): the operator releases both, drops the deleted one and leaves other finalizers."""
    ns = cluster.namespace
    running = start_operator(kube, ns, tmp_path)
    cluster.apply(
        plugin_manifest("old", ns, route_code("/o")) + "\n" + plugin_manifest("kept", ns, route_code("/k"))
    )
    cluster.wait_active(["kept", "old"])
    assert running.stop(signal.SIGTERM) == 0
    for name, finalizers in (
        ("old", ["luna.dev/finalizer"]),
        ("kept", ["luna.dev/finalizer", "example.com/keep"]),
    ):
        patch = json.dumps({"metadata": {"finalizers": finalizers}})
        kube.kubectl("patch", "lunaplugin", name, "-n", ns, "--type=merge", "-p", patch)
    kube.kubectl("delete", "lunaplugin", "old", "-n", ns, "--wait=false")
    stuck = cluster.get("lunaplugin", "old")
    assert stuck is not None and stuck["metadata"].get("deletionTimestamp")
    back = start_operator(kube, ns, tmp_path)
    try:
        wait_for(lambda: cluster.get("lunaplugin", "old") is None, timeout=30, what="the old plugin to go")
        cluster.wait_active(["kept"])
        wait_for(
            lambda: cluster.get("lunaplugin", "kept")["metadata"].get("finalizers") == ["example.com/keep"],  # type: ignore[index]
            timeout=30,
            what="our finalizer to be removed from the plugin that stays, and only ours",
        )
    finally:
        back.stop()
        kube.kubectl(
            "patch", "lunaplugin", "kept", "-n", ns, "--type=merge", "-p", '{"metadata":{"finalizers":null}}'
        )


@pytest.mark.compat
def test_a_long_named_plugin_of_an_earlier_version_is_invalid_and_deletable(
    cluster: Cluster, kube: Any, tmp_path: Path
) -> None:
    """Stored before the CRD limited names to 63 characters (here: under a copy of the CRD without
    that rule), with the earlier finalizer: the operator marks it Invalid without writing its
    ConfigMap (which would be refused), the others are Ready, and it deletes."""
    import yaml

    from tests.support.operator_harness import CRD

    ns, long_name = cluster.namespace, "l" * 70
    earlier = yaml.safe_load(CRD.read_text())
    del earlier["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["x-kubernetes-validations"]
    kube.kubectl("apply", "-f", "-", input=json.dumps(earlier))
    try:
        body = json.loads(plugin_manifest(long_name, ns, route_code("/l"), module="longer"))
        body["metadata"]["finalizers"] = ["luna.dev/finalizer"]
        wait_for(lambda: cluster.apply(json.dumps(body), check=False).returncode == 0, what="the earlier CRD")
    finally:
        kube.kubectl("apply", "-f", str(CRD))
    cluster.apply(plugin_manifest("short", ns, route_code("/s")))
    running = start_operator(kube, ns, tmp_path)
    try:
        status = cluster.wait_phase(long_name, "Invalid")
        assert "metadata.name is 70 characters; at most 63" in status["message"]
        cluster.wait_phase("short", "Ready")
        cluster.wait_active(["short"])
        assert cluster.get("configmap", f"lunaplugin-{long_name}") is None
        kube.kubectl("delete", "lunaplugin", long_name, "-n", ns, "--timeout=30s")
    finally:
        running.stop()


def test_requirements_reach_the_active_list_and_bad_ones_keep_the_last_good_version(
    cluster: Cluster, operator: Any
) -> None:
    ns = cluster.namespace
    code = route_code("/pkg", "1")
    cluster.apply(plugin_manifest("with-packages", ns, code, requirements=["Redis>=5,<6"]))
    cluster.wait_phase("with-packages", "Ready")
    details = cluster.wait_active(["with_packages"])
    assert details["with_packages"]["requirements"] == ["Redis<6,>=5"]

    # a URL or a pip option is refused; the version in service keeps its requirements
    for bad in (["evil @ https://attacker.invalid/evil.whl"], ["--index-url http://attacker.invalid/simple"]):
        cluster.apply(plugin_manifest("with-packages", ns, route_code("/pkg", "2"), requirements=bad))
        status = cluster.wait_phase("with-packages", "Invalid")
        assert "spec.requirements[0]" in status["message"], status
        entry = cluster.active()[1]["with_packages"]
        assert entry["codeHash"] == sha(code) and entry["requirements"] == ["Redis<6,>=5"]


def test_the_schema_refuses_requirements_of_the_wrong_shape(cluster: Cluster) -> None:
    ns = cluster.namespace
    for bad in ("redis", [1], ["x" * 401], [f"p{n}" for n in range(51)]):
        result = cluster.kube.kubectl(
            "apply",
            "-f",
            "-",
            input=plugin_manifest("bad-shape", ns, "x = 1\n", requirements=bad),
            check=False,
        )
        assert result.returncode != 0 and "requirements" in result.stderr, (bad, result.stderr)
