"""`luna-plugins render FILE | kubectl apply -f -` against the real API server and operator: the
plugin becomes Ready and a sidecar serves it, with the code inline and from a ConfigMap."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.operator.harness import Cluster
from tests.sidecar.harness import Sidecar, wait_for

pytestmark = pytest.mark.kube

PLUGINS = Path(__file__).resolve().parents[2] / "examples" / "plugins"


def render(*args: str) -> str:
    result = subprocess.run(
        [sys.executable, "-m", "luna_cli.main", "render", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_rendered_manifests_apply_and_serve(
    cluster: Cluster, operator: Any, cluster_sidecar: Callable[..., Sidecar], tmp_path: Path
) -> None:
    settings = tmp_path / "kettle.json"
    settings.write_text(json.dumps({"tickSeconds": 0.05}))
    inline = render(str(PLUGINS / "kettle.py"), "--settings", str(settings), "--namespace", cluster.namespace)
    cluster.apply(inline)
    status = cluster.wait_phase("kettle", "Ready", timeout=60)
    assert status["module"] == "kettle"

    from_config_map = render(
        str(PLUGINS / "route_digest.py"), "--code-from", "route-digest-code", "--order", "1"
    )
    cluster.apply(from_config_map)  # the ConfigMap and the LunaPlugin, in that order
    status = cluster.wait_phase("route-digest", "Ready", timeout=60)
    assert status["codeHash"] == cluster.get("lunaplugin", "route-digest")["spec"]["sha256"]  # type: ignore[index]
    assert cluster.wait_active(["kettle", "route_digest"], timeout=30)["kettle"]["settings"] == {
        "tickSeconds": 0.05
    }

    sidecar = cluster_sidecar("pod-render")
    wait_for(lambda: sidecar.get("/kettle/version").text == "kettle 1.0", timeout=30, what="the kettle route")
    assert sidecar.get("/digest").status == 200

    # the pin holds: other code in the ConfigMap is refused, the pinned version keeps serving
    cluster.kube.kubectl(
        "patch",
        "configmap",
        "route-digest-code",
        "-n",
        cluster.namespace,
        "--type=merge",
        "-p",
        json.dumps({"data": {"route_digest.py": "# changed\n"}}),
    )
    status = cluster.wait_phase("route-digest", "Invalid", timeout=60)
    assert "does not match spec.sha256" in status["message"] and "keeps serving" in status["message"]
