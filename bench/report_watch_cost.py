"""Why the operator follows the sidecar reports with a watch of its own, not through kopf: the CPU
either costs per report, at N simulated sidecars.

    .venv/bin/python bench/report_watch_cost.py [--pods 500] [--plugins 200] [--seconds 30]

On a local control plane (``cluster up``), with ``--plugins`` modules in the active list and
``--pods`` simulated sidecars (``sidecar_fleet.py``) reporting every 10 s, it runs one process at
a time and reads its CPU per second from ``/proc/PID/stat``:

- ``kopf-event``: kopf with one ``@kopf.on.event`` handler on LunaPluginRuntimes that does nothing;
- ``kopf-index``: kopf with one (async) ``@kopf.index`` keeping each report's plugins, no handler,
  its per-object workers kept alive between events (``queueing.idle_timeout``);
- ``plain-watch``: a LIST and a WATCH with kubernetes_asyncio that decodes every event and parses
  the report into the operator's ``ReportBook`` (what the operator's report watch does).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from operator_bench import (
    CLI,
    CLUSTER_CLI,
    HOST,
    Kubectl,
    free_port,
    install_crds,
    manifest,
    route_code,
)  # bench/: no package
from operator_scale import cpu_seconds, load_average

KOPF = """
import asyncio, logging, sys
import kopf

mode, namespace = sys.argv[1], sys.argv[2]
registry = kopf.OperatorRegistry()
if mode == "kopf-event":
    @kopf.on.event("luna.dev", "v1alpha1", "lunapluginruntimes", registry=registry)
    async def event(**_):
        return None
else:
    @kopf.index("luna.dev", "v1alpha1", "lunapluginruntimes", registry=registry)
    async def reports(body, **_):
        spec = body.get("spec") or {}
        plugins = {p.get("module"): (p.get("state"), p.get("codeHash")) for p in spec.get("plugins") or []}
        return {(body["metadata"]["namespace"], spec.get("service")): plugins}

@kopf.on.login(registry=registry)
def login(**kwargs):
    return kopf.login_with_kubeconfig(**kwargs)

@kopf.on.startup(registry=registry)
async def startup(settings, **_):
    settings.posting.enabled = False
    settings.queueing.idle_timeout = 60

logging.basicConfig(level=logging.WARNING)
asyncio.run(kopf.operator(registry=registry, namespaces=[namespace], standalone=True))
"""

PLAIN = """
import asyncio, sys
from luna_operator.report_feed import ReportFeed
from luna_operator.reports import ReportBook
from kubernetes_asyncio import client, config

async def main():
    await config.load_kube_config()
    async with client.ApiClient() as api:
        feed = ReportFeed(api, ReportBook(ttl=30), lambda change: None, namespaces=(sys.argv[2],))
        await feed.run()

asyncio.run(main())
"""


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--pods", type=int, default=500)
    parser.add_argument("--plugins", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=30.0, help="measured per process (30)")
    options = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="luna-watch-cost-"))
    state = workdir / "cluster"
    fleet = None
    try:
        subprocess.run(
            [CLUSTER_CLI, "up", "--state-dir", str(state)], capture_output=True, check=True, timeout=900
        )
        kubeconfig = str(state / "kubeconfig")
        kubectl = Kubectl(str(state / "bin" / "kubectl"), kubeconfig)
        install_crds(kubectl)
        namespace = "watch-cost"
        kubectl("create", "namespace", namespace)
        env = {**os.environ, "KUBECONFIG": kubeconfig}
        # the operator renders the plugins once, then stops: the fleet needs their active list
        bodies = [
            manifest(f"p-{i:03d}", namespace, route_code(f"/p{i}", str(i)), "svc")
            for i in range(options.plugins)
        ]
        kubectl.apply(*bodies)
        ports = ["--liveness", f"{HOST}:{free_port()}", "--metrics", f"{HOST}:{free_port()}"]
        operator = subprocess.Popen(
            [CLI, "operator", "--namespace", namespace, *ports],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 180
        while "luna-plugins-svc" not in kubectl.run("get", "cm", "-n", namespace, check=False).stdout:
            if time.monotonic() > deadline:
                raise SystemExit("the operator did not write the active list")
            time.sleep(1)
        time.sleep(5)
        operator.terminate()
        operator.wait(timeout=30)
        fleet_argv = [
            sys.executable,
            str(Path(__file__).with_name("sidecar_fleet.py")),
            "--kubeconfig",
            kubeconfig,
        ]
        fleet = subprocess.Popen(
            [*fleet_argv, "--namespace", namespace, "--services", "svc", "--pods", str(options.pods)],
            env=env,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert fleet.stdout is not None
        while '"ready"' not in fleet.stdout.readline():
            pass
        scripts = {"kopf-event": KOPF, "kopf-index": KOPF, "plain-watch": PLAIN}
        print(f"{options.pods} simulated sidecars, {options.plugins} plugins each, reports every 10 s:")
        for mode, script in scripts.items():
            path = workdir / f"{mode}.py"
            path.write_text(textwrap.dedent(script))
            process = subprocess.Popen([sys.executable, str(path), mode, namespace], env=env)
            time.sleep(8)
            before, started, load = cpu_seconds(process.pid), time.monotonic(), load_average()
            time.sleep(options.seconds)
            used = cpu_seconds(process.pid) - before
            print(
                f"  {mode:12} {100 * used / (time.monotonic() - started):5.1f} % of a core "
                f"(load {load:.1f} -> {load_average():.1f})",
                flush=True,
            )
            process.terminate()
            process.wait(timeout=30)
        return 0
    finally:
        if fleet is not None:
            fleet.terminate()
            fleet.wait(timeout=30)
        subprocess.run(
            [CLUSTER_CLI, "down", "--state-dir", str(state), "--purge"], capture_output=True, check=False
        )
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
