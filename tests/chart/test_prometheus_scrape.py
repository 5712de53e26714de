"""A real Prometheus, configured from the chart's scrape settings, scrapes a real sidecar.

The chart tells Prometheus where a sidecar's metrics are with the pod annotations of
``luna-plugins.sidecarPodAnnotations`` (``prometheus.io/scrape|port|path``) and the container port
``plugin-metrics`` of ``luna-plugins.sidecarContainer``. This test renders both with ``helm
template``, builds a scrape job from them (the usual annotation relabelling, on a static target
since there is no Kubernetes service discovery here), and shows that Prometheus then stores the
counts of monitoring points posted to the sidecar.

Needs ``prometheus`` and ``promtool`` (Debian package ``prometheus``; ``make system-deps``
installs it): without them the test fails rather than skips.
"""

from __future__ import annotations

import subprocess
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.chart.helpers import of_kind, render, service_chart
from tests.prometheus import SCRAPE_WAIT, required_tool, start_prometheus
from tests.sidecar.harness import HOST, Sidecar, points, start_sidecar, wait_for

JOB = "luna-sidecar"
ROUTE = "GET:/orders"
#: the Kubernetes service discovery labels of the pod annotations Prometheus relabels on
META = "__meta_kubernetes_pod_annotation_prometheus_io_"


@dataclass
class ScrapeSettings:
    """What the chart tells Prometheus about a sidecar pod."""

    annotations: dict[str, str]
    metrics_port: int  # containerPort of the port named plugin-metrics

    @property
    def path(self) -> str:
        return self.annotations.get("prometheus.io/path", "/metrics")


def chart_scrape_settings(kube: Any, tmp_path: Path) -> ScrapeSettings:
    """The sidecar pod's annotations and metrics port, rendered from the chart's named templates."""
    objects = render(kube, chart=service_chart(tmp_path))
    (deployment,) = [d for d in of_kind(objects, "Deployment") if d["metadata"]["name"] == "handlers"]
    pod = deployment["spec"]["template"]
    (sidecar,) = [c for c in pod["spec"]["containers"] if c["name"] == "luna-sidecar"]
    (port,) = [p for p in sidecar["ports"] if p["name"] == "plugin-metrics"]
    return ScrapeSettings(dict(pod["metadata"]["annotations"]), int(port["containerPort"]))


def scrape_config(settings: ScrapeSettings, target: str) -> dict[str, Any]:
    """A Prometheus configuration with one job scraping ``target`` as the chart's settings say.

    The annotations become the ``__meta_kubernetes_pod_annotation_*`` labels Kubernetes service
    discovery would give the pod, and the usual annotation rules (keep when scrape is "true",
    the metrics path from the path annotation) act on them.
    """
    labels = {
        f"{META}{key.removeprefix('prometheus.io/')}": value
        for key, value in settings.annotations.items()
        if key.startswith("prometheus.io/")
    }
    return {
        "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
        "scrape_configs": [
            {
                "job_name": JOB,
                "scrape_interval": "1s",
                "scrape_timeout": "1s",
                "scheme": "http",
                "metrics_path": settings.path,
                "static_configs": [{"targets": [target], "labels": labels}],
                "relabel_configs": [
                    {"source_labels": [f"{META}scrape"], "action": "keep", "regex": "true"},
                    {
                        "source_labels": [f"{META}path"],
                        "action": "replace",
                        "regex": "(.+)",
                        "target_label": "__metrics_path__",
                    },
                ],
            }
        ],
    }


@pytest.fixture
def sidecar(tmp_path: Path) -> Iterator[Sidecar]:
    """A standalone sidecar (no plugins) on free loopback ports; stopped after the test."""
    workdir = tmp_path / "sidecar"
    workdir.mkdir()
    running = start_sidecar(workdir)
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture
def prometheus_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "prometheus"
    directory.mkdir()
    return directory


@pytest.mark.kube
def test_prometheus_scrapes_the_sidecar_as_the_chart_says(
    kube: Any, sidecar: Sidecar, prometheus_dir: Path, tmp_path: Path
) -> None:
    promtool = required_tool("promtool")
    settings = chart_scrape_settings(kube, tmp_path)
    assert settings.annotations["prometheus.io/scrape"] == "true"
    assert int(settings.annotations["prometheus.io/port"]) == settings.metrics_port
    assert settings.path.startswith("/")

    # In a pod, Prometheus would reach the sidecar on <pod IP>:<prometheus.io/port>. Here the sidecar
    # listens on a free loopback port P (fixed ports may be busy on this machine), so the target maps
    # the annotation's port to P explicitly: 127.0.0.1:P stands for <pod IP>:9100.
    metrics = urllib.parse.urlsplit(sidecar.metrics_url)
    assert metrics.hostname == HOST and metrics.port is not None
    target = f"{HOST}:{metrics.port}"
    config = prometheus_dir / "prometheus.yml"
    config.write_text(yaml.safe_dump(scrape_config(settings, target), sort_keys=False))
    check = subprocess.run(
        [promtool, "check", "config", str(config)], capture_output=True, text=True, timeout=30
    )
    assert check.returncode == 0, f"promtool check config:\n{check.stdout}{check.stderr}"

    prometheus = start_prometheus(config, prometheus_dir)
    try:
        for status, count in ((200, 7), (500, 3)):
            reply = sidecar.post_event("monitoring_event", points(count, route=ROUTE, status=status))
            assert reply.status == 202, reply.text

        wanted = {"200": 7.0, "500": 3.0}
        expression = f'sum by (status_code) (luna_requests_total{{job="{JOB}"}})'
        seen: list[dict[str, float]] = []

        def stored() -> bool:
            seen.append(prometheus.query(expression))
            return seen[-1] == wanted

        try:
            wait_for(stored, timeout=SCRAPE_WAIT, what=f"Prometheus to store {wanted} ({expression})")
        except AssertionError as exc:
            raise AssertionError(f"{exc}; the query's last result: {seen[-1:]}") from None
        wait_for(
            lambda: list(prometheus.query(f'up{{job="{JOB}"}}').values()) == [1.0],
            timeout=SCRAPE_WAIT,
            what="up == 1 for the sidecar's job",
        )
        (active,) = prometheus.api("/api/v1/targets")["activeTargets"]
        assert active["scrapeUrl"] == f"http://{target}{settings.path}", active
        assert active["health"] == "up", active
        by_route = prometheus.query(f'sum by (service, route) (luna_requests_total{{job="{JOB}"}})')
        assert by_route == {f"{ROUTE},handlers": 10.0}, by_route  # route, service
    except AssertionError:
        print(prometheus.log()[-3000:])
        raise
    finally:
        prometheus.stop()

    exposition = sidecar.metrics_text()
    check = subprocess.run(
        [promtool, "check", "metrics"], input=exposition, capture_output=True, text=True, timeout=30
    )
    assert check.returncode == 0 and not check.stdout.strip() and not check.stderr.strip(), check
