"""Staged rollouts: how fast a failing canary is rolled back, and on how many pods it ever ran.

    .venv/bin/python bench/rollout_bench.py [--kubeconfig PATH] [--runs 10] [--pods 4]
        [--interval 5s] [--failure-limit 1] [--heartbeat 10]

Starts a local control plane (unless --kubeconfig), the operator and ``--pods`` cluster-mode
sidecars (service ``handlers``, reporting every ``--heartbeat`` seconds: the sidecar's default is
10), all on loopback, and applies a route plugin v1. Each run applies a new version whose route
raises, with ``spec.rollout`` (25 % then 100 %, a long pause, ``--interval``, ``--failure-limit``),
while a thread asks every sidecar's route every 20 ms. Measured per run, with ``time.monotonic()``:
from the first 500 any pod answered to the moment no pod answers 500 any more (the canary rolled
back on every canary pod), and the pods that ever answered 500. Then v1 is applied again and the
next run starts once every pod serves it. Prints p50/p95 over the runs.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from apply_to_serve import start_sidecar
from operator_bench import (
    BenchError,
    Processes,
    control_plane,
    install_crds,
    percentile,
    route_code,
    start_operator,
)

NAMESPACE = "rollout-bench"
FAILING = (
    "from luna_plugins.base.plugins_meta.base_plugins import BaseBackgroundPlugin\n\n"
    "class Routes(BaseBackgroundPlugin):\n"
    "    async def initialize(self):\n"
    '        self.addRoute("/bench", self.answer)\n\n'
    "    def answer(self, request):\n"
    '        raise RuntimeError("broken version {run}")\n'
)


def answer(port: int) -> str:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/bench", timeout=2) as response:
            return response.read().decode()
    except urllib.error.HTTPError as exc:
        return str(exc.code)
    except OSError as exc:
        return type(exc).__name__


class Prober:
    """Asks every sidecar's route every 20 ms in a thread; keeps the last answer of each pod and
    the time of the first 500 and the last moment any pod answered 500."""

    def __init__(self, ports: dict[str, int]) -> None:
        self.ports = ports
        self.last: dict[str, str] = {}
        self.first_500: float | None = None
        self.last_500: float | None = None
        self.broken_pods: set[str] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def reset(self) -> None:
        self.first_500 = self.last_500 = None
        self.broken_pods = set()

    def _run(self) -> None:
        while not self._stop.is_set():
            for pod, port in self.ports.items():
                seen = answer(port)
                now = time.monotonic()
                self.last[pod] = seen
                if seen == "500":
                    self.first_500 = self.first_500 or now
                    self.last_500 = now
                    self.broken_pods.add(pod)
            self._stop.wait(0.02)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)


def wait(condition: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.05)
    raise BenchError(f"timed out after {timeout:g} s waiting for {what}")


def manifest(code: str, rollout: dict[str, Any] | None) -> dict[str, Any]:
    spec: dict[str, Any] = {"service": "handlers", "code": code}
    if rollout is not None:
        spec["rollout"] = rollout
    return {
        "apiVersion": "luna.dev/v1alpha1",
        "kind": "LunaPlugin",
        "metadata": {"name": "bench", "namespace": NAMESPACE},
        "spec": spec,
    }


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--kubeconfig")
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--pods", type=int, default=4)
    parser.add_argument("--interval", default="5s")
    parser.add_argument("--failure-limit", type=int, default=1)
    parser.add_argument("--heartbeat", type=float, default=10.0)
    args = parser.parse_args()
    processes = Processes()
    with tempfile.TemporaryDirectory(prefix="luna-rollout-bench-") as tmp:
        workdir = Path(tmp)
        try:
            with control_plane(args.kubeconfig, workdir) as (kubeconfig, kubectl, _ours):
                install_crds(kubectl)
                kubectl.run("create", "namespace", NAMESPACE, check=False)
                start_operator(
                    processes, kubeconfig, NAMESPACE, workdir / "operator.log", "--report-ttl", "30"
                )
                ports = {}
                for index in range(args.pods):
                    pod = f"handlers-{index}"
                    sidecar = start_sidecar(
                        processes,
                        kubeconfig,
                        NAMESPACE,
                        pod,
                        workdir,
                        "--heartbeat-interval",
                        str(args.heartbeat),
                    )
                    ports[pod] = sidecar.port
                v1 = route_code("/bench", "v1")
                kubectl.apply(manifest(v1, None))
                wait(lambda: all(answer(p) == "v1" for p in ports.values()), 60, "v1 on every sidecar")
                prober = Prober(ports)
                rollout = {
                    "steps": [{"percent": 25, "pause": "1h"}, {"percent": 100}],
                    "analysis": {"interval": args.interval, "failureLimit": args.failure_limit},
                }
                seconds: list[float] = []
                pods_ever: list[int] = []
                try:
                    for run in range(args.runs):
                        prober.reset()
                        kubectl.apply(manifest(FAILING.format(run=run), rollout))
                        wait(lambda: prober.first_500 is not None, 120, "the canary's first failure")
                        wait(
                            lambda: (
                                all(prober.last.get(p) == "v1" for p in ports)
                                and prober.last_500 is not None
                                and time.monotonic() - prober.last_500 > 1.0
                            ),
                            180,
                            "the rollback on every pod",
                        )
                        assert prober.first_500 is not None and prober.last_500 is not None
                        seconds.append(prober.last_500 - prober.first_500)
                        pods_ever.append(len(prober.broken_pods))
                        status = json.loads(
                            kubectl("get", "lunaplugin", "bench", "-n", NAMESPACE, "-o", "json")
                        )
                        phase = status.get("status", {}).get("rollout", {}).get("phase")
                        print(
                            f"run {run + 1}: rolled back {seconds[-1]:.2f} s after the first failure, "
                            f"on {pods_ever[-1]} of {args.pods} pods, phase {phase}",
                            flush=True,
                        )
                        kubectl.apply(manifest(v1, rollout))
                        wait(lambda: all(answer(p) == "v1" for p in ports.values()), 60, "v1 again")
                finally:
                    prober.stop()
                print(
                    f"\n{args.runs} runs, {args.pods} pods, interval {args.interval}, failureLimit "
                    f"{args.failure_limit}, heartbeat {args.heartbeat:g} s:\n"
                    f"  first failure -> rolled back on every pod: p50 {percentile(seconds, 0.5):.2f} s, "
                    f"p95 {percentile(seconds, 0.95):.2f} s, max {max(seconds):.2f} s "
                    f"(mean {statistics.mean(seconds):.2f} s)\n"
                    f"  pods that ever ran the failing version: max {max(pods_ever)} of {args.pods} "
                    f"(first step: 25 %)"
                )
        except BenchError as exc:
            print(f"rollout_bench: {exc}", file=sys.stderr)
            return 1
        finally:
            processes.stop_all()
    return 0


if __name__ == "__main__":
    sys.exit(main())
