"""Running the real operator process against the test cluster, and reading what it wrote."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import textwrap
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.support.sidecar_harness import HOST, free_port, http, sidecar_command, wait_for

ROOT = Path(__file__).resolve().parents[2]
CRD = ROOT / "crds" / "lunaplugins.yaml"

ROUTE_PLUGIN = """
from luna_plugins.base.plugins_meta.base_plugins import BaseBackgroundPlugin, pluginHTTPResponse

class Routes(BaseBackgroundPlugin):
    async def initialize(self):
        self.addRoute({path!r}, lambda request: pluginHTTPResponse(body={answer!r}))
"""


def route_code(path: str = "/hello", answer: str = "hello") -> str:
    return textwrap.dedent(ROUTE_PLUGIN).format(path=path, answer=answer).lstrip()


def pod_manifest(
    name: str,
    namespace: str,
    annotations: dict[str, str],
    *containers: str,
    labels: dict[str, str] | None = None,
) -> str:
    """A Pod (JSON) with ``containers`` (default one named ``app``), each image ``<name>:1``."""
    return json.dumps(
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": name,
                "namespace": namespace,
                "annotations": annotations,
                "labels": labels or {},
            },
            "spec": {"containers": [{"name": c, "image": f"{c}:1"} for c in containers or ("app",)]},
        }
    )


def plugin_manifest(name: str, namespace: str, code: str | None = None, **spec: Any) -> str:
    body: dict[str, Any] = {
        "apiVersion": "luna.dev/v1alpha1",
        "kind": "LunaPlugin",
        "metadata": {"name": name, "namespace": namespace},
        "spec": ({"code": code} if code is not None else {}) | spec,
    }
    return json.dumps(body)


@dataclass
class Operator:
    process: subprocess.Popen[bytes]
    log_path: Path
    liveness: str
    metrics_url: str

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> int:
        if self.process.poll() is None:
            self.process.send_signal(sig)
        return self.process.wait(timeout=timeout)


def start_operator(kube: Any, namespace: str, workdir: Path, *args: str) -> Operator:
    """Start `luna-plugins operator` for ``namespace`` and wait for its liveness endpoint."""
    port, metrics_port = free_port(), free_port()
    log_path = workdir / f"operator-{time.monotonic_ns()}.log"
    env = {k: v for k, v in kube.env.items() if not k.startswith("LUNA_")}
    with log_path.open("wb") as out:
        process = subprocess.Popen(
            [
                *sidecar_command(),
                "operator",
                "--namespace",
                namespace,
                "--liveness",
                f"{HOST}:{port}",
                "--metrics",
                f"{HOST}:{metrics_port}",
                *args,
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=workdir,
        )
    operator = Operator(
        process, log_path, f"http://{HOST}:{port}/healthz", f"http://{HOST}:{metrics_port}/metrics"
    )

    def alive() -> bool:
        if process.poll() is not None:
            raise AssertionError(f"operator exited with {process.returncode}:\n{operator.log()[-3000:]}")
        try:
            return http("GET", operator.liveness, timeout=1).status == 200
        except OSError:
            return False

    wait_for(alive, timeout=30, what="operator liveness")
    return operator


def start_webhook_operator(
    kube: Any, namespace: str, workdir: Path, *args: str
) -> tuple[Operator, str, Path]:
    """Start the operator serving its admission webhooks on 127.0.0.1 without registering them
    (``--webhook-managed false``: a configuration made elsewhere points at it); returns it, the
    webhook's base URL (``https://127.0.0.1:PORT``) and its certificate, once written."""
    port, certs = free_port(), workdir / "certs"
    running = start_operator(
        kube,
        namespace,
        workdir,
        "--webhook",
        "--webhook-managed",
        "false",
        "--webhook-port",
        str(port),
        "--webhook-certs-dir",
        str(certs),
        *args,
    )
    cert = certs / "tls.crt"
    wait_for(cert.exists, what="the operator's webhook certificate")
    return running, f"https://{HOST}:{port}", cert


class Cluster:
    """kubectl helpers bound to one namespace."""

    def __init__(self, kube: Any, namespace: str) -> None:
        self.kube = kube
        self.namespace = namespace

    def apply(self, manifest: str, *extra: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        result: subprocess.CompletedProcess[str] = self.kube.kubectl(
            "apply", "-n", self.namespace, *extra, "-f", "-", input=manifest, check=check
        )
        return result

    def get(self, kind: str, name: str) -> dict[str, Any] | None:
        result = self.kube.kubectl("get", kind, name, "-n", self.namespace, "-o", "json", check=False)
        if result.returncode != 0:
            if "NotFound" in result.stderr:
                return None
            raise AssertionError(result.stderr)
        return json.loads(result.stdout)  # type: ignore[no-any-return]

    def items(self, kind: str, selector: str | None = None) -> list[dict[str, Any]]:
        args = ["get", kind, "-n", self.namespace, "-o", "json"]
        if selector:
            args += ["-l", selector]
        return json.loads(self.kube.kubectl(*args).stdout)["items"]  # type: ignore[no-any-return]

    def status(self, name: str) -> dict[str, Any]:
        return (self.get("lunaplugin", name) or {}).get("status") or {}

    def wait_phase(self, name: str, phase: str, timeout: float = 20) -> dict[str, Any]:
        return wait_for(  # type: ignore[no-any-return]
            lambda: (s := self.status(name)).get("phase") == phase and s,
            timeout=timeout,
            what=f"{name} to be {phase} (status now {self.status(name)})",
        )

    def active(self, service: str = "handlers") -> tuple[list[str], dict[str, Any]]:
        config_map = self.get("configmap", f"luna-plugins-{service}")
        if config_map is None:
            return [], {}
        data = config_map["data"]
        key = f"LUNA_{service.upper().replace('-', '_')}_ACTIVE_PLUGINS"
        return json.loads(data[key]), json.loads(data["plugins.json"])

    def wait_active(
        self, modules: list[str], service: str = "handlers", timeout: float = 20
    ) -> dict[str, Any]:
        found = wait_for(
            lambda: (current := self.active(service))[0] == modules and (current[1],),
            timeout=timeout,
            what=f"active list {modules} (now {self.active(service)[0]})",
        )
        return found[0]  # type: ignore[no-any-return]


def kill_hard(process: subprocess.Popen[bytes]) -> None:
    os.kill(process.pid, signal.SIGKILL)
    process.wait(timeout=10)
