"""Rendering `charts/luna-plugins` with `helm template`, shared by the chart tests.

``render`` runs the ``kube`` fixture's helm (no API server is contacted); ``service_chart`` writes
a user's chart that has luna-plugins as a dependency and includes its sidecar named templates.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from luna_cluster import tools
from tests.support.sidecar_harness import wait_for

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "luna-plugins"
#: `helm install` arguments on a control plane without a kubelet (no pod ever runs): no hook Job
#: could finish, and the webhook Service has no endpoint, so LunaPlugins applied by the test are
#: let through unchecked instead of refused (the node suite installs the chart as users do)
NO_KUBELET = ("--no-hooks", "--set", "webhook.failurePolicy=Ignore")


def render(
    kube: Any, *args: str, namespace: str = "luna-system", chart: Path = CHART
) -> list[dict[str, Any]]:
    """The objects `helm template luna <chart>` renders into ``namespace`` (empty documents dropped)."""
    out = kube.helm("template", "luna", str(chart), "--namespace", namespace, *args).stdout
    return [doc for doc in yaml.safe_load_all(out) if doc]


class ModuleUnavailableError(RuntimeError):
    """The Go module proxy did not hand out the module (or the Go toolchain is missing)."""


def go_module(module: str) -> dict[str, Any]:
    """``go mod download -json MODULE@VERSION``: the module's ``Dir`` and ``Sum`` (checked against
    the checksum database by go); raises :class:`ModuleUnavailableError` saying why not."""
    try:
        download = subprocess.run(
            [tools.go_binary(), "mod", "download", "-json", module],
            env=tools.build_env(),
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
    except (tools.BuildError, subprocess.TimeoutExpired) as exc:
        raise ModuleUnavailableError(f"cannot fetch {module}: {exc}") from None
    info: dict[str, Any] = json.loads(download.stdout or "{}")
    if download.returncode != 0 or "Dir" not in info:
        raise ModuleUnavailableError(f"cannot fetch {module}: {info or download.stderr}")
    return info


def install_crds(kube: Any, files: Mapping[str, Path]) -> None:
    """Apply CRD files (CRD name -> file) and wait until each is Established. Server-side: large
    CRDs do not fit the last-applied annotation of a client-side apply."""
    for path in files.values():
        kube.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(path))
    for name in files:
        # `kubectl wait` fails at once on a CRD that has no status yet: poll the condition instead
        wait_for(
            lambda name=name: (
                kube.kubectl(
                    "get",
                    f"crd/{name}",
                    "-o",
                    'jsonpath={.status.conditions[?(@.type=="Established")].status}',
                    check=False,
                ).stdout.strip()
                == "True"
            ),
            timeout=60,
            what=f"CRD {name} to be Established",
        )


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
        {{- include "luna-plugins.sidecarVolumes" (dict "context" $ "service" "handlers") | nindent 8 }}
"""
    )
    return chart


def fill_ca_bundles(kube: Any, release: str, bundle: str, *, op: str = "add") -> None:
    """Put ``bundle`` (base64) into every webhook of the release's two webhook configurations, as
    the operator's own CA and cert-manager's CA injector do (``op``: ``add`` or ``replace``)."""
    for kind, name in (
        ("validatingwebhookconfiguration", f"{release}-luna-plugins"),
        ("mutatingwebhookconfiguration", f"{release}-luna-plugins-inject"),
    ):
        webhooks = json.loads(kube.kubectl("get", kind, name, "-o", "json").stdout)["webhooks"]
        fill = [
            {"op": op, "path": f"/webhooks/{index}/clientConfig/caBundle", "value": bundle}
            for index in range(len(webhooks))
        ]
        kube.kubectl("patch", kind, name, "--type=json", "-p", json.dumps(fill))


UNITS = {"Ki": 1 << 10, "Mi": 1 << 20, "Gi": 1 << 30, "Ti": 1 << 40, "k": 10**3, "M": 10**6, "G": 10**9}


def quantity(text: str) -> float:
    """A Kubernetes quantity ("512Mi", "2G", "100") as a number."""
    for unit, factor in sorted(UNITS.items(), key=lambda item: -len(item[0])):
        if text.endswith(unit):
            return float(text[: -len(unit)]) * factor
    return float(text)


def sidecars(objects: list[dict[str, Any]]) -> dict[str, tuple[dict[str, Any], list[dict[str, Any]]]]:
    """The chart's sidecars and their volumes: the demo Deployment's and the injection template's."""
    found = {}
    for deployment in of_kind(objects, "Deployment"):
        pod = deployment["spec"]["template"]["spec"]
        for container in pod["containers"]:
            if container["name"] == "luna-sidecar":
                found["demo"] = (container, pod["volumes"])
    for config_map in of_kind(objects, "ConfigMap"):
        if config_map["metadata"]["name"].endswith("-inject"):
            template = yaml.safe_load(config_map["data"]["sidecar.yaml"])
            found["inject"] = (template["container"], template["volumes"])
    assert set(found) == {"demo", "inject"}, found.keys()
    return found


def env_of(container: dict[str, Any]) -> dict[str, Any]:
    """A container's environment as a mapping of names to values."""
    return {item["name"]: item.get("value") for item in container["env"]}
