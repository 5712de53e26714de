"""The operator process's ``--log-format json`` lines (every line parsed back, with its fields;
those about a LunaPlugin name it) and its ``luna_build_info`` on ``/metrics``, against the test
cluster; a bad format stops the start naming the flag."""

from __future__ import annotations

import platform
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support.json_logs import json_lines
from tests.support.operator_harness import Cluster, plugin_manifest, route_code, start_operator
from tests.support.sidecar_harness import http, sidecar_command, wait_for


@pytest.mark.kube
def test_json_lines_and_build_info(cluster: Cluster, kube: Any, tmp_path: Path) -> None:
    operator = start_operator(kube, cluster.namespace, tmp_path, "--log-format", "json")
    try:
        families = text_string_to_metric_families(http("GET", operator.metrics_url).text)
        (build,) = [s for f in families for s in f.samples if s.name == "luna_build_info"]
        assert build.value == 1 and build.labels == {
            "component": "operator",
            "version": metadata.version("luna-plugins"),
            "python_version": platform.python_version(),
        }
        cluster.apply(plugin_manifest("greeter", cluster.namespace, route_code()))
        wait_for(
            lambda: any(r["plugin"] == "greeter" for r in json_lines(operator.log())),
            timeout=60,
            what="a log line about the LunaPlugin",
        )
    finally:
        assert operator.stop() == 0
    records = json_lines(operator.log())
    assert any(r["logger"].startswith("luna_operator") or r["logger"].startswith("kopf") for r in records)


def test_a_bad_log_format_stops_the_start_naming_the_flag() -> None:
    result = subprocess.run(
        [*sidecar_command(), "operator", "--log-format", "yaml"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert "--log-format='yaml'" in result.stderr and "text, json" in result.stderr
