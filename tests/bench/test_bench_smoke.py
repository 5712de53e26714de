"""The throughput benchmark still runs and its counters agree (a regression guard, not a timing).

One short round of every scenario with ``bench/run.py --smoke``: real sidecars, the bare app and
wrk. Asserted: the run succeeds, every point wrk sent and the sidecar accepted reached every
monitoring plugin, nothing was dropped or failed, every route request became a point. No ratio
or rate is asserted: targets live in the benchmark, not in the test suite.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
CONNECTIONS = 8

pytestmark = pytest.mark.skipif(shutil.which("wrk") is None, reason="wrk is not installed (make system-deps)")


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    output = tmp_path_factory.mktemp("bench") / "figures.json"
    done = subprocess.run(
        [
            sys.executable,
            str(ROOT / "bench" / "run.py"),
            "--smoke",
            "--rounds",
            "1",
            "--duration",
            "1",
            "--warmup",
            "0",
            "--connections",
            str(CONNECTIONS),
            "--output",
            str(output),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert done.returncode == 0, f"the benchmark failed:\n{done.stdout}\n{done.stderr}"
    assert "CPU " in done.stdout and "Python 3." in done.stdout, "the report names the CPU and Python"
    figures: dict[str, Any] = json.loads(output.read_text())
    return figures


def _rows(report: dict[str, Any], scenario: str) -> list[dict[str, Any]]:
    rows = [row for row in report["rows"] if row["scenario"] == scenario and "counters" in row]
    assert rows, f"no sidecar figures for {scenario}"
    return rows


def test_the_benchmark_finds_no_problem(report: dict[str, Any]) -> None:
    assert report["problems"] == []
    assert report["decode_limit_points_per_cpu_second"] > 0


@pytest.mark.parametrize(("scenario", "plugins"), [("intake", 1), ("intake10", 10)])
def test_every_accepted_point_reaches_every_plugin(
    report: dict[str, Any], scenario: str, plugins: int
) -> None:
    points = report["settings"]["points"]
    for row in _rows(report, scenario):
        counters = row["counters"]
        accepted = counters["intake_ok"]
        # wrk does not count the requests in flight when it stops: at most one per connection
        assert row["wrk_requests"] <= accepted <= row["wrk_requests"] + CONNECTIONS
        assert accepted > 0 and counters["intake_bad"] == 0
        assert counters["intake_items"] == accepted * points
        assert counters["handled"] == accepted * plugins
        assert counters["dropped"] == counters["failed"] == 0
        assert counters["point_requests"] == accepted * points, "every point reached the metrics"


def test_every_route_request_becomes_a_point(report: dict[str, Any]) -> None:
    for row in _rows(report, "route"):
        counters = row["counters"]
        served = counters["route_requests"]
        assert row["wrk_requests"] <= served <= row["wrk_requests"] + CONNECTIONS
        assert served > 0
        assert counters["point_requests"] == served
        assert counters["handled"] > 0 and counters["dropped"] == counters["failed"] == 0
