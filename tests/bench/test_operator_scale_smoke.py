"""The operator scale benchmark still runs, with both report formats, and what it measures
holds together (a regression guard, not a timing).

One small pair of ``bench/operator_scale.py`` on a control plane of its own: the real operator,
simulated sidecars writing real reports (the sidecar's own writer) to a real API server, once
with the reports sidecars write (the active list's revision and what differs) and once with
full reports. Asserted: every rollout reached every report and ``status.loaded`` counted every
pod on the new version in both formats (so the operator reads compact reports as it reads full
ones), and compact reports are smaller. No rate or latency is asserted: targets live in the
benchmark.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
PODS, PLUGINS, ROLLOUTS = 20, 6, 2

pytestmark = pytest.mark.kube


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    output = tmp_path_factory.mktemp("scale") / "figures.json"
    done = subprocess.run(
        [
            sys.executable,
            str(ROOT / "bench" / "operator_scale.py"),
            *("--pods", str(PODS), "--services", "1", "--plugins", str(PLUGINS)),
            *("--settle", "1", "--rest", "2", "--rollouts", str(ROLLOUTS), "--rollout-interval", "1"),
            *("--reports", "compact,full", "--output", str(output)),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, f"the benchmark failed:\n{done.stdout}\n{done.stderr[-4000:]}"
    assert "Targets" not in done.stdout  # targets are judged at N = 500 only
    return {row["reports"]: row for row in json.loads(output.read_text())}


@pytest.mark.parametrize("reports", ["compact", "full"])
def test_every_rollout_reaches_every_report_and_status_counts_every_pod(
    results: dict[str, dict[str, Any]], reports: str
) -> None:
    row = results[reports]
    assert row["pods"] == PODS and row["plugins"] == PLUGINS
    assert row["reports_missed"] == [] and row["loaded_missed"] == []
    assert len(row["all_reports_seconds"]) == len(row["loaded_seconds"]) == ROLLOUTS
    assert len(row["report_seconds"]) == ROLLOUTS * PODS


def test_compact_reports_are_smaller_than_full_ones(results: dict[str, dict[str, Any]]) -> None:
    compact, full = results["compact"]["report_bytes"], results["full"]["report_bytes"]
    assert 0 < compact < full
