"""`make demo` runs: the demo starts the sidecar, feeds it points and stops it cleanly."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

DEMO = Path(__file__).resolve().parents[2] / "examples" / "demo.py"


def test_demo_runs_and_stops_cleanly() -> None:
    result = subprocess.run(
        [sys.executable, str(DEMO), "--duration", "2"], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "curl http://127.0.0.1:" in result.stdout
    assert "sidecar exited with 0" in result.stdout
    sent = int(result.stdout.split("generator sent ")[1].split(" points")[0])
    assert sent > 0
