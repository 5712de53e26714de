"""The chart's observability: the operator scraped by default, its ServiceMonitor, the alerts
(promtool check and unit tests), the Grafana dashboard ConfigMap and its sidecar queries (evaluated
by promtool with the dashboard's variables filled in)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.chart import CHART, of_kind, render
from tests.support.prometheus import required_tool

RULES = CHART / "files" / "prometheus-rules.yaml"
DASHBOARD = CHART / "files" / "dashboards" / "luna-plugins.json"
RULE_TESTS = Path(__file__).with_name("prometheus_rules_test.yaml")
#: how a sidecar panel keeps the pods of the chosen services: ``and`` keeps the left side's values
#: and labels, and a pod scraped by two jobs (a PodMonitor and annotations) is no many-to-many error
SERVICE_JOIN = 'and on (namespace, pod) luna_sidecar_info{luna_service=~"$service"}'
#: a metric selector of a query: its name and its label matchers
SELECTOR = re.compile(r"(luna_[a-z_]+)\{([^}]*)\}")
MATCHER = re.compile(r'(\w+)\s*(=~|!=|!~|=)\s*"([^"]*)"')


def alert_names() -> list[str]:
    return [rule["alert"] for group in yaml.safe_load(RULES.read_text())["groups"] for rule in group["rules"]]


def operator_pod(objects: list[dict[str, Any]]) -> dict[str, Any]:
    (deployment,) = [o for o in of_kind(objects, "Deployment") if o["metadata"]["name"].endswith("-operator")]
    return dict(deployment["spec"]["template"])


@pytest.mark.kube
def test_the_operator_is_scraped_by_default_on_its_metrics_port(kube: Any) -> None:
    objects = render(kube)
    pod = operator_pod(objects)
    (container,) = pod["spec"]["containers"]
    assert "--metrics=0.0.0.0:8091" in container["args"]
    assert {"name": "metrics", "containerPort": 8091, "protocol": "TCP"} in container["ports"]
    annotations = pod["metadata"]["annotations"]
    assert (annotations["prometheus.io/scrape"], annotations["prometheus.io/port"]) == ("true", "8091")
    assert annotations["prometheus.io/path"] == "/metrics"
    kinds = {obj["kind"] for obj in objects}
    assert not kinds & {"ServiceMonitor", "PrometheusRule"}
    assert not [o for o in of_kind(objects, "ConfigMap") if o["metadata"]["name"].endswith("-dashboard")]
    moved = operator_pod(render(kube, "--set", "operator.metricsPort=9191"))
    assert moved["metadata"]["annotations"]["prometheus.io/port"] == "9191"


@pytest.mark.kube
def test_ports_of_the_operator_pod_must_differ(kube: Any) -> None:
    result = kube.helm("template", "luna", str(CHART), "--set", "operator.metricsPort=9443", check=False)
    assert result.returncode != 0 and "must differ" in result.stderr, result.stderr


@pytest.mark.kube
def test_the_operator_service_monitor_selects_its_metrics_service(kube: Any) -> None:
    objects = render(
        kube, "--set", "prometheus.serviceMonitor.enabled=true", "--set", "prometheus.interval=15s"
    )
    (service,) = [
        o for o in of_kind(objects, "Service") if o["metadata"]["name"].endswith("-operator-metrics")
    ]
    (monitor,) = [
        o for o in of_kind(objects, "ServiceMonitor") if o["metadata"]["name"].endswith("-operator")
    ]
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    assert monitor["spec"]["namespaceSelector"] == {"matchNames": ["luna-system"]}
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint == {"port": "metrics", "path": "/metrics", "scheme": "http", "interval": "15s"}
    pod = operator_pod(objects)
    assert service["spec"]["selector"].items() <= pod["metadata"]["labels"].items()
    (port,) = service["spec"]["ports"]
    assert port["targetPort"] == "metrics"


@pytest.mark.kube
def test_the_prometheus_rule_carries_the_rule_file_and_passes_promtool(kube: Any, tmp_path: Path) -> None:
    objects = render(
        kube, "--set", "prometheus.rules.enabled=true", "--set", "prometheus.rules.labels.release=kps"
    )
    (rule,) = of_kind(objects, "PrometheusRule")
    assert rule["metadata"]["labels"]["release"] == "kps"
    assert rule["spec"] == yaml.safe_load(RULES.read_text())  # the file, as it is
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump(rule["spec"]))
    shutil.copy(RULE_TESTS, tmp_path / RULE_TESTS.name)
    promtool = required_tool("promtool")
    check = subprocess.run(
        [promtool, "check", "rules", "rules.yaml"], cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert check.returncode == 0 and f"SUCCESS: {len(alert_names())} rules found" in check.stdout, check
    tested = subprocess.run(
        [promtool, "test", "rules", RULE_TESTS.name],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert tested.returncode == 0, tested.stdout + tested.stderr
    covered = {
        test["alertname"]
        for case in yaml.safe_load(RULE_TESTS.read_text())["tests"]
        for test in case["alert_rule_test"]
    }
    assert covered == set(alert_names())  # every alert has unit tests


@pytest.mark.kube
def test_alerts_can_be_left_out_and_only_known_names_are_accepted(kube: Any) -> None:
    objects = render(
        kube,
        "--set",
        "prometheus.rules.enabled=true",
        "--set",
        "prometheus.rules.disabled={LunaOperatorAbsent}",
    )
    (rule,) = of_kind(objects, "PrometheusRule")
    kept = [r["alert"] for group in rule["spec"]["groups"] for r in group["rules"]]
    assert kept == [name for name in alert_names() if name != "LunaOperatorAbsent"]
    result = kube.helm(
        "template", "luna", str(CHART), "--set", "prometheus.rules.disabled={NoSuchAlert}", check=False
    )
    assert result.returncode != 0 and "schema" in result.stderr
    schema = json.loads((CHART / "values.schema.json").read_text())
    names = schema["properties"]["prometheus"]["properties"]["rules"]["properties"]["disabled"]["items"][
        "enum"
    ]
    assert names == alert_names()


@pytest.mark.kube
def test_the_dashboard_configmap_is_labelled_for_grafanas_sidecar(kube: Any) -> None:
    def dashboard(*args: str) -> dict[str, Any]:
        (found,) = [
            o
            for o in of_kind(render(kube, *args), "ConfigMap")
            if o["metadata"]["name"].endswith("-dashboard")
        ]
        return found

    default = dashboard("--set", "grafana.dashboards.enabled=true")
    assert default["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert default["metadata"]["namespace"] == "luna-system"
    assert json.loads(default["data"]["luna-plugins.json"]) == json.loads(DASHBOARD.read_text())
    custom = dashboard(
        "--set", "grafana.dashboards.enabled=true",
        "--set", "grafana.dashboards.label=dashboards.example.com/load",
        "--set", "grafana.dashboards.labelValue=yes",
        "--set", "grafana.dashboards.namespace=monitoring",
        "--set", "grafana.dashboards.annotations.grafana_folder=Luna",
    )  # fmt: skip
    assert custom["metadata"]["labels"]["dashboards.example.com/load"] == "yes"
    assert "grafana_dashboard" not in custom["metadata"]["labels"]
    assert custom["metadata"]["namespace"] == "monitoring"
    assert custom["metadata"]["annotations"] == {"grafana_folder": "Luna"}


def test_every_dashboard_panel_queries_the_chosen_prometheus() -> None:
    board = json.loads(DASHBOARD.read_text())
    assert board["uid"] == "luna-plugins" and board["templating"]["list"][0]["type"] == "datasource"
    panels = [p for p in board["panels"] if p["type"] != "row"]
    assert panels and all(p["targets"] for p in panels)
    for panel in panels:
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        assert all(target["datasource"]["uid"] == "${datasource}" for target in panel["targets"])
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids))


@pytest.mark.kube
def test_the_runbook_links_follow_the_chart_value(kube: Any) -> None:
    objects = render(
        kube,
        "--set",
        "prometheus.rules.enabled=true",
        "--set",
        "prometheus.rules.runbookBaseUrl=https://docs.example.org/luna/runbooks/",
    )
    (rule,) = of_kind(objects, "PrometheusRule")
    rules = [r for group in rule["spec"]["groups"] for r in group["rules"]]
    assert [r["annotations"]["runbook_url"] for r in rules] == [
        f"https://docs.example.org/luna/runbooks/{name}/" for name in alert_names()
    ]
    result = kube.helm(
        "template", "luna", str(CHART), "--set", "prometheus.rules.runbookBaseUrl=docs", check=False
    )
    assert result.returncode != 0 and "schema" in result.stderr


def test_the_dashboard_filters_by_service_and_namespace() -> None:
    board = json.loads(DASHBOARD.read_text())
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert {"datasource", "luna_namespace", "service", "namespace"} <= set(variables)
    assert "luna_service" in variables["service"]["query"]["query"]
    exprs = [t["expr"] for p in board["panels"] if p["type"] != "row" for t in p["targets"]]
    by_service = [e for e in exprs if "luna_operator_" in e and "luna_service)" in e.replace(", plugin", "")]
    assert by_service and all('luna_service=~"$service"' in e for e in by_service)
    # the sidecars' metrics do not carry the pod's service: each of their queries keeps the pods
    # whose sidecar says it serves a chosen one, once per metric selector
    sidecar = sidecar_queries()
    assert len(sidecar) >= 20
    for expr in sidecar:
        assert 'namespace=~"$namespace"' in expr, expr
        selected = [name for name, _ in SELECTOR.findall(expr) if name != "luna_sidecar_info"]
        assert selected and expr.count(SERVICE_JOIN) == len(selected), expr


def sidecar_queries() -> list[str]:
    """The dashboard's queries of the sidecars' metrics (every query but the operator's)."""
    board = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for p in board["panels"] if p["type"] != "row" for t in p["targets"]]
    return [e for e in exprs if "luna_operator_" not in e]


def input_series(queries: list[str]) -> list[dict[str, str]]:
    """Series for ``promtool test rules``: every metric the queries select, on pod handlers-1 of
    service handlers (counters rising, gauges at 1), labelled to pass the queries' matchers; the
    sidecar info of handlers-1 (scraped by two jobs) and of matcher-1, a pod of service matcher that
    has no other series."""
    series: dict[str, str] = {}
    for expr in queries:
        for name, matchers in SELECTOR.findall(expr):
            if name == "luna_sidecar_info":
                continue
            labels = {"namespace": "team-a", "pod": "handlers-1", "job": "sidecars"}
            for label, op, value in MATCHER.findall(matchers):
                if label != "namespace":
                    labels[label] = value if op == "=" else f"not-{value}"
            counter = name.endswith(("_total", "_bucket"))
            for le in ("0.5", "+Inf") if name.endswith("_bucket") else (None,):
                tagged = {**labels, "le": le} if le else labels
                text = ",".join(f'{key}="{value}"' for key, value in tagged.items())
                series[f"{name}{{{text}}}"] = "0+1x40" if counter else "1x40"
    for pod, service, job in (
        ("handlers-1", "handlers", "sidecars"),
        ("handlers-1", "handlers", "annotations"),
        ("matcher-1", "matcher", "sidecars"),
    ):
        info = f'luna_sidecar_info{{namespace="team-a",pod="{pod}",luna_service="{service}",job="{job}"}}'
        series[info] = "1x40"
    return [{"series": name, "values": values} for name, values in series.items()]


def test_every_sidecar_panel_shows_only_the_chosen_services_in_promtool(tmp_path: Path) -> None:
    """Each sidecar query, evaluated by Prometheus' own engine with the dashboard's variables as
    Grafana fills them in: All and handlers (alone or with another) find handlers-1; matcher, whose
    pod has the info series only, and a service no sidecar serves find nothing."""
    queries = sidecar_queries()
    found = {".*": True, "handlers": True, "(handlers|other)": True, "matcher": False, "nobody": False}
    cases = []
    for expr in queries:
        for service, expected in found.items():
            filled = expr.replace("$namespace", ".*").replace("$service", service)
            filled = filled.replace("$__rate_interval", "1m")
            cases.append(
                {
                    "expr": f"count({filled}) > bool 0",
                    "eval_time": "5m",
                    "exp_samples": [{"labels": "{}", "value": 1}] if expected else [],
                }
            )
    tests = {
        "evaluation_interval": "1m",
        "tests": [{"interval": "15s", "input_series": input_series(queries), "promql_expr_test": cases}],
    }
    (tmp_path / "dashboard_test.yaml").write_text(yaml.safe_dump(tests, sort_keys=False))
    tested = subprocess.run(
        [required_tool("promtool"), "test", "rules", "dashboard_test.yaml"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert tested.returncode == 0, tested.stdout + tested.stderr
