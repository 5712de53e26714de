"""Watching it: a real Prometheus scrapes a real operator and real cluster-mode sidecars, and every
query of the chart's Grafana dashboard returns data; the operator's Events say what a user must
know, once per change."""

from __future__ import annotations

import json
import signal
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.chart import CHART
from tests.support.operator_harness import Cluster, Operator, plugin_manifest, route_code, start_operator
from tests.support.prometheus import SCRAPE_WAIT, Prometheus, start_prometheus
from tests.support.sidecar_harness import free_port, http, points, wait_for

pytestmark = pytest.mark.kube

DASHBOARD = CHART / "files" / "dashboards" / "luna-plugins.json"
#: what the dashboard's variables stand for in a test: everything, and a rate window the 1 s
#: scrapes fill
VARIABLES = {"$__rate_interval": "30s", "$luna_namespace": ".*", "$namespace": ".*", "$service": ".*"}

PLUGIN_BASE = (
    "from luna_plugins.base.plugins_meta.base_plugins import BaseBackgroundPlugin, BaseEventPlugin\n"
)
SLOW = PLUGIN_BASE + textwrap.dedent(
    """
    import asyncio

    class Slow(BaseEventPlugin):
        eventName = "monitoring_event"

        async def handleEvent(self, points, logger):
            await asyncio.sleep(0.5)
    """
)
RAISING = PLUGIN_BASE + textwrap.dedent(
    """
    class Raising(BaseEventPlugin):
        eventName = "monitoring_event"

        async def handleEvent(self, points, logger):
            raise RuntimeError("the third party is down")
    """
)
#: an at-least-once plugin whose third party is down: its first batch becomes a dead letter at once
#: and opens its breaker for an hour, so the next ones wait (the dashboard's delivery panels)
DURABLE_DOWN = {
    "mode": "at-least-once",
    "retry": {"maxElapsed": 0.001},
    "breaker": {"failures": 1, "openSeconds": 3600},
}
BLOCKING = PLUGIN_BASE + textwrap.dedent(
    """
    import time

    class Blocking(BaseEventPlugin):
        eventName = "monitoring_event"

        async def handleEvent(self, points, logger):
            time.sleep(0.3)
    """
)
FAILS_TO_START = PLUGIN_BASE + textwrap.dedent(
    """
    class Broken(BaseBackgroundPlugin):
        async def initialize(self):
            raise RuntimeError("database unreachable")
    """
)


def dashboard_queries() -> dict[str, str]:
    """Every query of the dashboard (panel title and letter -> PromQL), its variables filled in."""
    found = {}
    for panel in json.loads(DASHBOARD.read_text())["panels"]:
        for target in panel.get("targets") or []:
            expr = target["expr"]
            for name, value in VARIABLES.items():
                expr = expr.replace(name, value)
            found[f"{panel['title']} ({target['refId']})"] = expr
    return found


def variable_queries() -> dict[str, tuple[str, str]]:
    """The dashboard's query variables: name -> (metric, label) of ``label_values(metric, label)``."""
    found = {}
    for variable in json.loads(DASHBOARD.read_text())["templating"]["list"]:
        if variable["type"] == "query":
            inside = variable["definition"].removeprefix("label_values(").removesuffix(")")
            metric, label = (part.strip() for part in inside.split(","))
            for name, value in VARIABLES.items():  # a variable may depend on another one
                metric = metric.replace(name, value)
            found[variable["name"]] = (metric, label)
    return found


def scrape_config(namespace: str, operator: Operator, sidecars: dict[str, Any]) -> dict[str, Any]:
    """Static targets labelled as Kubernetes service discovery would label them (namespace, pod)."""

    def target(url: str, pod: str) -> dict[str, Any]:
        return {
            "targets": [url.split("//", 1)[1].split("/", 1)[0]],
            "labels": {"namespace": namespace, "pod": pod},
        }

    return {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "scrape_configs": [
            {
                "job_name": "luna-sidecars",
                "static_configs": [target(s.metrics_url, pod) for pod, s in sidecars.items()],
            },
            {"job_name": "luna-operator", "static_configs": [target(operator.metrics_url, "operator")]},
        ],
    }


@pytest.fixture
def watched(kube: Any, cluster: Cluster, tmp_path: Path) -> Iterator[Operator]:
    """The operator with its validating webhook (the API server calls it on 127.0.0.1)."""
    if kube.state_dir is None:
        pytest.skip("the API server calls the webhook on 127.0.0.1: needs the local control plane")
    running = start_operator(
        kube,
        cluster.namespace,
        tmp_path,
        "--report-ttl", "4",
        "--webhook", "--webhook-port", str(free_port()), "--webhook-certs-dir", str(tmp_path / "certs"),
    )  # fmt: skip
    try:
        yield running
    finally:
        kube.kubectl("delete", "lunaplugins", "--all", "-n", cluster.namespace, "--timeout=60s", check=False)
        running.stop()
        for kind in ("validatingwebhookconfiguration", "mutatingwebhookconfiguration"):
            kube.kubectl("delete", kind, "lunaplugins.luna.dev", "--ignore-not-found", check=False)


def events(cluster: Cluster, plugin: str) -> list[tuple[str, str]]:
    found = cluster.items("events")
    return [
        (event["reason"], event["message"])
        for event in found
        if event["involvedObject"].get("kind") == "LunaPlugin" and event["involvedObject"]["name"] == plugin
    ]


def test_every_dashboard_query_returns_data_from_a_real_operator_and_sidecars(
    cluster: Cluster, watched: Operator, cluster_sidecar: Any, tmp_path: Path
) -> None:
    operator = watched
    ns = cluster.namespace
    sidecar_args = ("--queue-items", "2", "--loop-block-threshold", "0.1", "--callback-timeout", "5")
    sidecars = {
        pod: cluster_sidecar(pod, *sidecar_args, "--queue-dir", str(tmp_path / f"queues-{pod}"))
        for pod in ("pod-a", "pod-b")
    }
    # a route plugin, event plugins that are slow (drops), raise, and block the loop
    for name, code in {
        "routes": route_code("/hello", "v1"),
        "slow": SLOW,
        "raising": RAISING,
        "blocking": BLOCKING,
        "broken": FAILS_TO_START,
    }.items():
        cluster.apply(plugin_manifest(name, ns, code))
    cluster.apply(
        plugin_manifest("durable", ns, RAISING.replace("Raising", "Durable"), delivery=DURABLE_DOWN)
    )
    cluster.apply(
        plugin_manifest("from-nowhere", ns, codeFrom={"configMapKeyRef": {"name": "missing", "key": "x"}})
    )
    wait_for(lambda: cluster.status("routes").get("loaded") == "2/2", timeout=30, what="routes on both pods")
    # a new version of routes that fails to start: both pods keep the last good one
    cluster.apply(plugin_manifest("routes", ns, FAILS_TO_START.replace("Broken", "RoutesV2")))
    wait_for(
        lambda: "2 pod(s) report an error" in cluster.status("routes").get("message", ""),
        timeout=30,
        what="the pods to report the rejected version",
    )
    # an invalid plugin, refused by the webhook
    wait_for(
        lambda: (
            cluster.apply(
                plugin_manifest("invalid", ns, "def f(:\n"), "--dry-run=server", check=False
            ).returncode
            != 0
        ),
        timeout=30,
        what="the webhook to refuse invalid code",
    )
    for _ in range(20):  # the service's points: more than the slow plugin's queue holds
        assert sidecars["pod-a"].post_event("monitoring_event", points(5)).status == 202
        assert sidecars["pod-a"].get("/hello").status in (200, 404)
    sidecars["pod-b"].stop(signal.SIGKILL)  # a pod that stops reporting

    config = tmp_path / "prometheus.yml"
    config.write_text(yaml.safe_dump(scrape_config(ns, operator, sidecars)))
    prometheus_dir = tmp_path / "prometheus"
    prometheus_dir.mkdir()
    prometheus = start_prometheus(config, prometheus_dir)
    try:
        time.sleep(5)  # a few scrapes, so rates have two samples
        for _ in range(10):  # keep the counters moving while Prometheus watches
            sidecars["pod-a"].post_event("monitoring_event", points(5))
            sidecars["pod-a"].get("/hello")
            time.sleep(0.3)
        assert_every_query_returns_data(prometheus)
    finally:
        prometheus.stop()

    # what a user must know, once per change
    routes = events(cluster, "routes")
    rolled_back = [message for reason, message in routes if reason == "RolledBack"]
    assert len(rolled_back) == 1 and "keep serving the last good version" in rolled_back[0], routes
    assert [reason for reason, _ in events(cluster, "broken")].count("LoadFailed") == 1
    assert [reason for reason, _ in events(cluster, "from-nowhere")] == ["Pending"]


def assert_every_query_returns_data(prometheus: Prometheus) -> None:
    queries = dashboard_queries()
    empty: dict[str, str] = {}

    def all_answer() -> bool:
        empty.clear()
        for title, expr in queries.items():
            result = prometheus.api("/api/v1/query", query=expr)["result"]
            if not result:
                empty[title] = expr
        for name, (metric, label) in variable_queries().items():
            if not prometheus.api(f"/api/v1/label/{label}/values", **{"match[]": metric}):
                empty[f"variable {name}"] = f"label_values({metric}, {label})"
        return not empty

    try:
        wait_for(all_answer, timeout=SCRAPE_WAIT * 4, what="every dashboard query to return data")
    except AssertionError:
        shown = "\n".join(f"  {title}: {expr}" for title, expr in empty.items())
        raise AssertionError(
            f"{len(empty)} of {len(queries)} dashboard queries return nothing:\n{shown}"
        ) from None
    up = prometheus.query("up")
    assert up and all(value == 1 or "pod-b" in key for key, value in up.items()), up
    assert http("GET", prometheus.url + "/-/ready").status == 200


def test_the_operators_liveness_fails_while_the_reports_cannot_be_read(
    cluster: Cluster, kube: Any, tmp_path: Path
) -> None:
    from tests.support.control_plane import stop_apiserver

    running = start_operator(kube, cluster.namespace, tmp_path, "--api-timeout", "2")
    try:
        start_again = stop_apiserver(kube)
        try:
            wait_for(
                lambda: http("GET", running.liveness, timeout=5).status != 200,
                timeout=30,  # --api-timeout, plus kopf's 10 s cache of probe results
                what="the liveness endpoint to fail without the API server",
            )
        finally:
            start_again()
        wait_for(
            lambda: http("GET", running.liveness, timeout=5).status == 200,
            timeout=60,
            what="the liveness endpoint to recover with the API server",
        )
        assert running.process.poll() is None
    finally:
        running.stop()
