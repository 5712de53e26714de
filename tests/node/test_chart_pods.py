"""The chart as users run it, on real pods: operator, webhooks, injection, plugins, updates, RBAC.

One release (default values, the image under test) serves the whole module; a stand-in of the
handlers service asks for the sidecar by label, runs as its own ServiceAccount and gets the
sidecar from the injection webhook.
"""

from __future__ import annotations

import json
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from luna_cluster.node_config import NODE_IP
from tests.chart.test_chart_monitoring_demo import MONITOR_CRDS, PROMETHEUS_OPERATOR
from tests.node.conftest import NodeCluster
from tests.node.pods import get, ready_pods, recent_events
from tests.node.scrape_jobs import annotation_job, pod_monitor_job, service_monitor_job
from tests.node.workload import (
    RELEASE,
    apply,
    example_code,
    handlers_service,
    install_chart,
    lunaplugin,
    reach,
    reach_every_pod,
    steady_load,
    wait_ready_replicas,
)
from tests.support.chart import ModuleUnavailableError, go_module, install_crds
from tests.support.prometheus import SCRAPE_WAIT, required_tool, start_prometheus
from tests.support.sidecar_harness import http, wait_for

SIDECAR_CONTAINER = "luna-sidecar"
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def release(node_cluster: NodeCluster) -> Iterator[str]:
    """The chart installed with default values into a namespace of its own."""
    namespace = f"luna-system-{uuid.uuid4().hex[:6]}"
    install_chart(node_cluster, namespace)
    try:
        yield namespace
    finally:
        kube = node_cluster.kube
        kube.kubectl("delete", "deployment,service", "-l", "app=handlers", "-n", namespace, check=False)
        kube.helm("uninstall", RELEASE, "--namespace", namespace, "--wait", "--timeout", "2m", check=False)
        kube.kubectl("delete", "namespace", namespace, "--wait=false", check=False)


@pytest.fixture(scope="module")
def handlers(node_cluster: NodeCluster, release: str) -> str:
    """The handlers service (one replica, sidecar injected) with the kettle and route_digest plugins."""
    kube = node_cluster.kube
    apply(
        kube,
        release,
        lunaplugin("kettle", example_code("kettle"), settings={"tickSeconds": 1.0}),
        lunaplugin("route-digest", example_code("route_digest"), module="route_digest"),
        *handlers_service(node_cluster.image),
    )
    wait_ready_replicas(kube, release, "handlers", 1)
    for name in ("kettle", "route-digest"):
        wait_for(
            lambda name=name: loaded(node_cluster, release, name) == "1/1", timeout=120, what=f"{name} 1/1"
        )
    return release


def loaded(cluster: NodeCluster, namespace: str, name: str) -> str:
    status: dict[str, Any] = get(cluster.kube, namespace, "lunaplugin", name).get("status", {})
    return str(status.get("loaded", ""))


def plugin_pods(cluster: NodeCluster, namespace: str, name: str) -> set[str]:
    """The pods the LunaPlugin's status says run it."""
    status = get(cluster.kube, namespace, "lunaplugin", name).get("status", {})
    return {pod["pod"] for pod in status.get("pods", [])}


def handler_pods(cluster: NodeCluster, namespace: str) -> set[str]:
    return {pod["metadata"]["name"] for pod in ready_pods(cluster.kube, namespace, "app=handlers")}


def test_the_operator_runs_as_a_restricted_pod_and_its_webhook_refuses_invalid_plugins(
    node_cluster: NodeCluster, release: str
) -> None:
    kube = node_cluster.kube
    (operator,) = ready_pods(kube, release, "app.kubernetes.io/component=operator")
    (container,) = operator["spec"]["containers"]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["runAsUser"] == 10001
    uid = kube.kubectl("exec", "-n", release, operator["metadata"]["name"], "--", "id", "-u").stdout
    assert uid.strip() == "10001"

    # Ready means the webhooks are served; kube-proxy may still take a moment to route their Service
    assert container["readinessProbe"]["tcpSocket"]["port"] == "webhook"
    broken = lunaplugin("broken", "def broken(:\n    pass\n")
    attempts: list[str] = []

    def refused_by_webhook() -> bool:
        attempts.append(apply(kube, release, broken, "--dry-run=server", check=False).stderr)
        return "denied the request" in attempts[-1]

    try:
        wait_for(refused_by_webhook, timeout=30, what="the webhook's Service to route to the operator")
    except AssertionError as exc:
        raise AssertionError(f"{exc}; kubectl said: {attempts[-3:]}") from None
    # the API server calls the webhook through its Service: the refusal comes from our validation
    refused = apply(kube, release, broken, check=False)
    assert refused.returncode != 0
    assert "denied the request" in refused.stderr, refused.stderr
    assert "line 1" in refused.stderr, refused.stderr
    assert kube.kubectl("get", "lunaplugin", "broken", "-n", release, check=False).returncode != 0

    apply(kube, release, lunaplugin("hello", example_code("kettle")))
    wait_for(
        lambda: get(kube, release, "lunaplugin", "hello").get("status", {}).get("phase") == "Ready",
        timeout=60,
        what="the valid plugin to be Ready",
    )
    kube.kubectl("delete", "lunaplugin", "hello", "-n", release, "--timeout=60s")


def test_an_annotated_deployment_gets_the_sidecar_and_the_plugins_serve_it(
    node_cluster: NodeCluster, handlers: str
) -> None:
    kube = node_cluster.kube
    namespace = handlers
    (pod,) = ready_pods(kube, namespace, "app=handlers")
    assert [c["name"] for c in pod["spec"]["containers"]] == ["handlers", SIDECAR_CONTAINER]
    assert pod["metadata"]["annotations"]["luna.dev/injected"] == SIDECAR_CONTAINER
    assert plugin_pods(node_cluster, namespace, "kettle") == {pod["metadata"]["name"]}

    with (
        reach(node_cluster, namespace, "handlers", 5090) as service,
        reach(node_cluster, namespace, "handlers", 8080) as routes,
    ):
        kettle = http("GET", f"{routes}/kettle", timeout=10)
        assert kettle.status == 200 and "temperature" in kettle.json(), kettle.text
        # the service reports every request to the sidecar over the pod's loopback; route_digest tallies
        for _ in range(5):
            assert http("GET", f"{service}/6/handlers", timeout=10).status == 200

        def tallied() -> int:
            digest = http("GET", f"{routes}/digest", timeout=10).json()
            return int(digest["requests"].get("GET:/6/handlers 200", 0))

        wait_for(lambda: tallied() >= 5, timeout=60, what="route_digest to tally the service's requests")

    kube.kubectl("scale", "deployment", "handlers", "-n", namespace, "--replicas=2")
    wait_ready_replicas(kube, namespace, "handlers", 2)
    wait_for(
        lambda: loaded(node_cluster, namespace, "kettle") == "2/2", timeout=120, what="kettle loaded 2/2"
    )
    pods = handler_pods(node_cluster, namespace)
    assert plugin_pods(node_cluster, namespace, "kettle") == pods

    # a deleted pod's report goes with it (it is owned by the pod)
    victim = sorted(pods)[0]
    kube.kubectl("delete", "pod", victim, "-n", namespace, "--wait=true", "--timeout=120s")

    def report_gone() -> bool:
        reports = get(kube, namespace, "lunapluginruntimes")["items"]
        return victim not in {report["metadata"]["name"] for report in reports}

    wait_for(report_gone, timeout=120, what=f"the report of {victim} to go away with it")
    wait_for(
        lambda: victim not in plugin_pods(node_cluster, namespace, "kettle"),
        timeout=120,
        what="the deleted pod to leave the plugin's status",
    )
    wait_ready_replicas(kube, namespace, "handlers", 2)
    wait_for(lambda: loaded(node_cluster, namespace, "kettle") == "2/2", timeout=120, what="kettle 2/2 again")


def test_a_namespace_that_opts_in_gets_the_sidecar_in_its_pods_under_their_own_accounts(
    node_cluster: NodeCluster, release: str
) -> None:
    kube = node_cluster.kube
    namespace = f"team-{uuid.uuid4().hex[:6]}"
    kube.kubectl("create", "namespace", namespace)
    try:
        kube.kubectl("label", "namespace", namespace, "luna.dev/inject=enabled")
        account, deployment, service = handlers_service(node_cluster.image, name="orders")
        # no label on the pods: the namespace's opt-in brings the sidecar
        del deployment["spec"]["template"]["metadata"]["labels"]["luna.dev/inject"]
        apply(kube, namespace, lunaplugin("kettle", example_code("kettle")), account, deployment, service)
        wait_ready_replicas(kube, namespace, "orders", 1)
        (pod,) = ready_pods(kube, namespace, "app=orders")
        assert [c["name"] for c in pod["spec"]["containers"]] == ["handlers", SIDECAR_CONTAINER]
        assert pod["spec"]["serviceAccountName"] == "orders"
        # the operator bound the pod's own account, and only it, to the sidecar's ClusterRole
        binding = get(kube, namespace, "rolebinding", f"{RELEASE}-luna-plugins-sidecar-access")
        assert binding["roleRef"]["name"] == f"{RELEASE}-luna-plugins-sidecar"
        assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "orders", "namespace": namespace}]
        # ... which is enough for the sidecar: it reads its plugins and reports, so the status counts it
        wait_for(
            lambda: loaded(node_cluster, namespace, "kettle") == "1/1", timeout=120, what="kettle 1/1 in team"
        )
        # a pod of the namespace that refuses the sidecar is created without it
        refusing = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "plain", "labels": {"luna.dev/inject": "disabled"}},
            "spec": {"containers": [{"name": "app", "image": node_cluster.image, "command": ["true"]}]},
        }
        apply(kube, namespace, refusing)
        assert [c["name"] for c in get(kube, namespace, "pod", "plain")["spec"]["containers"]] == ["app"]
    finally:
        kube.kubectl("delete", "namespace", namespace, "--wait=false", check=False)


def test_a_code_update_under_load_through_the_service_fails_no_request(
    node_cluster: NodeCluster, handlers: str
) -> None:
    kube = node_cluster.kube
    namespace = handlers
    with (
        reach(node_cluster, namespace, "handlers", 8080) as routes,
        steady_load(routes, "/kettle/version", threads=4) as outcomes,
    ):
        wait_for(lambda: outcomes.total() > 50, timeout=60, what="load to flow")
        new_code = example_code("kettle").replace("kettle 1.0", "kettle 2.0")
        assert new_code != example_code("kettle")
        apply(kube, namespace, lunaplugin("kettle", new_code, settings={"tickSeconds": 1.0}))
        pods = handler_pods(node_cluster, namespace)

        def everywhere() -> bool:
            served = {http("GET", f"{routes}/kettle/version", timeout=10).text for _ in range(4 * len(pods))}
            return (
                served == {"kettle 2.0"}
                and loaded(node_cluster, namespace, "kettle") == f"{len(pods)}/{len(pods)}"
            )

        wait_for(everywhere, timeout=120, what="every pod to serve kettle 2.0")
        seen_after = outcomes.total()
        wait_for(lambda: outcomes.total() > seen_after + 50, timeout=60, what="more load after the update")
    failures = {outcome: count for outcome, count in outcomes.items() if not outcome.startswith("kettle ")}
    assert failures == {}, f"{outcomes}\nevents:\n{recent_events(kube, namespace)}"
    assert outcomes["kettle 1.0"] > 0 and outcomes["kettle 2.0"] > 0, outcomes


def test_the_sidecar_calls_the_api_with_its_pods_token_and_nothing_more(
    node_cluster: NodeCluster, handlers: str
) -> None:
    kube = node_cluster.kube
    namespace = handlers
    pod = sorted(handler_pods(node_cluster, namespace))[0]
    script = f"""
import json, ssl, urllib.error, urllib.request
base = "/var/run/secrets/kubernetes.io/serviceaccount"
token = open(base + "/token").read()
context = ssl.create_default_context(cafile=base + "/ca.crt")
def status(path):
    headers = {{"Authorization": "Bearer " + token}}
    request = urllib.request.Request("https://kubernetes.default.svc" + path, headers=headers)
    try:
        return urllib.request.urlopen(request, context=context, timeout=10).status
    except urllib.error.HTTPError as exc:
        return exc.code
print(json.dumps({{
    "configmaps": status("/api/v1/namespaces/{namespace}/configmaps"),
    "secrets": status("/api/v1/namespaces/{namespace}/secrets"),
    "lunaplugins": status("/apis/luna.dev/v1alpha1/namespaces/{namespace}/lunaplugins"),
    "other-namespace": status("/api/v1/namespaces/default/configmaps"),
}}))
"""
    result = kube.kubectl("exec", "-n", namespace, pod, "-c", SIDECAR_CONTAINER, "--", "python", "-c", script)
    statuses = json.loads(result.stdout.strip().splitlines()[-1])
    assert statuses == {"configmaps": 200, "secrets": 403, "lunaplugins": 403, "other-namespace": 403}, (
        statuses
    )


PROMETHEUS_ROLE = """
apiVersion: v1
kind: ServiceAccount
metadata: {name: prometheus}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: luna-test-prometheus}
rules:
- {apiGroups: [""], resources: [pods, services, endpoints], verbs: [get, list, watch]}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: luna-test-prometheus}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: luna-test-prometheus}
subjects:
- {kind: ServiceAccount, name: prometheus, namespace: NAMESPACE}
"""


def guide_queries() -> list[str]:
    """The PromQL blocks of the install guide (docs/install.md)."""
    text = (ROOT / "docs" / "install.md").read_text()
    return [block.strip() for block in text.split("```promql")[1:] for block in [block.split("```")[0]]]


def dashboard_queries(namespace: str) -> list[str]:
    """The dashboard's queries of the sidecars' metrics, with its variables filled in (the service:
    the handlers pods' own, which their sidecars expose as luna_sidecar_info's luna_service)."""
    board = json.loads((ROOT / "charts/luna-plugins/files/dashboards/luna-plugins.json").read_text())
    variables = {"$namespace": namespace, "$service": "handlers", "$__rate_interval": "1m"}
    found: list[str] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            expr = node.get("expr")
            if isinstance(expr, str) and "luna_operator_" not in expr:
                for variable, value in variables.items():
                    expr = expr.replace(variable, value)
                found.append(expr)
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(board)
    return found


#: dashboard metrics every sidecar always exposes once it served requests: their panels must
#: show something whatever the scrape mode
ALWAYS_THERE = ("luna_plugins{", "luna_plugin_info{", "luna_event_loop_lag_seconds{", "luna_requests_total{")


@pytest.mark.own_node("Prometheus on this machine reaches pod addresses only on our own node")
def test_the_docs_promql_reads_the_same_through_the_service_monitor_the_pod_monitor_and_annotations(
    node_cluster: NodeCluster, handlers: str, tmp_path: Path
) -> None:
    kube = node_cluster.kube
    namespace = handlers
    promtool = required_tool("promtool")
    kube.kubectl("apply", "-n", namespace, "-f", "-", input=PROMETHEUS_ROLE.replace("NAMESPACE", namespace))
    token = tmp_path / "token"
    token.write_text(
        kube.kubectl("create", "token", "prometheus", "-n", namespace, "--duration=1h").stdout.strip()
    )
    server = yaml.safe_load(node_cluster.kube.kubeconfig.read_text())["clusters"][0]["cluster"]["server"]
    discovery = {
        "api_server": server,
        "authorization": {"credentials_file": str(token)},
        "tls_config": {"ca_file": str(node_cluster.state_dir / "pki" / "ca.crt")},
    }

    # the chart's monitors, with prometheus-operator's CRDs in the cluster
    try:
        crds = Path(go_module(PROMETHEUS_OPERATOR)["Dir"]) / "example" / "prometheus-operator-crd"
    except ModuleUnavailableError as exc:
        pytest.fail(str(exc))
    install_crds(kube, {name: crds / file for name, file in MONITOR_CRDS.items()})
    install_chart(
        node_cluster,
        namespace,
        "--reuse-values",
        "--set",
        "prometheus.podMonitor.enabled=true",
        "--set",
        "prometheus.serviceMonitor.enabled=true",
    )
    (pod_monitor,) = get(kube, namespace, "podmonitors")["items"]
    (service_monitor,) = [
        monitor
        for monitor in get(kube, namespace, "servicemonitors")["items"]
        if monitor["metadata"]["name"].endswith("-sidecars")
    ]
    jobs = {
        "annotations": annotation_job(discovery),
        "podmonitor": pod_monitor_job(pod_monitor, discovery),
        "servicemonitor": service_monitor_job(service_monitor, discovery),
    }

    pods = handler_pods(node_cluster, namespace)
    with reach(node_cluster, namespace, "handlers", 5090) as service:
        for _ in range(10):
            assert (
                http("POST", f"{service}/6/handlers", body={"description": "scraped"}, timeout=10).status
                == 201
            )

    def sidecar_count() -> float:
        """What the sidecars themselves count, read from each pod's metrics port."""
        total = 0.0
        for pod in ready_pods(kube, namespace, "app=handlers"):
            text = http("GET", f"http://{pod['status']['podIP']}:9100/metrics", timeout=10).text
            for line in text.splitlines():
                if line.startswith("luna_requests_total{") and 'route="POST:/6/handlers"' in line:
                    total += float(line.rsplit(" ", 1)[1])
        return total

    wait_for(lambda: sidecar_count() >= 10, timeout=60, what="the sidecars to count the requests")
    expected = sidecar_count()
    operators = {
        pod["metadata"]["name"] for pod in ready_pods(kube, namespace, "app.kubernetes.io/component=operator")
    }
    for mode, job in jobs.items():
        config = tmp_path / f"prometheus-{mode}.yml"
        config.write_text(
            yaml.safe_dump(
                {"global": {"scrape_interval": "1s", "scrape_timeout": "1s"}, "scrape_configs": [job]},
                sort_keys=False,
            )
        )
        check = subprocess.run(
            [promtool, "check", "config", str(config)], capture_output=True, text=True, timeout=60
        )
        assert check.returncode == 0, check.stdout + check.stderr
        workdir = tmp_path / f"prometheus-{mode}"
        workdir.mkdir()
        prometheus = start_prometheus(config, workdir)
        try:
            query = 'sum(luna_requests_total{luna_service="handlers",route="POST:/6/handlers"})'
            wait_for(
                lambda query=query, prometheus=prometheus: prometheus.query(query) == {"": expected},
                timeout=SCRAPE_WAIT * 2,
                what=f"{mode}: {query} == {expected}",
            )
            # the annotations job scrapes the operator pod too (its own metrics; the upgrade above
            # may have just replaced it, so its first scrapes can fail); the monitors the sidecars
            scraped = pods | (operators if mode == "annotations" else set())
            up = "sum by (pod) (up)"
            wait_for(
                lambda up=up, scraped=scraped, prometheus=prometheus: (
                    prometheus.query(up) == {pod: 1.0 for pod in scraped}
                ),
                timeout=SCRAPE_WAIT * 2,
                what=f"{mode}: {up} == 1 for {sorted(scraped)}",
            )
            # no label of ours was renamed to make room for a target label (exported_service ...)
            series = prometheus.api("/api/v1/series", **{"match[]": '{__name__=~"luna_.+"}'})
            renamed = {name for item in series for name in item if name.startswith("exported_")}
            assert not renamed, f"{mode}: labels renamed by the scrape: {renamed}"
            for guide_query in guide_queries():
                wait_for(
                    lambda q=guide_query, prometheus=prometheus: prometheus.query(q),
                    timeout=SCRAPE_WAIT,
                    what=f"{mode}: the install guide's {guide_query} to find something",
                )
            for board_query in dashboard_queries(namespace):
                prometheus.query(board_query)  # fails the test on a query Prometheus refuses
                if any(metric in board_query for metric in ALWAYS_THERE):  # rates need two scrapes
                    wait_for(
                        lambda q=board_query, prometheus=prometheus: prometheus.query(q),
                        timeout=SCRAPE_WAIT,
                        what=f"{mode}: the dashboard's {board_query} to find something",
                    )
            # the alerts group the sidecars' metrics by namespace and pod: both are there
            grouped = prometheus.query('count by (namespace, pod) (luna_plugin_info{state="running"})')
            assert set(grouped) == {f"{namespace},{pod}" for pod in pods}, (mode, grouped)
        except AssertionError:
            print(prometheus.log()[-3000:])
            raise
        finally:
            prometheus.stop()


ROLLOUT_ROUTE = """
from luna_plugins.base.plugins_meta.base_plugins import BaseBackgroundPlugin, pluginHTTPResponse

class Version(BaseBackgroundPlugin):
    async def initialize(self):
        self.addRoute("/version", self.version)

    def version(self, request):
        {body}
"""


def test_a_staged_rollout_on_four_pods_promotes_a_good_version_and_rolls_back_a_bad_one(
    node_cluster: NodeCluster, release: str
) -> None:
    """spec.rollout on a Deployment of 4 replicas: a good v2 goes 25 % -> 50 % -> 100 % with no
    failed request through the Service; a v3 that fails every request runs on one pod at most
    (the test watches the status all along) and is rolled back by itself."""
    kube = node_cluster.kube
    namespace = f"roll-{uuid.uuid4().hex[:6]}"
    kube.kubectl("create", "namespace", namespace)
    try:
        code = {v: ROLLOUT_ROUTE.format(body=f'return pluginHTTPResponse(body="{v}")') for v in ("v1", "v2")}
        code["v3"] = ROLLOUT_ROUTE.format(body='raise RuntimeError("v3 is broken")')
        rollout = {
            "steps": [{"percent": 25, "pause": "5s"}, {"percent": 50, "pause": "5s"}, {"percent": 100}],
            "analysis": {"interval": "3s", "failureLimit": 2},
        }

        def plugin(version: str) -> dict[str, Any]:
            manifest = lunaplugin("version", code[version])
            if version != "v1":
                manifest["spec"]["rollout"] = rollout
            return manifest

        apply(kube, namespace, plugin("v1"), *handlers_service(node_cluster.image, replicas=4))
        wait_ready_replicas(kube, namespace, "handlers", 4)
        wait_for(lambda: loaded(node_cluster, namespace, "version") == "4/4", timeout=120, what="v1 on 4/4")
        canary_counts: list[int] = []

        def rollout_phase(wanted: str) -> bool:
            found = get(kube, namespace, "lunaplugin", "version").get("status", {}).get("rollout") or {}
            if found.get("phase") in ("Progressing", "Paused", "Held"):
                canary_counts.append(len(found.get("canaryPods") or []))
            return found.get("phase") == wanted

        # every pod gets requests, the canary's too (through the Service on our own node)
        with (
            reach_every_pod(node_cluster, namespace, "handlers", 8080) as every_pod,
            steady_load(every_pod, "/version", threads=max(4, len(every_pod))) as outcomes,
        ):
            wait_for(lambda: outcomes.total() > 50, timeout=60, what="load to flow")
            apply(kube, namespace, plugin("v2"))
            wait_for(lambda: rollout_phase("Promoted"), timeout=180, what="v2 to be promoted")
            wait_for(
                lambda: loaded(node_cluster, namespace, "version") == "4/4", timeout=60, what="v2 on 4/4"
            )
            good = outcomes.now()
            assert {k for k in good if k not in ("v1", "v2")} == set(), good
            # 25 %, 50 %, 100 % of 4 pods, in that order
            steps = list(dict.fromkeys(canary_counts))
            assert good.get("v2", 0) > 0 and steps == sorted(steps) and set(steps) <= {1, 2, 4}, canary_counts
            assert steps[0] == 1, canary_counts

            canary_counts.clear()
            apply(kube, namespace, plugin("v3"))
            wait_for(lambda: rollout_phase("RolledBack"), timeout=180, what="v3 to be rolled back")
            assert canary_counts and max(canary_counts) == 1, canary_counts  # 25 % of 4 pods
            wait_for(
                lambda: loaded(node_cluster, namespace, "version") == "4/4", timeout=60, what="v2 on 4/4"
            )
        status = get(kube, namespace, "lunaplugin", "version")["status"]
        assert status["rollout"]["phase"] == "RolledBack" and "rolled back" in status["message"]
        assert outcomes["status 500"] > 0, outcomes  # the canary pod's answers while it ran v3
        assert set(outcomes) <= {"v1", "v2", "status 500"}, f"{outcomes}\n{recent_events(kube, namespace)}"
    finally:
        kube.kubectl("delete", "namespace", namespace, "--wait=false", check=False)


@pytest.mark.own_node(
    "Prometheus listens on our own node's address, which pods of another cluster do not reach"
)
def test_a_rollout_whose_prometheus_stops_mid_analysis_is_held_not_promoted(
    node_cluster: NodeCluster, release: str, tmp_path: Path
) -> None:
    """The operator's pod asks a real Prometheus (on the node's address, which pods reach) for a
    rollout query: the query's figure shows in status; Prometheus stopped mid-rollout, the
    judgements are inconclusive and the rollout is held (onInconclusive: Hold), never promoted,
    while the version in service keeps serving."""
    kube = node_cluster.kube
    config = tmp_path / "prometheus.yml"
    config.write_text("global: {evaluation_interval: 1s}\n")
    prometheus = start_prometheus(config, tmp_path, host=NODE_IP)
    namespace = f"held-{uuid.uuid4().hex[:6]}"
    try:
        install_chart(node_cluster, release, "--set", f"operator.prometheus.url={prometheus.url}")
        kube.kubectl("create", "namespace", namespace)
        code = {v: ROLLOUT_ROUTE.format(body=f'return pluginHTTPResponse(body="{v}")') for v in ("v1", "v2")}
        apply(
            kube,
            namespace,
            lunaplugin("version", code["v1"]),
            *handlers_service(node_cluster.image, replicas=2),
        )
        wait_ready_replicas(kube, namespace, "handlers", 2)
        wait_for(lambda: loaded(node_cluster, namespace, "version") == "2/2", timeout=120, what="v1 on 2/2")
        v2 = lunaplugin("version", code["v2"])
        v2["spec"]["rollout"] = {
            # a long pause: judgements go on in the first step, the rollout cannot finish meanwhile
            "steps": [{"percent": 50, "pause": "10m"}, {"percent": 100}],
            "analysis": {
                "interval": "2s",
                "failureLimit": 2,
                "onInconclusive": "Hold",
                "queries": [{"name": "flat", "query": "vector(0.5)", "maxValue": 1}],
            },
        }

        def rollout() -> dict[str, Any]:
            return dict(get(kube, namespace, "lunaplugin", "version").get("status", {}).get("rollout") or {})

        def judged(verdict: str) -> list[dict[str, Any]]:
            return [a for a in rollout().get("analyses") or [] if a.get("verdict") == verdict]

        # traffic on both pods: the built-in part of each judgement needs answers to judge
        with (
            reach(node_cluster, namespace, "handlers", 8080) as routes,
            steady_load(routes, "/version", threads=2) as answers,
        ):
            apply(kube, namespace, v2)
            wait_for(lambda: judged("Successful"), timeout=120, what="a successful judgement with the query")
            (figure,) = judged("Successful")[-1]["queries"]
            assert figure == {"name": "flat", "verdict": "Successful", "value": "0.5"}, figure
            prometheus.stop()
            wait_for(lambda: rollout().get("phase") == "Held", timeout=60, what="the rollout held")
            held = rollout()
            assert "Prometheus could not be reached" in held["reason"] and held["failures"] == 0, held
            wait_for(
                lambda: len(judged("Inconclusive")) >= 3, timeout=60, what="more inconclusive judgements"
            )
            final = rollout()
            assert final["phase"] == "Held" and final["step"] == 0, final
            assert len(final["canaryPods"]) == 1, final  # 50 % of 2 pods, never more
        assert answers["v1"] and answers["v2"], answers  # both versions served throughout
        # every answer came from v1 or v2; a request this machine's network lost on its way to a
        # pod (seen once in 19,000: "No route to host", the host's neighbour entry for a pod
        # address being probed again) is no answer of the sidecar: such losses stay rare, and no
        # sidecar restarted (a crash would show there, and as many lost requests)
        lost = {outcome: n for outcome, n in answers.items() if outcome.startswith("error ")}
        assert set(answers) - set(lost) <= {"v1", "v2"}, answers
        assert sum(lost.values()) * 1000 <= answers.total(), answers
        restarts = [
            (pod["metadata"]["name"], status["name"], status.get("restartCount", 0))
            for pod in get(kube, namespace, "pods")["items"]
            for status in pod.get("status", {}).get("containerStatuses") or []
        ]
        assert restarts and all(count == 0 for _, _, count in restarts), restarts
    finally:
        prometheus.stop()
        kube.kubectl("delete", "namespace", namespace, "--wait=false", check=False)
        install_chart(node_cluster, release)  # the release as the module's other tests know it
