"""Rollout queries with the real operator on the real API server: with a real Prometheus the
judgements of a rollout show the query's figure; stopped mid-rollout, the rollout is held with
the reason. The sidecars' reports are written here with kubectl, as a sidecar writes them, with
traffic on every pod. Without a Prometheus, a plugin with queries is Invalid, saying which value
to set."""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from tests.support.operator_harness import Cluster, plugin_manifest, route_code, start_operator
from tests.support.prometheus import Prometheus, start_prometheus
from tests.support.sidecar_harness import HOST, wait_for

pytestmark = pytest.mark.kube

NAME = MODULE = "checked"
PODS = ("handlers-0", "handlers-1")
V1, V2 = route_code(answer="one"), route_code(answer="two")
QUERY = {"name": "errors", "query": "max(luna_test_errors{pod=~$canaryPods})", "maxValue": 1}
ROLLOUT = {
    "steps": [{"percent": 50, "pause": "1h"}, {"percent": 100}],
    "analysis": {"interval": "2s", "queries": [QUERY]},
}


def sha(code: str) -> str:
    return hashlib.sha256(code.encode()).hexdigest()


class Metrics(BaseHTTPRequestHandler):
    """``luna_test_errors`` 0.25 for every pod."""

    def do_GET(self) -> None:
        body = "".join(f'luna_test_errors{{pod="{pod}"}} 0.25\n' for pod in PODS).encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; version=0.0.4")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_: Any) -> None:
        pass


@contextmanager
def metrics_server() -> Iterator[str]:
    server = ThreadingHTTPServer((HOST, 0), Metrics)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"{HOST}:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


class Reports:
    """Each pod's sidecar report, written again and again with a growing count of callbacks (so
    every judgement sees traffic); the pods in ``canary`` run V2, the others V1."""

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster
        self.canary: set[str] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._count = 0

    def write(self) -> None:
        self._count += 10
        for pod in PODS:
            entry = {
                "module": MODULE,
                "state": "running",
                "codeHash": sha(V2 if pod in self.canary else V1),
                "callbacks": self._count,
                "failedCallbacks": 0,
            }
            body = {
                "apiVersion": "luna.dev/v1alpha1",
                "kind": "LunaPluginRuntime",
                "metadata": {"name": f"{pod}-handlers", "namespace": self.cluster.namespace},
                "spec": {
                    "service": "handlers",
                    "pod": pod,
                    "ready": True,
                    "heartbeatTime": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
                    "plugins": [entry],
                    "problems": [],
                },
            }
            self.cluster.apply(json.dumps(body))

    def _run(self) -> None:
        while not self._stop.wait(0.7):
            self.write()

    @contextmanager
    def running(self) -> Iterator[Reports]:
        self.write()
        self._thread.start()
        try:
            yield self
        finally:
            self._stop.set()
            self._thread.join(timeout=30)


def rollout_of(cluster: Cluster) -> dict[str, Any]:
    return cluster.status(NAME).get("rollout") or {}


def last_judgement(cluster: Cluster, phase: str, verdict: str) -> dict[str, Any] | None:
    """The rollout's last judgement, once the rollout is in ``phase`` and that one's ``verdict``."""
    rollout = rollout_of(cluster)
    last = (rollout.get("analyses") or [{}])[-1]
    return last if rollout.get("phase") == phase and last.get("verdict") == verdict else None


def roll_out_then_stop(cluster: Cluster, prometheus: Prometheus) -> None:
    namespace = cluster.namespace
    wait_for(lambda: prometheus.query("count(luna_test_errors)") == {"": 2.0}, timeout=30, what="a scrape")
    cluster.apply(plugin_manifest(NAME, namespace, V1, rollout=ROLLOUT))
    cluster.wait_phase(NAME, "Ready")
    reports = Reports(cluster)
    with reports.running():
        wait_for(lambda: cluster.status(NAME).get("podsTotal") == 2, timeout=30, what="both pods counted")
        cluster.apply(plugin_manifest(NAME, namespace, V2, rollout=ROLLOUT))
        pods = wait_for(lambda: rollout_of(cluster).get("canaryPods"), timeout=30, what="a canary pod")
        reports.canary = set(pods)
        last = wait_for(
            lambda: last_judgement(cluster, "Progressing", "Successful"),
            timeout=60,
            what="a successful judgement",
        )
        assert last["queries"] == [{"name": "errors", "verdict": "Successful", "value": "0.25"}]
        assert "errors: 0.25 (max 1)" in last["message"]

        prometheus.stop()
        wait_for(lambda: last_judgement(cluster, "Held", "Inconclusive"), timeout=60, what="the rollout held")
        held = rollout_of(cluster)
        assert held["reason"].startswith("errors: no value (Prometheus could not be reached"), held
        assert held["failures"] == 0 and held["canaryPods"] == pods
        assert held["analyses"][-1]["queries"] == [{"name": "errors", "verdict": "Inconclusive"}]
        assert cluster.status(NAME)["phase"] == "Ready"  # the plugin itself is fine


def test_judgements_show_the_querys_figure_and_a_stopped_prometheus_holds_the_rollout(
    kube: Any, cluster: Cluster, tmp_path: Path
) -> None:
    with metrics_server() as target:
        config = tmp_path / "prometheus.yml"
        config.write_text(
            "global: {scrape_interval: 1s}\n"
            f"scrape_configs:\n  - job_name: pods\n    static_configs: [{{targets: ['{target}']}}]\n"
        )
        prometheus = start_prometheus(config, tmp_path)
        operator = start_operator(kube, cluster.namespace, tmp_path, "--prometheus-url", prometheus.url)
        try:
            roll_out_then_stop(cluster, prometheus)
        except BaseException:
            print(operator.log()[-5000:])
            print(f"status.rollout: {rollout_of(cluster)}")
            raise
        finally:
            kube.kubectl(
                "delete", "lunaplugins", "--all", "-n", cluster.namespace, "--timeout=60s", check=False
            )
            operator.stop()
            prometheus.stop()


def test_without_a_prometheus_a_plugin_with_queries_is_invalid(cluster: Cluster, operator: Any) -> None:
    cluster.apply(plugin_manifest(NAME, cluster.namespace, V1, rollout=ROLLOUT))
    invalid = cluster.wait_phase(NAME, "Invalid")
    assert "spec.rollout.analysis.queries: the operator has no Prometheus to ask" in invalid["message"]
    assert "operator.prometheus.url" in invalid["message"]
