"""Rendering `charts/luna-plugins` with `helm template`, shared by the chart tests.

``render`` runs the ``kube`` fixture's helm (no API server is contacted); ``service_chart`` writes
a user's chart that has luna-plugins as a dependency and includes its sidecar named templates.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "luna-plugins"


def render(
    kube: Any, *args: str, namespace: str = "luna-system", chart: Path = CHART
) -> list[dict[str, Any]]:
    """The objects `helm template luna <chart>` renders into ``namespace`` (empty documents dropped)."""
    out = kube.helm("template", "luna", str(chart), "--namespace", namespace, *args).stdout
    return [doc for doc in yaml.safe_load_all(out) if doc]


def of_kind(objects: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    """The objects of ``kind``, in rendering order."""
    return [obj for obj in objects if obj["kind"] == kind]


def service_chart(tmp_path: Path) -> Path:
    """A user's chart with luna-plugins as a dependency, whose Deployment includes the sidecar.

    The chart is written to ``tmp_path/handlers``; its Deployment ``handlers`` has the pod
    annotations of ``luna-plugins.sidecarPodAnnotations`` and, as its second container, the
    ``luna-plugins.sidecarContainer`` for the service ``handlers``.
    """
    chart = tmp_path / "handlers"
    (chart / "templates").mkdir(parents=True)
    shutil.copytree(CHART, chart / "charts" / "luna-plugins")
    (chart / "Chart.yaml").write_text(
        "apiVersion: v2\nname: handlers\nversion: 0.0.1\n"
        "dependencies:\n  - name: luna-plugins\n    version: 0.1.0\n"
    )
    (chart / "values.yaml").write_text("luna-plugins:\n  operator:\n    replicas: 0\n")
    (chart / "templates" / "deployment.yaml").write_text(
        """\
apiVersion: apps/v1
kind: Deployment
metadata:
  name: handlers
spec:
  selector:
    matchLabels: {app: handlers}
  template:
    metadata:
      labels: {app: handlers}
      annotations:
        {{- include "luna-plugins.sidecarPodAnnotations" . | nindent 8 }}
    spec:
      serviceAccountName: luna-luna-plugins-sidecar
      securityContext:
        runAsNonRoot: true
        seccompProfile: {type: RuntimeDefault}
      containers:
        - name: handlers
          image: handlers:1.0
          securityContext:
            allowPrivilegeEscalation: false
            capabilities: {drop: [ALL]}
        {{- include "luna-plugins.sidecarContainer" (dict "context" $ "service" "handlers") | nindent 8 }}
      volumes:
        {{- include "luna-plugins.sidecarVolumes" . | nindent 8 }}
"""
    )
    return chart
