"""scripts/e2e-kind.sh (`make e2e-kind`): valid bash, and without a container engine or kind it
stops at once with exit code 2 and a message that says what is missing."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "e2e-kind.sh"
DEFAULT_SUITE = "`LUNA_POD_SUITE=all pytest tests/node` runs the whole pod suite on a local node instead"


def bash() -> str:
    found = shutil.which("bash")
    assert found is not None, "bash not on PATH"
    return found


def run_script(path: str, **env: str) -> subprocess.CompletedProcess[str]:
    """Run the script with PATH set to ``path`` only (no docker, kind, kubectl from the machine)."""
    return subprocess.run(
        [bash(), str(SCRIPT)],
        env={"PATH": path, "HOME": "/nonexistent", **env},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def fake_command(directory: Path, name: str, exit_code: int) -> None:
    command = directory / name
    command.write_text(f"#!/bin/sh\nexit {exit_code}\n")
    command.chmod(0o755)


def test_the_script_is_valid_bash() -> None:
    result = subprocess.run([bash(), "-n", str(SCRIPT)], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr


def test_without_docker_it_exits_2_and_says_why(tmp_path: Path) -> None:
    result = run_script(str(tmp_path))
    assert result.returncode == 2, result
    assert "make e2e-kind needs a container engine: docker not found on PATH" in result.stderr
    assert DEFAULT_SUITE in result.stderr
    assert result.stdout == ""  # nothing started


@pytest.mark.parametrize("optional, status", [("1", 0), ("0", 2)])
def test_where_kind_cannot_run_make_test_skips_it_only_when_it_is_optional(
    tmp_path: Path, optional: str, status: int
) -> None:
    """`make test` outside CI sets KIND_OPTIONAL=1: the reason is printed and the step passes;
    in CI (KIND_OPTIONAL=0) the same machine fails the step. Preparing only changes nothing."""
    for prepare in ("0", "1"):
        result = run_script(str(tmp_path), KIND_OPTIONAL=optional, KIND_PREPARE_ONLY=prepare)
        assert result.returncode == status, result
        assert "make e2e-kind needs a container engine: docker not found on PATH" in result.stderr
        skipped = "skipped: the pod tests not marked own_node did not run" in result.stderr
        assert skipped == (optional == "1")
        assert result.stdout == ""


def test_with_docker_but_no_daemon_it_exits_2(tmp_path: Path) -> None:
    fake_command(tmp_path, "docker", 1)
    result = run_script(str(tmp_path))
    assert result.returncode == 2, result
    assert "docker is installed but `docker info` fails" in result.stderr
    assert DEFAULT_SUITE in result.stderr


@pytest.mark.parametrize("with_go", [False, True])
def test_with_docker_but_no_kind_it_exits_2(tmp_path: Path, with_go: bool) -> None:
    fake_command(tmp_path, "docker", 0)
    if with_go:
        fake_command(tmp_path, "go", 0)
    result = run_script(str(tmp_path))
    assert result.returncode == 2, result
    assert "make e2e-kind needs kind (Kubernetes in Docker): not found on PATH" in result.stderr
    assert ("go install sigs.k8s.io/kind@v" in result.stderr) is with_go, result.stderr
    assert result.stdout == ""


def run_with(path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [bash(), str(SCRIPT)],
        env={"PATH": str(path), "HOME": "/nonexistent", "PYTHON": "/nonexistent/python", **env},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def test_an_unknown_node_image_choice_exits_2(tmp_path: Path) -> None:
    result = run_with(tmp_path, KIND_NODE="latest")
    assert result.returncode == 2, result
    assert "KIND_NODE=latest: use stock (kind's own image), local (built here) or auto" in result.stderr


def _builder_machine(directory: Path, *, registry_resolves: bool) -> None:
    """Fake commands of a root machine with docker, go and debootstrap."""
    for name in ("docker", "go", "debootstrap"):
        fake_command(directory, name, 0)
    fake_command(directory, "getent", 0 if registry_resolves else 2)
    (directory / "id").write_text("#!/bin/sh\necho 0\n")
    (directory / "id").chmod(0o755)


@pytest.mark.parametrize(("registry_resolves", "chosen"), [(False, "local"), (True, "stock")])
def test_auto_builds_the_node_image_only_where_kinds_registry_does_not_resolve(
    tmp_path: Path, registry_resolves: bool, chosen: str
) -> None:
    _builder_machine(tmp_path, registry_resolves=registry_resolves)
    result = run_with(tmp_path)
    # both stop before anything starts: stock at the missing kind, local at the missing venv
    assert result.returncode == 2, result
    if chosen == "local":
        assert "e2e-kind: node image: local" in result.stdout
        assert "no Python virtual environment at /nonexistent/python" in result.stderr
    else:
        assert "make e2e-kind needs kind (Kubernetes in Docker)" in result.stderr
        assert result.stdout == ""


def test_stock_asked_for_needs_kind_even_where_the_image_could_be_built(tmp_path: Path) -> None:
    _builder_machine(tmp_path, registry_resolves=False)
    result = run_with(tmp_path, KIND_NODE="stock")
    assert result.returncode == 2, result
    assert "make e2e-kind needs kind (Kubernetes in Docker): not found on PATH" in result.stderr
