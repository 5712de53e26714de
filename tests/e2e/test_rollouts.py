"""Staged rollouts (spec.rollout) with the real operator and four cluster-mode sidecars: a good
version goes 25 % -> 50 % -> 100 % with no failed request, a failing one never runs beyond its
first step and is rolled back by itself, and a paused rollout survives an operator restart and is
promoted from the command line."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from tests.support.operator_harness import Cluster, plugin_manifest, route_code, start_operator
from tests.support.sidecar_harness import wait_for

pytestmark = pytest.mark.kube

PODS = [f"handlers-{i}" for i in range(4)]
FAILING = """
from luna_plugins.base.plugins_meta.base_plugins import BaseBackgroundPlugin

class Routes(BaseBackgroundPlugin):
    async def initialize(self):
        self.addRoute("/hello", self.hello)

    def hello(self, request):
        raise RuntimeError("v2 is broken")
"""
FAST = {"interval": "1s", "failureLimit": 2, "maxFailureRatio": 0.05}


class Traffic:
    """Requests to every sidecar's /hello, over and over, in a thread: who answered what."""

    def __init__(self, sidecars: dict[str, Any]) -> None:
        self.sidecars = dict(sidecars)  # the pods asked: those of the start
        self.answers: dict[str, dict[str, int]] = {pod: {} for pod in sidecars}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            for pod, sidecar in self.sidecars.items():
                try:
                    reply = sidecar.get("/hello", timeout=2)
                    seen = reply.text if reply.status == 200 else str(reply.status)
                except OSError as exc:
                    seen = type(exc).__name__
                counts = self.answers[pod]
                counts[seen] = counts.get(seen, 0) + 1
            self._stop.wait(0.02)

    def pods_that_answered(self, answer: str) -> set[str]:
        return {pod for pod, counts in self.answers.items() if counts.get(answer)}

    @contextmanager
    def running(self) -> Iterator[Traffic]:
        self._thread.start()
        try:
            yield self
        finally:
            self._stop.set()
            self._thread.join(timeout=10)


def rollout_of(cluster: Cluster, name: str) -> dict[str, Any]:
    return cluster.status(name).get("rollout") or {}


def cli(kube: Any, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "luna_cli.main", "rollout", *args],
        env={**kube.env, "KUBECONFIG": str(kube.kubeconfig)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def start(cluster: Cluster, cluster_sidecar: Any) -> dict[str, Any]:
    sidecars = {pod: cluster_sidecar(pod) for pod in PODS}
    cluster.apply(plugin_manifest("hello", cluster.namespace, route_code("/hello", "v1")))
    wait_for(
        lambda: all(s.get("/hello", timeout=2).text == "v1" for s in sidecars.values()),
        timeout=30,
        what="v1 on every sidecar",
    )
    wait_for(lambda: cluster.status("hello").get("loaded") == "4/4", timeout=30, what="status.loaded 4/4")
    return sidecars


def test_a_good_version_goes_step_by_step_to_every_pod(
    cluster: Cluster, operator: Any, cluster_sidecar: Any
) -> None:
    sidecars = start(cluster, cluster_sidecar)
    rollout = {"steps": [{"percent": 25, "pause": "2s"}, {"percent": 50, "pause": "2s"}, {"percent": 100}]}
    shares: list[int] = []
    with Traffic(sidecars).running() as traffic:
        cluster.apply(
            plugin_manifest(
                "hello", cluster.namespace, route_code("/hello", "v2"), rollout=rollout | {"analysis": FAST}
            )
        )

        def promoted() -> bool:
            found = rollout_of(cluster, "hello")
            if found.get("phase") == "Progressing" and found.get("percent") not in shares:
                shares.append(found["percent"])
            return found.get("phase") == "Promoted"

        wait_for(promoted, timeout=90, what="v2 to be promoted")
        wait_for(
            lambda: all(s.get("/hello", timeout=2).text == "v2" for s in sidecars.values()),
            timeout=30,
            what="v2 on every sidecar",
        )
    assert shares[:1] == [25] and set(shares) <= {25, 50, 100}, shares
    failed = {
        pod: {k: v for k, v in counts.items() if k not in ("v1", "v2")}
        for pod, counts in traffic.answers.items()
    }
    assert not any(failed.values()), failed  # no failed request on any pod during the rollout
    status = cluster.status("hello")
    rolled_out = next(c for c in status["conditions"] if c["type"] == "RolledOut")
    assert rolled_out["status"] == "True" and status["loaded"] == "4/4"
    assert [a["verdict"] for a in status["rollout"]["analyses"]][-1] == "Successful"
    events = cluster.kube.kubectl(
        "get",
        "events",
        "-n",
        cluster.namespace,
        "--field-selector",
        "involvedObject.name=hello",
        "-o",
        "json",
    ).stdout
    reasons = {e["reason"] for e in json.loads(events)["items"]}
    assert {"RolloutStep", "RolloutPromoted"} <= reasons
    # the canary's ConfigMap keeps no code once the rollout is over
    retired = wait_for(lambda: cluster.get("configmap", "lunacanary-hello"), what="the canary ConfigMap")
    wait_for(
        lambda: not (cluster.get("configmap", "lunacanary-hello") or {}).get("data"), what="it to be emptied"
    )
    assert retired["metadata"]["ownerReferences"][0]["name"] == "hello"


def test_a_failing_version_never_leaves_its_first_step_and_is_rolled_back(
    cluster: Cluster, operator: Any, cluster_sidecar: Any
) -> None:
    sidecars = start(cluster, cluster_sidecar)
    rollout = {"steps": [{"percent": 25, "pause": "30s"}, {"percent": 100}], "analysis": FAST}
    with Traffic(sidecars).running() as traffic:
        cluster.apply(plugin_manifest("hello", cluster.namespace, FAILING, rollout=rollout))
        wait_for(
            lambda: rollout_of(cluster, "hello").get("phase") == "RolledBack", timeout=60, what="the rollback"
        )
        wait_for(
            lambda: all(s.get("/hello", timeout=2).text == "v1" for s in sidecars.values()),
            timeout=30,
            what="v1 back on every sidecar",
        )
    broken = traffic.pods_that_answered("500")
    assert len(broken) == 1, traffic.answers  # 25 % of 4 pods, never more
    status = wait_for(
        lambda: (s := cluster.status("hello")).get("loaded") == "4/4" and s,
        timeout=30,
        what="every pod to report the version in service again",
    )
    assert status["rollout"]["failures"] == 2 and status["rollout"]["analyses"][-1]["verdict"] == "Failed"
    assert "rolled back" in status["message"]
    rolled_out = next(c for c in status["conditions"] if c["type"] == "RolledOut")
    assert (rolled_out["status"], rolled_out["reason"]) == ("False", "RolledBack")
    printed = cli(cluster.kube, "status", "hello", "-n", cluster.namespace)
    assert printed.returncode == 0 and "RolledBack" in printed.stdout and "Failed" in printed.stdout, printed
    # not retried by itself; promote does not apply to a rolled-back rollout
    refused = cli(cluster.kube, "promote", "hello", "-n", cluster.namespace)
    assert refused.returncode == 1 and "does not apply" in refused.stderr, refused


def test_a_paused_rollout_survives_an_operator_restart_and_is_promoted_by_the_cli(
    cluster: Cluster, kube: Any, cluster_sidecar: Any, tmp_path: Path
) -> None:
    operator = start_operator(kube, cluster.namespace, tmp_path, "--report-ttl", "6")
    try:
        sidecars = start(cluster, cluster_sidecar)
        rollout = {"steps": [{"percent": 50, "pause": "manual"}, {"percent": 100}], "analysis": FAST}
        with Traffic(sidecars).running():
            cluster.apply(
                plugin_manifest("hello", cluster.namespace, route_code("/hello", "v2"), rollout=rollout)
            )
            wait_for(
                lambda: rollout_of(cluster, "hello").get("phase") == "Paused", timeout=60, what="the pause"
            )
            canary = set(rollout_of(cluster, "hello")["canaryPods"])
            assert len(canary) == 2
            wait_for(
                lambda: {p for p, s in sidecars.items() if s.get("/hello", timeout=2).text == "v2"} == canary,
                timeout=30,
                what="v2 on the canary pods only",
            )
            assert operator.stop() == 0
            operator = start_operator(kube, cluster.namespace, tmp_path, "--report-ttl", "6")
            # the new operator resumes from the status: still paused, the same pods
            wait_for(lambda: cluster.status("hello").get("loaded") == "4/4", timeout=30, what="the reports")
            assert rollout_of(cluster, "hello")["phase"] == "Paused"
            assert set(rollout_of(cluster, "hello")["canaryPods"]) == canary
            promoted = cli(kube, "promote", "hello", "-n", cluster.namespace)
            assert promoted.returncode == 0, promoted
            wait_for(
                lambda: rollout_of(cluster, "hello").get("phase") == "Promoted", timeout=60, what="promotion"
            )
            wait_for(
                lambda: all(s.get("/hello", timeout=2).text == "v2" for s in sidecars.values()),
                timeout=30,
                what="v2 everywhere",
            )
    finally:
        kube.kubectl("delete", "lunaplugins", "--all", "-n", cluster.namespace, "--timeout=60s", check=False)
        operator.stop()


def test_pods_that_start_mid_rollout_get_the_version_their_rank_gives_and_none_flips(
    cluster: Cluster, operator: Any, cluster_sidecar: Any
) -> None:
    sidecars = start(cluster, cluster_sidecar)
    rollout = {"steps": [{"percent": 50, "pause": "manual"}, {"percent": 100}], "analysis": FAST}
    with Traffic(sidecars).running():
        cluster.apply(
            plugin_manifest("hello", cluster.namespace, route_code("/hello", "v2"), rollout=rollout)
        )
        wait_for(lambda: rollout_of(cluster, "hello").get("phase") == "Paused", timeout=60, what="the pause")
        before = set(rollout_of(cluster, "hello")["canaryPods"])
        assert len(before) == 2
        # two pods start: 6 pods, 3 run the canary; the two that ran it keep it
        for pod in ("handlers-4", "handlers-5"):
            sidecars[pod] = cluster_sidecar(pod)
        wait_for(
            lambda: len(rollout_of(cluster, "hello").get("canaryPods") or []) == 3,
            timeout=60,
            what="the canary on 3 of 6 pods",
        )
        after = set(rollout_of(cluster, "hello")["canaryPods"])
        assert before < after, (before, after)

        def each_pod_serves_its_version() -> bool:
            return all(
                s.get("/hello", timeout=2).text == ("v2" if pod in after else "v1")
                for pod, s in sidecars.items()
            )

        wait_for(each_pod_serves_its_version, timeout=30, what="every pod on the version the status names")
        wait_for(lambda: cluster.status("hello").get("loaded") == "6/6", timeout=30, what="status.loaded 6/6")
