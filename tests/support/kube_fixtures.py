"""Pytest fixtures for tests against a real Kubernetes API server (a pytest plugin).

``tests/conftest.py`` loads this module with ``pytest_plugins``, so every test folder can use:

* ``kube`` (session): the cluster. By default ``luna-cluster up`` in a temporary state
  directory, torn down at the end of the session. With ``LUNA_TEST_KUBECONFIG=/path/to/kubeconfig``
  the tests use that cluster instead (e.g. kind) and leave it running; ``LUNA_TEST_KUBECTL`` and
  ``LUNA_TEST_HELM`` then pick the client binaries (default: the ones we build, else PATH).
  ``kube.kubectl(...)``/``kube.helm(...)`` run the clients, ``kube.env`` has ``KUBECONFIG`` set.
  With ``LUNA_KUBE_VERSION=1.30`` (``make test-compat``) ``luna-cluster up`` runs the API server and
  the controller manager of that older minor, and the fixture checks that the server is of it.
* ``namespace`` (per test): a fresh namespace named after the test, deleted after it.
* ``api_client`` (per test): a kubernetes_asyncio ``ApiClient`` with the admin credentials.

The cluster starts only when a test asks for one of these fixtures; mark such tests
``@pytest.mark.kube``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

UP_TIMEOUT = 600  # a cold `up` may still have to build the binaries


@dataclass(frozen=True)
class Kube:
    """A reachable cluster and the client binaries that talk to it."""

    kubeconfig: Path
    kubectl_binary: str
    helm_binary: str | None
    #: the state directory when we started the cluster ourselves
    state_dir: Path | None = None

    @property
    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["KUBECONFIG"] = str(self.kubeconfig)
        return env

    def kubectl(
        self, *args: str, input: str | None = None, check: bool = True, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        """Run kubectl against the cluster; on failure (with ``check``) the test fails with stderr."""
        return self._run([self.kubectl_binary, *args], input, check, timeout)

    def helm(self, *args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        if self.helm_binary is None:
            pytest.skip("no helm binary for this cluster")
        return self._run([self.helm_binary, *args], None, check, timeout)

    def _run(
        self, argv: list[str], input: str | None, check: bool, timeout: float
    ) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            argv, input=input, env=self.env, capture_output=True, text=True, timeout=timeout, check=False
        )
        if check and result.returncode != 0:
            pytest.fail(f"{' '.join(argv)} failed ({result.returncode}):\n{result.stderr}{result.stdout}")
        return result

    async def configuration(self) -> Any:
        """A kubernetes_asyncio ``Configuration`` loaded from the kubeconfig."""
        from kubernetes_asyncio import config
        from kubernetes_asyncio.client import Configuration

        configuration = Configuration()
        await config.load_kube_config(config_file=str(self.kubeconfig), client_configuration=configuration)
        return configuration


def _cluster_command(*args: str) -> list[str]:
    """``luna-cluster ARGS``: the local-cluster harness (its own distribution, not the product's CLI)."""
    return [sys.executable, "-m", "luna_cluster", *args]


def _client_binary(env_name: str, name: str, built: dict[str, Path] | None) -> str | None:
    if os.environ.get(env_name):
        return os.environ[env_name]
    if built and name in built:
        return str(built[name])
    return shutil.which(name)


@pytest.fixture(scope="session")
def kube(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Kube]:
    """The cluster of this test session (see the module docstring)."""
    external = os.environ.get("LUNA_TEST_KUBECONFIG")
    if external:
        from luna_cluster import tools

        try:
            built = tools.cached_binaries()
        except tools.BuildError:
            built = None
        kubectl = _client_binary("LUNA_TEST_KUBECTL", "kubectl", built)
        if kubectl is None:
            pytest.fail("LUNA_TEST_KUBECONFIG is set but no kubectl found (set LUNA_TEST_KUBECTL)")
        yield Kube(Path(external), kubectl, _client_binary("LUNA_TEST_HELM", "helm", built))
        return

    state_dir = tmp_path_factory.mktemp("cluster")
    up = subprocess.run(
        _cluster_command("up", "--state-dir", str(state_dir)),
        capture_output=True,
        text=True,
        timeout=UP_TIMEOUT,
        check=False,
    )
    if up.returncode != 0:
        pytest.fail(f"luna-cluster up failed ({up.returncode}):\n{up.stderr}{up.stdout}")
    try:
        started = Kube(
            state_dir / "kubeconfig",
            str(state_dir / "bin" / "kubectl"),
            str(state_dir / "bin" / "helm"),
            state_dir,
        )
        _check_server_minor(started, os.environ.get("LUNA_KUBE_VERSION"))
        yield started
    finally:
        subprocess.run(
            _cluster_command("down", "--state-dir", str(state_dir)), capture_output=True, check=False
        )


def _check_server_minor(kube: Kube, wanted: str | None) -> None:
    """Fail the session unless the API server is of the minor ``wanted`` (``1.30``) asked for."""
    if not wanted:
        return
    version = json.loads(kube.kubectl("version", "-o", "json").stdout)["serverVersion"]["gitVersion"]
    if not str(version).startswith(f"v{wanted.removeprefix('v')}."):
        pytest.fail(f"LUNA_KUBE_VERSION={wanted}, but the API server is {version}")


def _label(text: str, limit: int) -> str:
    slug = re.sub(r"[^a-z0-9-]+", "-", text.lower()).strip("-")
    return slug[:limit].strip("-") or "t"


@pytest.fixture
def namespace(kube: Kube, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh namespace named after the test; deleted (without waiting) afterwards."""
    name = f"t-{_label(request.node.name, 48)}-{uuid.uuid4().hex[:6]}"
    kube.kubectl("create", "namespace", name)
    kube.kubectl("label", "namespace", name, "luna-plugins.test=true")
    try:
        yield name
    finally:
        kube.kubectl("delete", "namespace", name, "--wait=false", "--ignore-not-found", check=False)


@pytest.fixture
async def api_client(kube: Kube) -> AsyncIterator[Any]:
    """A kubernetes_asyncio ``ApiClient`` with the cluster's admin credentials."""
    from kubernetes_asyncio.client import ApiClient

    async with ApiClient(await kube.configuration()) as client:
        yield client
