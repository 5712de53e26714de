"""/metrics as Prometheus sees it, the user mapping file, and start-up errors of the CLI."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
from pathlib import Path

import pytest

from tests.support.plugin_sources import RECORDER, route_plugin
from tests.support.sidecar_harness import HOST, free_port, http, points, sidecar_command, wait_for

MAPPING = """
metrics:
  - series: boiler
    name: boiler_temperature_celsius
    type: gauge
    labels: [boiler]
    value: celsius
  - series: requests
    name: luna_request_db_seconds
    type: histogram
    labels: [route]
    value: db_time
    buckets: [0.01, 0.1, 1]
  - series: boiler
    name: boiler_readings_total
"""


def promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        if os.environ.get("CI"):
            pytest.fail("promtool is required in CI (Debian package 'prometheus'; `make test` installs it)")
        pytest.skip("promtool not installed (Debian package 'prometheus')")
    return found


def test_metrics_pass_promtool_and_follow_the_default_mapping(sidecar_factory, tmp_path: Path) -> None:
    mapping = tmp_path / "mapping.yaml"
    mapping.write_text(MAPPING)
    sidecar = sidecar_factory(
        plugins={"recorder": RECORDER, "route": route_plugin("/hi", "hi")},
        active=["recorder", "route"],
        settings={"recorder": {"out": str(tmp_path / "out.jsonl")}},
        args=["--metrics-mapping", str(mapping), "--max-label-sets", "3"],
    )
    body = points(4, elapsed=0.3)
    body["points"][0]["fields"]["db_time"] = 0.05
    body["points"].append(
        {
            "series": "errors",
            "eventTime": 1.0,
            "tags": {"service": "handlers", "route": "POST:/x", "error_code": 11027},
            "fields": {"request_id": "r"},
        }
    )
    body["points"].append(
        {"series": "boiler", "eventTime": 1.0, "tags": {"boiler": "b1"}, "fields": {"celsius": 71.5}}
    )
    assert sidecar.post_event("monitoring_event", body).status == 202
    assert sidecar.get("/hi").text == "hi"
    wait_for(lambda: sidecar.metric("luna_requests_total", route="GET:/hi") == 1, what="the route point")
    for index in range(5):  # more routes than --max-label-sets allows
        sidecar.post_event("monitoring_event", points(1, route=f"GET:/r{index}"))
    text = sidecar.metrics_text()
    check = subprocess.run([promtool(), "check", "metrics"], input=text, capture_output=True, text=True)
    assert check.returncode == 0 and not check.stdout.strip() and not check.stderr.strip(), check
    route = "POST:/6/handlers/x/events"
    assert sidecar.metric("luna_requests_total", luna_service="handlers", route=route, status_code="200") == 4
    assert sidecar.metric("luna_request_duration_seconds_count", route=route) == 4
    assert sidecar.metric("luna_request_duration_seconds_bucket", route=route, le="0.25") == 0
    assert sidecar.metric("luna_request_duration_seconds_bucket", route=route, le="0.5") == 4
    assert sidecar.metric("luna_errors_total", route="POST:/x", error_code="11027") == 1
    assert sidecar.metric("luna_monitoring_points_total", series="boiler") == 1
    assert sidecar.metric("luna_monitoring_points_total", series="requests") == 0
    assert sidecar.metric("luna_sidecar_info", luna_service="handlers") == 1  # the alerts join on it
    assert sidecar.metric("boiler_temperature_celsius", boiler="b1") == 71.5
    assert sidecar.metric("boiler_readings_total") == 1
    assert sidecar.metric("luna_request_db_seconds_bucket", route=route, le="0.1") == 1
    assert "request_id" not in text
    assert sidecar.metric("luna_metric_label_overflow_total", metric="luna_requests") >= 1
    for family in (
        "luna_plugins",
        "luna_plugin_queue_depth",
        "luna_event_loop_lag_seconds",
        "luna_plugin_callback_duration_seconds_count",
        "luna_intake_items_total",
    ):
        assert family in text
    assert http("GET", sidecar.metrics_url + "/healthz").status == 200


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    child_env = {k: v for k, v in os.environ.items() if not k.startswith("LUNA_")} | (env or {})
    return subprocess.run(
        [*sidecar_command(), "sidecar", *args], capture_output=True, text=True, env=child_env, timeout=30
    )


def base_args(tmp_path: Path) -> list[str]:
    return [
        "--plugins-dir",
        str(tmp_path),
        "--host",
        HOST,
        "--port",
        str(free_port()),
        "--admin-port",
        str(free_port()),
        "--metrics-host",
        HOST,
        "--metrics-port",
        str(free_port()),
    ]


def test_asyncios_own_event_loop_serves_too(sidecar_factory) -> None:
    sidecar = sidecar_factory(plugins={}, active=[], args=["--event-loop", "asyncio"])
    assert sidecar.post_event("monitoring_event", points(3)).json()["accepted"] == 3
    assert sidecar.stop() == 0


def test_startup_errors_are_clear_and_exit_2(tmp_path: Path) -> None:
    missing = run_cli("--plugins-dir", str(tmp_path / "nope"))
    assert missing.returncode == 2 and "no such directory" in missing.stderr
    bad_env = run_cli(*base_args(tmp_path), env={"LUNA_SIDECAR_QUEUE_ITEMS": "lots"})
    assert bad_env.returncode == 2 and "LUNA_SIDECAR_QUEUE_ITEMS='lots'" in bad_env.stderr
    bad_list = run_cli(*base_args(tmp_path), "--active", "a,b-c")
    assert bad_list.returncode == 2 and "Python module names" in bad_list.stderr
    mapping = tmp_path / "m.yaml"
    mapping.write_text("metrics:\n  - {series: requests, name: per_request, labels: [request_id]}\n")
    bad_mapping = run_cli(*base_args(tmp_path), "--metrics-mapping", str(mapping))
    assert bad_mapping.returncode == 2 and "'request_id' is unique per request" in bad_mapping.stderr
    with socket.socket() as busy:
        busy.bind((HOST, 0))
        busy.listen()
        port = busy.getsockname()[1]
        in_use = run_cli(*base_args(tmp_path)[:-2], "--metrics-port", str(port))
    assert (
        in_use.returncode == 2 and f"cannot listen for metrics and probes on {HOST}:{port}" in in_use.stderr
    )


def test_help_lists_every_setting_with_its_variable() -> None:
    from luna_sidecar.config import setting_docs

    shown = subprocess.run([*sidecar_command(), "sidecar", "--help"], capture_output=True, text=True).stdout
    for flag, variable, _, _ in setting_docs():
        assert flag in shown and variable in shown.replace("\n", "").replace(" ", "")


def test_the_settings_reference_is_the_generated_table() -> None:
    from luna_sidecar.config import settings_table

    page = (Path(__file__).resolve().parents[2] / "docs" / "reference" / "sidecar-settings.md").read_text()
    start, end = "<!-- sidecar-settings:start -->\n", "\n<!-- sidecar-settings:end -->"
    shown = page[page.index(start) + len(start) : page.index(end)]
    assert shown == settings_table(), (
        "docs/reference/sidecar-settings.md is stale: python scripts/docs_reference.py rewrites it"
    )


def test_loopback_defaults_for_intake() -> None:
    from luna_sidecar.config import SidecarConfig

    assert SidecarConfig().admin_host == "127.0.0.1"
