"""Prometheus scrape jobs as users get them for the sidecars: what prometheus-operator generates
for the chart's ServiceMonitor and PodMonitor, and the usual job for ``prometheus.io/*`` pod
annotations (Prometheus' own example configuration). Each puts the target labels that job puts
(``namespace``, ``pod``, and for the monitors ``container``, ``endpoint``, ``service``, ``job``)
so that queries are tested against the labels each mode really gives."""

from __future__ import annotations

from typing import Any

POD = "__meta_kubernetes_pod_"
SERVICE = "__meta_kubernetes_service_"
ENDPOINT = "__meta_kubernetes_endpoint_"
NAMESPACE = "__meta_kubernetes_namespace"


def label_name(key: str) -> str:
    """How Kubernetes service discovery spells a label or annotation key in its meta labels."""
    return "".join(char if char.isalnum() else "_" for char in key)


def _namespaces(monitor: dict[str, Any], discovery: dict[str, Any]) -> dict[str, Any]:
    selector = monitor["spec"].get("namespaceSelector", {})
    sd = dict(discovery)
    if not selector.get("any"):
        sd["namespaces"] = {"names": selector.get("matchNames") or [monitor["metadata"]["namespace"]]}
    return sd


def _keep(prefix: str, match_labels: dict[str, str]) -> list[dict[str, Any]]:
    return [
        {"source_labels": [f"{prefix}label_{label_name(key)}"], "regex": value, "action": "keep"}
        for key, value in match_labels.items()
    ]


def _copy(source: str, target: str) -> dict[str, Any]:
    return {"source_labels": [source], "target_label": target}


def pod_monitor_job(monitor: dict[str, Any], discovery: dict[str, Any]) -> dict[str, Any]:
    """The job prometheus-operator makes of a PodMonitor with one metrics endpoint (its
    namespace selector, label selector and named container port) on pod ``discovery``."""
    spec = monitor["spec"]
    (endpoint,) = spec["podMetricsEndpoints"]
    meta = monitor["metadata"]
    return {
        "job_name": "podmonitor",
        "honor_labels": bool(endpoint.get("honorLabels", False)),
        "metrics_path": endpoint.get("path", "/metrics"),
        "kubernetes_sd_configs": [_namespaces(monitor, {**discovery, "role": "pod"})],
        "relabel_configs": [
            *_keep(POD, spec["selector"]["matchLabels"]),
            {"source_labels": [f"{POD}container_port_name"], "regex": endpoint["port"], "action": "keep"},
            _copy(NAMESPACE, "namespace"),
            _copy(f"{POD}container_name", "container"),
            _copy(f"{POD}name", "pod"),
            {"target_label": "job", "replacement": f"{meta['namespace']}/{meta['name']}"},
            {"target_label": "endpoint", "replacement": endpoint["port"]},
        ],
    }


def service_monitor_job(monitor: dict[str, Any], discovery: dict[str, Any]) -> dict[str, Any]:
    """The job prometheus-operator makes of a ServiceMonitor with one endpoint (a named Service
    port) on endpoints ``discovery``: the Service's labels select, the target carries the
    Service's name as ``service`` and as ``job``."""
    spec = monitor["spec"]
    (endpoint,) = spec["endpoints"]
    return {
        "job_name": "servicemonitor",
        "honor_labels": bool(endpoint.get("honorLabels", False)),
        "metrics_path": endpoint.get("path", "/metrics"),
        "kubernetes_sd_configs": [_namespaces(monitor, {**discovery, "role": "endpoints"})],
        "relabel_configs": [
            *_keep(SERVICE, spec["selector"]["matchLabels"]),
            {"source_labels": [f"{ENDPOINT}port_name"], "regex": endpoint["port"], "action": "keep"},
            _copy(NAMESPACE, "namespace"),
            _copy(f"{SERVICE}name", "service"),
            _copy(f"{POD}name", "pod"),
            _copy(f"{POD}container_name", "container"),
            _copy(f"{SERVICE}name", "job"),
            {"target_label": "endpoint", "replacement": endpoint["port"]},
        ],
    }


def annotation_job(discovery: dict[str, Any]) -> dict[str, Any]:
    """The usual job for ``prometheus.io/scrape|port|path`` pod annotations, with the
    ``namespace`` and ``pod`` labels Prometheus' example configuration gives its targets."""
    annotation = f"{POD}annotation_prometheus_io_"
    return {
        "job_name": "annotations",
        "kubernetes_sd_configs": [{**discovery, "role": "pod"}],
        "relabel_configs": [
            {"source_labels": [f"{annotation}scrape"], "regex": "true", "action": "keep"},
            {"source_labels": [f"{annotation}path"], "regex": "(.+)", "target_label": "__metrics_path__"},
            {
                "source_labels": [f"{POD}ip", f"{annotation}port"],
                "regex": "(.+);(\\\\d+)",
                "replacement": "$1:$2",
                "target_label": "__address__",
            },
            _copy(NAMESPACE, "namespace"),
            _copy(f"{POD}name", "pod"),
        ],
    }
