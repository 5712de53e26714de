"""`make demo-node`: the demo as real pods, from the chart, on a local node (needs root).

1. ``luna-cluster up --node`` (the test harness; the control plane and a node: kubelet,
   containerd, CNI bridge, kube-proxy, CoreDNS; the first run builds them from Go and caches them);
2. ``luna-cluster image``: the project's image, imported into the node;
3. ``helm install`` of ``charts/luna-plugins`` with ``demo.enabled=true`` into ``luna-demo``: the
   operator, the stand-in handlers service with the sidecar beside it behind a Service, and the
   example plugins as LunaPlugins;
4. a load generator against the Service (about 10 requests a second).

It prints what to curl (the Service's ClusterIP, reachable from this machine) and which kubectl
commands to try, and a status line every 10 s. Ctrl-C (or SIGTERM, or ``--duration``) stops the
load, uninstalls the release and runs ``luna-cluster down`` (``--keep-cluster`` leaves the
cluster running).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from demo import STATUS_EVERY, DemoError, LoadGenerator, cluster_command, run_until_interrupted

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
CHART = ROOT / "charts" / "luna-plugins"
NAMESPACE = "luna-demo"
RELEASE = "luna"
IMAGE_REPOSITORY, IMAGE_TAG = "luna-plugins", "demo"


class NodeDemo:
    def __init__(self, state_dir: Path, keep_cluster: bool) -> None:
        self.state_dir = state_dir
        self.keep_cluster = keep_cluster
        self.env = {
            **os.environ,
            "KUBECONFIG": str(state_dir / "kubeconfig"),
            "PATH": f"{state_dir / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}",
        }
        self.load: LoadGenerator | None = None
        self.started_cluster = False

    def cluster(self, *args: str) -> None:
        command = [*cluster_command(), *args, "--state-dir", str(self.state_dir)]
        if subprocess.run(command, check=False).returncode != 0:
            raise DemoError(f"`luna-cluster {' '.join(args)}` failed (see above)")

    def tool(self, *argv: str, check: bool = True) -> str:
        result = subprocess.run(argv, env=self.env, capture_output=True, text=True, check=False)
        if check and result.returncode != 0:
            raise DemoError(f"`{' '.join(argv)}` failed: {result.stderr.strip()}")
        return result.stdout

    def kubectl(self, *args: str, check: bool = True) -> str:
        return self.tool(str(self.state_dir / "bin" / "kubectl"), *args, check=check)

    def get(self, *what: str) -> Any:
        return json.loads(self.kubectl("get", *what, "-n", NAMESPACE, "-o", "json"))

    def up(self) -> None:
        print("== 1. the cluster and its node (luna-cluster up --node)", flush=True)
        self.started_cluster = True
        self.cluster("up", "--node")
        print("== 2. the image (luna-cluster image)", flush=True)
        self.cluster("image", "--tag", f"{IMAGE_REPOSITORY}:{IMAGE_TAG}")
        print(f"== 3. helm install {RELEASE} charts/luna-plugins --set demo.enabled=true", flush=True)
        self.tool(
            str(self.state_dir / "bin" / "helm"),
            *("upgrade", "--install", RELEASE, str(CHART), "--namespace", NAMESPACE, "--create-namespace"),
            *("--set", f"image.repository={IMAGE_REPOSITORY}", "--set", f"image.tag={IMAGE_TAG}"),
            *("--set", "image.pullPolicy=Never", "--set", "demo.enabled=true", "--wait", "--timeout", "5m"),
        )
        deadline = time.monotonic() + 120
        while not self.plugins_ready():
            if time.monotonic() > deadline:
                raise DemoError(f"the demo's LunaPlugins did not become Ready: {self.plugin_line()}")
            time.sleep(0.5)

    def plugins(self) -> list[dict[str, Any]]:
        return list(self.get("lunaplugins")["items"])

    def plugins_ready(self) -> bool:
        plugins = self.plugins()
        return bool(plugins) and all(
            item.get("status", {}).get("phase") == "Ready" and item["status"].get("loaded") == "1/1"
            for item in plugins
        )

    def plugin_line(self) -> str:
        return ", ".join(
            f"{item['spec'].get('module', item['metadata']['name'])} "
            f"{item.get('status', {}).get('phase', '?')} {item.get('status', {}).get('loaded', '-')}"
            for item in self.plugins()
        )

    def service_ip(self) -> str:
        return str(self.get("service", f"{RELEASE}-luna-plugins-demo")["spec"]["clusterIP"])

    def start_load(self) -> None:
        self.load = LoadGenerator(f"http://{self.service_ip()}:5090")
        self.load.start()

    def print_instructions(self) -> None:
        ip = self.service_ip()
        kubectl = f"kubectl -n {NAMESPACE}"
        kettle = f"{RELEASE}-luna-plugins-kettle"
        print(
            f"""
The demo runs as pods on node luna-node. From this machine:

  curl http://{ip}:8080/kettle               # a plugin route, through the demo's Service
  curl http://{ip}:8080/kettle/version
  curl http://{ip}:8080/digest               # route_digest's tally of the service's requests
  curl http://{ip}:5090/6/handlers           # the stand-in handlers service
  curl -s http://{ip}:9100/metrics | grep luna_requests_total

  export KUBECONFIG={self.state_dir / "kubeconfig"} PATH={self.state_dir / "bin"}:$PATH
  kubectl get nodes -o wide
  {kubectl} get pods -o wide                 # the operator, and the demo pod: service + sidecar
  {kubectl} get lp                           # PHASE Ready, LOADED 1/1
  {kubectl} get lpr                          # each sidecar's report
  {kubectl} logs deploy/{RELEASE}-luna-plugins-demo -c luna-sidecar
  {kubectl} scale deploy/{RELEASE}-luna-plugins-demo --replicas=2   # then: get lp shows 2/2
  sed 's/name: kettle$/name: {kettle}/' examples/lunaplugins/kettle-v2.yaml | {kubectl} apply -f -
      # then /kettle/version answers "kettle 2.0"
  {kubectl} delete lp {kettle}               # its routes go away

Ctrl-C stops the demo: helm uninstall, then luna-cluster down.""",
            flush=True,
        )

    def serve(self, duration: float) -> None:
        started = time.monotonic()
        while not duration or time.monotonic() - started < duration:
            time.sleep(
                min(STATUS_EVERY, duration - (time.monotonic() - started)) if duration else STATUS_EVERY
            )
            pods = self.get("pods", "-l", "app.kubernetes.io/component=demo")["items"]
            ready = sum(
                all(status.get("ready") for status in pod["status"].get("containerStatuses", []))
                for pod in pods
            )
            load = self.load.counts if self.load else {}
            print(
                f"[{time.strftime('%H:%M:%S')}] plugins: {self.plugin_line()} | demo pods ready: "
                f"{ready}/{len(pods)} | requests: {dict(load)}",
                flush=True,
            )

    def teardown(self) -> bool:
        if self.load:
            self.load.stop()
        if not self.started_cluster:
            return True
        ok = True
        if (self.state_dir / "kubeconfig").exists():
            print("helm uninstall ...", flush=True)
            helm = str(self.state_dir / "bin" / "helm")
            result = subprocess.run(
                [helm, "uninstall", RELEASE, "--namespace", NAMESPACE, "--wait", "--timeout", "2m"],
                env=self.env,
                capture_output=True,
                text=True,
                check=False,
            )
            if result.returncode != 0 and "not found" not in result.stderr:
                print(f"helm uninstall failed: {result.stderr.strip()}", flush=True)
                ok = False
        if not self.keep_cluster:
            try:
                self.cluster("down")
            except DemoError as exc:
                print(exc, flush=True)
                ok = False
        return ok


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--duration", type=float, default=0, help="stop this many seconds after start (0: Ctrl-C)"
    )
    parser.add_argument(
        "--state-dir", default=str(ROOT / ".luna" / "demo-node"), help="the cluster's state directory"
    )
    parser.add_argument("--keep-cluster", action="store_true", help="leave the cluster running at the end")
    options = parser.parse_args()
    demo = NodeDemo(Path(options.state_dir).resolve(), options.keep_cluster)

    def steps() -> None:
        demo.up()
        demo.start_load()
        demo.print_instructions()
        demo.serve(options.duration)

    return run_until_interrupted("demo-node", steps, demo.teardown)


if __name__ == "__main__":
    sys.exit(main())
