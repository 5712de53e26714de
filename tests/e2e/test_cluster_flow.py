"""kubectl apply of a LunaPlugin reaches every sidecar of its service, and the resource's status
says which pods run which version. Real operator, real sidecars, real API server."""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path
from typing import Any

import pytest

from luna_contract.reports import active_revision
from tests.support.control_plane import stop_apiserver
from tests.support.operator_harness import Cluster, plugin_manifest, route_code
from tests.support.sidecar_harness import http, wait_for

pytestmark = pytest.mark.kube

FAILS_TO_START = """
from luna_plugins.base.plugins_meta.base_plugins import BaseBackgroundPlugin

class Broken(BaseBackgroundPlugin):
    async def initialize(self):
        raise RuntimeError("database unreachable")
"""


def answers(sidecar: Any, path: str, text: str) -> bool:
    try:
        reply = sidecar.get(path, timeout=2)
    except OSError:
        return False
    return reply.status == 200 and reply.text == text


def test_apply_update_invalid_update_delete(cluster: Cluster, operator: Any, cluster_sidecar: Any) -> None:
    """The plugin's life on one sidecar process (the pod suite updates under load through a Service)."""
    ns = cluster.namespace
    sidecar = cluster_sidecar("pod-a")
    cluster.apply(plugin_manifest("hello", ns, route_code("/hello", "v1")))
    wait_for(lambda: answers(sidecar, "/hello", "v1"), timeout=10, what="the route after apply")
    wait_for(lambda: cluster.status("hello").get("loaded") == "1/1", what="status.loaded 1/1")
    cluster.apply(plugin_manifest("hello", ns, route_code("/hello", "v2")))
    wait_for(lambda: answers(sidecar, "/hello", "v2"), timeout=10, what="v2 to serve")

    # an update that fails on the sidecar: the old code keeps serving, the status says why
    cluster.apply(plugin_manifest("hello", ns, FAILS_TO_START))
    status = wait_for(
        lambda: (
            (s := cluster.status("hello")).get("loaded") == "0/1"
            and "database unreachable" in s["message"]
            and s
        ),
        timeout=15,
        what="the pod's load error in the status",
    )
    (pod,) = status["pods"]
    assert pod["pod"] == "pod-a" and "RuntimeError: database unreachable" in pod["error"]
    assert answers(sidecar, "/hello", "v2")

    # delete removes the route
    cluster.kube.kubectl("delete", "lunaplugin", "hello", "-n", ns, "--timeout=30s")
    wait_for(lambda: sidecar.get("/hello").status == 404, timeout=10, what="the route to go away")


def test_two_sidecars_report_and_one_that_vanishes_stops_counting(
    cluster: Cluster, operator: Any, cluster_sidecar: Any
) -> None:
    ns = cluster.namespace
    first, second = cluster_sidecar("pod-1"), cluster_sidecar("pod-2")
    cluster.apply(plugin_manifest("shared", ns, route_code("/shared", "both")))
    wait_for(
        lambda: answers(first, "/shared", "both") and answers(second, "/shared", "both"),
        what="both sidecars to serve",
    )
    wait_for(lambda: cluster.status("shared").get("loaded") == "2/2", what="status.loaded 2/2")
    printed = cluster.kube.kubectl("get", "lp", "shared", "-n", ns).stdout
    assert "2/2" in printed
    # what counted them: reports that name the active list's revision and list nothing else
    listed, details = cluster.active()
    revision = active_revision({module: details[module]["codeHash"] for module in listed})
    reports = json.loads(cluster.kube.kubectl("get", "lpr", "-n", ns, "-o", "json").stdout)["items"]
    assert sorted(r["spec"]["pod"] for r in reports) == ["pod-1", "pod-2"]
    assert all(r["spec"]["revision"] == revision and r["spec"]["plugins"] == [] for r in reports), reports
    # a clean stop withdraws the report at once; a crash (SIGKILL) stops counting after the TTL
    second.stop(signal.SIGKILL)
    wait_for(
        lambda: cluster.status("shared").get("loaded") == "1/1",
        timeout=30,
        what="the killed sidecar to stop counting after --report-ttl",
    )
    first.stop()
    wait_for(lambda: cluster.status("shared").get("loaded") == "0/0", timeout=15, what="no sidecar left")


def test_a_restarted_sidecar_converges(cluster: Cluster, operator: Any, cluster_sidecar: Any) -> None:
    ns = cluster.namespace
    sidecar = cluster_sidecar("pod-r")
    cluster.apply(plugin_manifest("keep", ns, route_code("/keep", "1")))
    wait_for(lambda: answers(sidecar, "/keep", "1"), what="the first version")
    assert sidecar.stop() == 0
    cluster.apply(plugin_manifest("keep", ns, route_code("/keep", "2")))
    cluster.apply(plugin_manifest("added", ns, route_code("/added", "new")))
    wait_for(lambda: cluster.active()[0] == ["added", "keep"], what="the operator to update the list")
    again = cluster_sidecar("pod-r")
    assert answers(again, "/keep", "2") and answers(again, "/added", "new")


def test_operator_and_sidecar_recover_when_the_api_server_restarts(
    cluster: Cluster, operator: Any, cluster_sidecar: Any, kube: Any
) -> None:
    ns = cluster.namespace
    sidecar = cluster_sidecar("pod-x")
    cluster.apply(plugin_manifest("before", ns, route_code("/before", "b")))
    wait_for(lambda: answers(sidecar, "/before", "b"), what="the route before the restart")

    start_again = stop_apiserver(kube)
    try:
        time.sleep(2)  # a real outage: watches break, requests fail
        assert answers(sidecar, "/before", "b"), "loaded plugins keep serving while the API is away"
    finally:
        start_again()  # the session's API server: back for the tests after this one, whatever failed
    cluster.apply(plugin_manifest("after", ns, route_code("/after", "a")))
    wait_for(lambda: answers(sidecar, "/after", "a"), timeout=60, what="the sidecar to follow changes again")
    wait_for(lambda: cluster.status("after").get("phase") == "Ready", timeout=30, what="the operator again")
    assert operator.process.poll() is None and sidecar.process.poll() is None


def test_sidecar_liveness_fails_when_the_api_is_unreachable(tmp_path: Path) -> None:
    from tests.support.sidecar_harness import free_port, start_sidecar

    port = free_port()  # nothing listens here: the "API server" is unreachable from the start
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        json.dumps(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "current-context": "x",
                "clusters": [{"name": "x", "cluster": {"server": f"http://127.0.0.1:{port}"}}],
                "users": [{"name": "x", "user": {"token": "t"}}],
                "contexts": [{"name": "x", "context": {"cluster": "x", "user": "x"}}],
            }
        )
    )
    sidecar = start_sidecar(
        tmp_path,
        standalone=False,
        wait_ready=False,
        args=["--namespace", "nowhere", "--api-timeout", "1"],
        env={"KUBECONFIG": str(kubeconfig)},
    )
    try:
        wait_for(
            lambda: _status(sidecar.metrics_url + "/healthz") == 503, timeout=20, what="/healthz to fail"
        )
        assert "unreachable" in http("GET", sidecar.metrics_url + "/healthz").text
        assert _status(sidecar.metrics_url + "/readyz") == 503  # never synced: not ready either
    finally:
        assert sidecar.stop() == 0


def _status(url: str) -> int | None:
    try:
        return http("GET", url, timeout=2).status
    except OSError:
        return None
