"""The chart's Prometheus objects (PodMonitor, ServiceMonitor) and its demo workload.

The PodMonitor/ServiceMonitor are checked against prometheus-operator's own CRDs, fetched once
(pinned version) through the Go module proxy and installed into the test cluster, so the API
server validates every field we render. The demo's LunaPlugins are installed with the chart and
reconciled by a real operator; a real sidecar then serves them.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.chart.test_chart import dry_run, restricted_namespace
from tests.support.chart import (
    CHART,
    NO_KUBELET,
    ModuleUnavailableError,
    go_module,
    install_crds,
    of_kind,
    render,
)
from tests.support.operator_harness import Cluster, start_operator
from tests.support.sidecar_harness import start_sidecar, wait_for

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE_PLUGINS = ROOT / "examples" / "plugins"
#: prometheus-operator release whose CRDs the monitors are validated against
PROMETHEUS_OPERATOR = "github.com/prometheus-operator/prometheus-operator@v0.85.0"
MONITOR_CRDS = {
    "podmonitors.monitoring.coreos.com": "monitoring.coreos.com_podmonitors.yaml",
    "servicemonitors.monitoring.coreos.com": "monitoring.coreos.com_servicemonitors.yaml",
    "prometheusrules.monitoring.coreos.com": "monitoring.coreos.com_prometheusrules.yaml",
}
MONITORS = [
    "--set",
    "prometheus.podMonitor.enabled=true",
    "--set",
    "prometheus.serviceMonitor.enabled=true",
    "--set",
    "prometheus.rules.enabled=true",
    "--set",
    "grafana.dashboards.enabled=true",
]
DEMO_PLUGINS = ("kettle", "route_digest", "http_forwarder")


def test_chart_demo_plugins_are_the_example_plugins() -> None:
    names = sorted(f"{module}.py" for module in DEMO_PLUGINS)
    plugins = CHART / "files" / "plugins"
    assert plugins.resolve() == EXAMPLE_PLUGINS.resolve()  # a link: one source
    assert sorted(path.name for path in plugins.iterdir()) == names


@pytest.fixture(scope="session")
def monitoring_crds(kube: Any) -> None:
    """prometheus-operator's PodMonitor, ServiceMonitor and PrometheusRule CRDs, installed in the test
    cluster."""
    try:
        info = go_module(PROMETHEUS_OPERATOR)
    except ModuleUnavailableError as exc:
        pytest.fail(str(exc))
    crds = Path(info["Dir"]) / "example" / "prometheus-operator-crd"
    install_crds(kube, {name: crds / file for name, file in MONITOR_CRDS.items()})


def only(objects: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    (found,) = of_kind(objects, kind)
    return found


@pytest.mark.kube
def test_no_monitors_and_no_demo_by_default(kube: Any) -> None:
    objects = render(kube)
    assert not {obj["kind"] for obj in objects} & {"PodMonitor", "ServiceMonitor", "LunaPlugin"}
    assert not [obj for obj in objects if obj["metadata"]["name"].endswith("-demo")]


@pytest.mark.kube
def test_monitors_select_the_demo_pods_and_service_on_the_metrics_port(kube: Any) -> None:
    objects = render(kube, *MONITORS, "--set", "demo.enabled=true", "--set", "prometheus.interval=15s")
    pod_monitor = only(objects, "PodMonitor")
    (service_monitor,) = [
        o for o in of_kind(objects, "ServiceMonitor") if o["metadata"]["name"].endswith("-sidecars")
    ]
    deployment = next(o for o in of_kind(objects, "Deployment") if o["metadata"]["name"].endswith("-demo"))
    service = next(o for o in of_kind(objects, "Service") if o["metadata"]["name"].endswith("-demo"))
    pod = deployment["spec"]["template"]
    # each monitor's selector matches what it is meant to scrape ...
    assert pod_monitor["spec"]["selector"]["matchLabels"].items() <= pod["metadata"]["labels"].items()
    assert service_monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    assert pod_monitor["spec"]["namespaceSelector"] == {"any": True}
    # ... on a port of that name, which is the sidecar's metrics port
    (endpoint,) = pod_monitor["spec"]["podMetricsEndpoints"]
    assert endpoint == {"port": "plugin-metrics", "path": "/metrics", "scheme": "http", "interval": "15s"}
    (endpoint,) = service_monitor["spec"]["endpoints"]
    assert endpoint["port"] == "plugin-metrics" and endpoint["interval"] == "15s"
    # the metrics carry no label a scrape job sets (luna_service, not service): a target's own
    # labels must not override namespace, pod or job
    assert "honorLabels" not in endpoint
    sidecar = next(c for c in pod["spec"]["containers"] if c["name"] == "luna-sidecar")
    metrics_port = next(p["containerPort"] for p in sidecar["ports"] if p["name"] == "plugin-metrics")
    assert any(p["name"] == "plugin-metrics" for p in service["spec"]["ports"])
    # the scrape annotations (on by default) name the same port and path
    annotations = pod["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/port"] == str(metrics_port)
    assert annotations["prometheus.io/path"] == endpoint["path"]

    # namespaces and extra labels (e.g. the `release` label a Prometheus selects monitors by)
    objects = render(
        kube,
        *MONITORS,
        "--set",
        "prometheus.podMonitor.namespaces={team-a,team-b}",
        "--set",
        "prometheus.serviceMonitor.labels.release=kube-prometheus-stack",
        "--set",
        "prometheus.scrapeAnnotations=false",
        "--set",
        "demo.enabled=true",
    )
    assert only(objects, "PodMonitor")["spec"]["namespaceSelector"] == {"matchNames": ["team-a", "team-b"]}
    for monitor in of_kind(objects, "ServiceMonitor"):  # the sidecars' and the operator's
        assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    demo = next(o for o in of_kind(objects, "Deployment") if o["metadata"]["name"].endswith("-demo"))
    assert "annotations" not in demo["spec"]["template"]["metadata"]


@pytest.mark.kube
@pytest.mark.parametrize("bad", ["prometheus.interval=often", "demo.plugins={kettle,nope}", "demo.port=8081"])
def test_schema_rejects_bad_monitoring_and_demo_values(kube: Any, bad: str) -> None:
    result = kube.helm("template", "luna", str(CHART), "--set", bad, check=False)
    assert result.returncode != 0 and "schema" in result.stderr, result.stderr


@pytest.mark.kube
def test_monitors_and_demo_are_accepted_by_the_api_server(
    kube: Any, crd: None, monitoring_crds: None, namespace: str
) -> None:
    restricted_namespace(kube, namespace)
    objects = render(kube, *MONITORS, "--set", "demo.enabled=true", namespace=namespace)
    assert {"PodMonitor", "ServiceMonitor", "PrometheusRule", "LunaPlugin"} <= {
        obj["kind"] for obj in objects
    }
    stderr = dry_run(kube, namespace, objects)
    assert "Warning" not in stderr, stderr  # the demo pod passes the restricted Pod Security level


@pytest.fixture
def demo_release(kube: Any, crd: None, namespace: str) -> Iterator[str]:
    name = f"d{namespace[-6:]}"
    # the chart's operator never runs here (no kubelet): the test runs one itself below
    kube.helm(
        "install", name, str(CHART), *NO_KUBELET, "--namespace", namespace, "--set", "demo.enabled=true",
        "--set", "operator.replicas=0",
    )  # fmt: skip
    yield name
    kube.kubectl("delete", "lunaplugins", "--all", "-n", namespace, "--timeout=30s", check=False)
    kube.helm("uninstall", name, "--namespace", namespace, check=False)


@pytest.mark.kube
def test_demo_plugins_become_ready_and_a_sidecar_serves_them(
    kube: Any, namespace: str, demo_release: str, tmp_path: Path
) -> None:
    cluster = Cluster(kube, namespace)
    names = [f"{demo_release}-luna-plugins-{module.replace('_', '-')}" for module in DEMO_PLUGINS]
    assert sorted(item["metadata"]["name"] for item in cluster.items("lunaplugins")) == sorted(names)
    operator = start_operator(kube, namespace, tmp_path)
    sidecar = None
    try:
        for name in names:
            cluster.wait_phase(name, "Ready", timeout=30)
        workdir = tmp_path / "sidecar"
        workdir.mkdir()
        sidecar = start_sidecar(
            workdir,
            standalone=False,
            args=["--namespace", namespace, "--service", "handlers", "--pod-name", "demo-pod"],
            env={"KUBECONFIG": str(kube.kubeconfig)},
        )
        wait_for(lambda: sidecar.get("/kettle").status == 200, timeout=20, what="the demo's kettle route")
        assert yaml.safe_load(sidecar.get("/kettle/version").text) == "kettle 1.0"
        wait_for(
            lambda: all(cluster.status(name).get("loaded") == "1/1" for name in names),
            timeout=30,
            what="every demo plugin loaded by the sidecar",
        )
    finally:
        if sidecar is not None:
            sidecar.stop()
        kube.kubectl("delete", "lunaplugins", "--all", "-n", namespace, "--timeout=30s", check=False)
        operator.stop()
