"""Figures of the real node: start-up, image build, memory, and `kubectl apply` -> route through a Service.

    .venv/bin/python bench/node_bench.py [--updates 20] [--replicas 1] [--state-dir DIR]

Needs root (the node). Without --state-dir it runs `luna-cluster up --node` in a
temporary directory, timing it, and `cluster down` at the end (timed too); the build cache is
whatever the user cache directory holds (a cold figure needs an empty XDG_CACHE_HOME and
GOCACHE). Then: `cluster image` (timed), RSS of every node and control-plane process, `helm
install --wait` of the chart, and the stand-in handlers service with the sidecar injected behind
a Service. The measured path: a LunaPlugin whose route ``/bench`` answers a new text is applied
``--updates`` times; each time the clock starts just before `kubectl apply` and stops when the
route answers the new text through the Service's ClusterIP (``serving``) and when every pod,
asked on its own address, answers it (``everywhere``); polled every 10 ms.

Then the rotation of a setting from a Secret (``spec.settingsFrom``), ``--rotations`` times: the
clock starts before the offered Secret is applied with a new value and stops when the route
``/rotated`` answers the new value's SHA-256 through the Service (the operator rewrites the
service's settings Secret, the kubelet the mounted file, the sidecar reloads the plugin).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.node.workload import CHART, RELEASE, handlers_service  # noqa: E402

CODE = (
    "from luna_plugins.base.plugins_meta.base_plugins import BaseBackgroundPlugin, pluginHTTPResponse\n\n"
    "class Bench(BaseBackgroundPlugin):\n"
    "    async def initialize(self):\n"
    "        self.addRoute('/bench', lambda request: pluginHTTPResponse(body={answer!r}))\n"
)
ROTATED = (
    "import hashlib\n"
    "from luna_plugins.base.plugins_meta.base_plugins import BaseBackgroundPlugin, pluginHTTPResponse\n\n"
    "class Rotated(BaseBackgroundPlugin):\n"
    "    async def initialize(self):\n"
    "        digest = hashlib.sha256(self.settings['token'].encode()).hexdigest()\n"
    "        self.addRoute('/rotated', lambda request: pluginHTTPResponse(body=digest))\n"
)
IMAGE = "luna-plugins:bench"
NAMESPACE = "node-bench"


def cluster(*args: str, state_dir: Path) -> float:
    """Run `luna-cluster ARGS`; returns its wall time."""
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "luna_cluster", *args, "--state-dir", str(state_dir)],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise SystemExit(f"cluster {' '.join(args)} failed:\n{result.stderr}")
    return time.monotonic() - started


class Kube:
    def __init__(self, state_dir: Path) -> None:
        self.env = {**os.environ, "KUBECONFIG": str(state_dir / "kubeconfig")}
        self.kubectl_binary = str(state_dir / "bin" / "kubectl")
        self.helm_binary = str(state_dir / "bin" / "helm")

    def kubectl(self, *args: str, input: str | None = None) -> str:
        result = subprocess.run(
            [self.kubectl_binary, *args],
            input=input,
            env=self.env,
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode != 0:
            raise SystemExit(f"kubectl {' '.join(args)} failed:\n{result.stderr}")
        return result.stdout

    def get(self, *what: str) -> Any:
        return json.loads(self.kubectl("get", *what, "-n", NAMESPACE, "-o", "json"))


def answer(url: str) -> str:
    try:
        with urllib.request.urlopen(url, timeout=2) as reply:
            return str(reply.read().decode())
    except (urllib.error.URLError, OSError, UnicodeDecodeError):
        return ""


def wait(condition: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.01)
    raise SystemExit(f"timed out waiting for {what}")


def rss_mib(state_dir: Path) -> dict[str, float]:
    """Resident memory of each process the cluster runs (pid files), in MiB."""
    sizes: dict[str, float] = {}
    for pid_file in sorted((state_dir / "run").glob("*.pid")):
        if pid_file.stem.endswith(".own"):  # dockerd writes a pid file of its own too
            continue
        try:
            pid = int(pid_file.read_text().split()[0])
            status = Path(f"/proc/{pid}/status").read_text()
        except (OSError, ValueError):
            continue
        for line in status.splitlines():
            if line.startswith("VmRSS:"):
                sizes[pid_file.stem] = int(line.split()[1]) / 1024
    return sizes


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(share * (len(ordered) - 1)))]


def measure_updates(kube: Kube, updates: int) -> dict[str, list[float]]:
    service = kube.get("service", "handlers")["spec"]["clusterIP"]
    through_service = f"http://{service}:8080/bench"
    timings: dict[str, list[float]] = {"serving": [], "everywhere": []}
    for round_ in range(updates + 1):
        text = f"round {round_}"
        plugin = {
            "apiVersion": "luna.dev/v1alpha1",
            "kind": "LunaPlugin",
            "metadata": {"name": "bench"},
            "spec": {"service": "handlers", "code": CODE.format(answer=text)},
        }
        pods = [pod["status"]["podIP"] for pod in kube.get("pods", "-l", "app=handlers")["items"]]
        started = time.monotonic()
        kube.kubectl("apply", "-n", NAMESPACE, "-f", "-", input=yaml.safe_dump(plugin))
        wait(lambda text=text: answer(through_service) == text, 60, f"{text} through the Service")
        serving = time.monotonic() - started
        wait(
            lambda text=text, pods=pods: all(answer(f"http://{ip}:8080/bench") == text for ip in pods),
            60,
            f"{text} on every pod",
        )
        everywhere = time.monotonic() - started
        if round_:  # the first apply creates the plugin: not an update
            timings["serving"].append(serving)
            timings["everywhere"].append(everywhere)
    return timings


def measure_rotations(kube: Kube, rotations: int) -> list[float]:
    """Seconds from applying a new Secret value to the plugin serving it, per rotation."""
    service = kube.get("service", "handlers")["spec"]["clusterIP"]
    url = f"http://{service}:8080/rotated"
    plugin = {
        "apiVersion": "luna.dev/v1alpha1",
        "kind": "LunaPlugin",
        "metadata": {"name": "rotated"},
        "spec": {
            "service": "handlers",
            "code": ROTATED,
            "settingsFrom": [{"setting": "token", "secretKeyRef": {"name": "bench-token", "key": "token"}}],
        },
    }
    timings = []
    for round_ in range(rotations + 1):
        value = f"token-{round_}-{time.monotonic_ns()}"
        secret = {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "bench-token", "labels": {"luna.dev/plugin-settings": "true"}},
            "stringData": {"token": value},
        }
        objects = [secret, plugin] if round_ == 0 else [secret]
        started = time.monotonic()
        kube.kubectl("apply", "-n", NAMESPACE, "-f", "-", input=yaml.safe_dump_all(objects))
        digest = hashlib.sha256(value.encode()).hexdigest()
        wait(lambda digest=digest: answer(url) == digest, 300, f"rotation {round_} through the Service")
        if round_:  # the first one creates the plugin: not a rotation
            timings.append(time.monotonic() - started)
    return timings


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--updates", type=int, default=20)
    parser.add_argument("--replicas", type=int, default=1)
    parser.add_argument("--rotations", type=int, default=5)
    parser.add_argument("--state-dir", type=Path, default=None, help="a running node cluster to use")
    options = parser.parse_args()
    figures: dict[str, Any] = {
        "cpu": platform.processor() or platform.machine(),
        "python": platform.python_version(),
    }
    with open("/proc/cpuinfo") as cpuinfo:
        figures["cpu"] = next(
            (line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name")), "?"
        )
    own = options.state_dir is None
    state_dir = options.state_dir or Path(tempfile.mkdtemp(prefix="luna-node-bench-"))
    try:
        if own:
            figures["up_seconds"] = cluster("up", "--node", state_dir=state_dir)
        figures["image_seconds"] = cluster("image", "--tag", IMAGE, state_dir=state_dir)
        figures["rss_mib"] = rss_mib(state_dir)
        kube = Kube(state_dir)
        repository, tag = IMAGE.split(":")
        started = time.monotonic()
        values = ["--set", f"image.repository={repository}", "--set", f"image.tag={tag}"]
        install = [kube.helm_binary, "upgrade", "--install", RELEASE, str(CHART), "-n", NAMESPACE]
        options_ = ["--create-namespace", "--set", "image.pullPolicy=Never", "--wait", "--timeout", "5m"]
        subprocess.run([*install, *values, *options_], env=kube.env, check=True, capture_output=True)
        figures["helm_install_seconds"] = time.monotonic() - started
        service = handlers_service(IMAGE, replicas=options.replicas)
        kube.kubectl("apply", "-n", NAMESPACE, "-f", "-", input=yaml.safe_dump_all(service))
        kube.kubectl("rollout", "status", "deployment/handlers", "-n", NAMESPACE, "--timeout=180s")
        timings = measure_updates(kube, options.updates)
        for name, values in timings.items():
            figures[f"update_{name}_p50_ms"] = statistics.median(values) * 1000
            figures[f"update_{name}_p95_ms"] = percentile(values, 0.95) * 1000
        rotations = measure_rotations(kube, options.rotations)
        figures["rotation_seconds"] = [round(value, 2) for value in rotations]
        figures["rotation_p50_s"] = statistics.median(rotations) if rotations else None
        figures["rotation_max_s"] = max(rotations) if rotations else None
        figures["updates"] = options.updates
        figures["replicas"] = options.replicas
    finally:
        if own:
            figures["down_seconds"] = cluster("down", state_dir=state_dir)
    print(json.dumps(figures, indent=2))
    results = ROOT / "bench" / "results"
    results.mkdir(exist_ok=True)
    (results / f"node-{time.strftime('%Y%m%d-%H%M%S')}.json").write_text(json.dumps(figures, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
