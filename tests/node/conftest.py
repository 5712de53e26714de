"""The pod suite: the product as users run it, in real pods on a real node.

``node_cluster`` (session) is ``luna-cluster up --node`` in a temporary state directory
with the project's image built by ``luna-cluster image`` and imported into the node; it is
torn down at the end. With ``LUNA_TEST_KUBECONFIG`` the suite runs against that cluster instead
(``make e2e-kind``), with the image named by ``LUNA_TEST_IMAGE`` already loaded into its nodes.

When this machine cannot run a node (no root, no runc...), the suite is skipped, unless
``LUNA_REQUIRE_NODE=1`` (CI sets it): then it fails. A node that could start but did not always
fails the suite.

Tests marked ``own_node`` need our own node (its host, bridge, kubelet or image engine) and are
skipped on another cluster. ``LUNA_POD_SUITE=own-node`` keeps only them (``make test`` runs the
others on kind, ``make e2e-kind``); ``all`` (the default) runs the whole suite.
"""

from __future__ import annotations

import os
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.host import HostSnapshot, snapshot
from tests.support.kube_fixtures import Kube, _cluster_command, _label

UP_TIMEOUT = 1800  # a cold `up --node` builds the node's binaries first
IMAGE_TIMEOUT = 1200  # a cold image build makes the base image first
IMAGE_REPOSITORY = "luna-plugins"
IMAGE_TAG = "e2e"


@dataclass(frozen=True)
class NodeCluster:
    """A cluster whose node runs the project's image."""

    kube: Kube
    image_repository: str
    image_tag: str
    #: our own cluster's state directory (None for an external cluster)
    state_dir: Path | None = None
    #: the machine before our node came up
    host_before: HostSnapshot | None = None

    @property
    def image(self) -> str:
        return f"{self.image_repository}:{self.image_tag}"

    def image_values(self, tag: str | None = None) -> list[str]:
        """helm arguments that make the chart run this image, never pulling it."""
        return [
            "--set",
            f"image.repository={self.image_repository}",
            "--set",
            f"image.tag={tag or self.image_tag}",
            "--set",
            "image.pullPolicy=Never",
        ]

    def cluster_command(self, *args: str, timeout: float = UP_TIMEOUT) -> subprocess.CompletedProcess[str]:
        """``luna-cluster ARGS --state-dir <ours>``; fails the test when it fails."""
        assert self.state_dir is not None, "only for our own cluster"
        return run_cluster(*args, "--state-dir", str(self.state_dir), timeout=timeout)


def run_cluster(*args: str, timeout: float = UP_TIMEOUT) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        _cluster_command(*args),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if result.returncode != 0:
        pytest.fail(f"luna-cluster {' '.join(args)} failed ({result.returncode}):\n{result.stderr}")
    return result


POD_SUITES = ("all", "own-node")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip the ``own_node`` tests on another cluster; with ``LUNA_POD_SUITE=own-node`` deselect
    the pod tests that are not marked so."""
    here = Path(__file__).parent
    suite = os.environ.get("LUNA_POD_SUITE", "all") or "all"
    if suite not in POD_SUITES:
        raise pytest.UsageError(f"LUNA_POD_SUITE={suite}: use one of {', '.join(POD_SUITES)}")
    external = bool(os.environ.get("LUNA_TEST_KUBECONFIG"))
    kept: list[pytest.Item] = []
    dropped: list[pytest.Item] = []
    for item in items:
        if here not in item.path.parents:
            kept.append(item)
            continue
        mark = item.get_closest_marker("own_node")
        if suite == "own-node" and mark is None:
            dropped.append(item)
            continue
        if mark is not None and external:
            reason = str(mark.args[0]) if mark.args else "needs our own node"
            item.add_marker(pytest.mark.skip(reason=f"our own node only: {reason}"))
        kept.append(item)
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = kept


def _node_required() -> bool:
    return os.environ.get("LUNA_REQUIRE_NODE", "") not in ("", "0", "false", "no")


@pytest.fixture(scope="session")
def node_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeCluster]:
    """The session's cluster with a node (see the module docstring)."""
    external = os.environ.get("LUNA_TEST_KUBECONFIG")
    if external:
        image = os.environ.get("LUNA_TEST_IMAGE", f"{IMAGE_REPOSITORY}:{IMAGE_TAG}")
        repository, _, tag = image.rpartition(":")
        kubectl = os.environ.get("LUNA_TEST_KUBECTL", "kubectl")
        yield NodeCluster(
            Kube(Path(external), kubectl, os.environ.get("LUNA_TEST_HELM", "helm")), repository, tag
        )
        return

    from luna_cluster import node

    reason = node.unavailable_reason()
    if reason:
        message = f"the pod suite needs a node: luna-cluster up --node {reason}"
        if _node_required():
            pytest.fail(f"{message} (LUNA_REQUIRE_NODE is set)")
        pytest.skip(message)
    state_dir = tmp_path_factory.mktemp("node")
    before = snapshot()
    run_cluster("up", "--node", "--state-dir", str(state_dir))
    try:
        run_cluster(
            "image",
            "--state-dir",
            str(state_dir),
            "--tag",
            f"{IMAGE_REPOSITORY}:{IMAGE_TAG}",
            timeout=IMAGE_TIMEOUT,
        )
        yield NodeCluster(
            Kube(
                state_dir / "kubeconfig",
                str(state_dir / "bin" / "kubectl"),
                str(state_dir / "bin" / "helm"),
                state_dir,
            ),
            IMAGE_REPOSITORY,
            IMAGE_TAG,
            state_dir,
            before,
        )
    finally:
        subprocess.run(
            _cluster_command("down", "--state-dir", str(state_dir)),
            capture_output=True,
            timeout=300,
            check=False,
        )


@pytest.fixture
def node_namespace(node_cluster: NodeCluster, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh namespace on the node's cluster, named after the test; deleted afterwards."""
    name = f"n-{_label(request.node.name, 48)}-{uuid.uuid4().hex[:6]}"
    kube = node_cluster.kube
    kube.kubectl("create", "namespace", name)
    try:
        yield name
    finally:
        kube.kubectl("delete", "namespace", name, "--wait=false", "--ignore-not-found", check=False)
