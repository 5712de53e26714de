"""``cluster down`` leaves the machine as it found it; ``up --node`` reuses a running node.

This module takes the session's node down and brings it back, so it holds no pods of other
modules (module-scoped fixtures of other modules are gone when it runs). Every test that stops
the node starts it again in a ``finally``: a failure here is reported once, not by every test
after it.
"""

from __future__ import annotations

import contextlib
import os
import signal

import pytest
import yaml

from tests.node.conftest import NodeCluster, run_cluster
from tests.node.pods import python_pod, run_pod
from tests.support.host import snapshot
from tests.support.sidecar_harness import wait_for

pytestmark = pytest.mark.own_node("it stops and starts our own node")


def test_a_second_up_reuses_the_running_node(node_cluster: NodeCluster) -> None:
    assert node_cluster.state_dir is not None
    again = node_cluster.cluster_command("up", "--node")
    assert "cluster with its node already running" in again.stderr, again.stderr


def test_down_removes_everything_the_node_made_and_up_brings_it_back(
    node_cluster: NodeCluster, node_namespace: str
) -> None:
    assert node_cluster.state_dir is not None and node_cluster.host_before is not None
    kube = node_cluster.kube
    # a pod running while the node goes down: its processes, mounts and network must go too
    pod = python_pod("running", node_cluster.image, "import time; time.sleep(3600)")
    kube.kubectl("apply", "-n", node_namespace, "-f", "-", input=yaml.safe_dump(pod))
    kube.kubectl("wait", "-n", node_namespace, "--for=condition=Ready", "pod/running", "--timeout=120s")

    try:
        down = node_cluster.cluster_command("down")
        assert "could not" not in down.stderr, down.stderr
        after = snapshot()
    finally:
        # whatever failed above, the modules after this one get the session's node back
        up = node_cluster.cluster_command("up", "--node")
    assert node_cluster.host_before.differences(after) == {}, down.stderr
    assert "with node luna-node" in up.stderr, up.stderr
    # the image store survived: pods of the image start without importing it again
    namespace = "lifecycle-check"
    kube.kubectl("create", "namespace", namespace)
    log = run_pod(kube, namespace, python_pod("after", node_cluster.image, "print('back')"))
    assert log.strip() == "back"


def test_a_node_whose_processes_were_killed_is_cleaned_up_by_the_next_up_elsewhere(
    node_cluster: NodeCluster, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """As when a session ends without `down` (its processes killed) and a fresh checkout runs the
    tests: the next `up --node`, from another state directory, removes what the dead node left."""
    assert node_cluster.state_dir is not None and node_cluster.host_before is not None
    from luna_cluster.node import _processes_of

    kube = node_cluster.kube
    pod = python_pod("left-running", node_cluster.image, "import time; time.sleep(3600)")
    kube.kubectl("apply", "-n", "default", "-f", "-", input=yaml.safe_dump(pod))
    kube.kubectl("wait", "-n", "default", "--for=condition=Ready", "pod/left-running", "--timeout=120s")
    for pid in _processes_of(node_cluster.state_dir):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    wait_for(
        lambda: not _processes_of(node_cluster.state_dir), timeout=30, what="the node's processes to die"
    )

    elsewhere = tmp_path_factory.mktemp("elsewhere")
    try:
        up = run_cluster("up", "--node", "--state-dir", str(elsewhere))
        assert f"the node of {node_cluster.state_dir} is not running" in up.stderr, up.stderr
        run_cluster("down", "--state-dir", str(elsewhere))
        assert node_cluster.host_before.differences(snapshot()) == {}
    finally:
        # bring the session's node back for the modules after this one (its images are kept)
        node_cluster.cluster_command("up", "--node")
