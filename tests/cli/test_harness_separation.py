"""The local-cluster harness (``luna_cluster``, ``tools/pyproject.toml``) is no part of the product:
the ``luna-plugins`` wheel the image installs holds none of it, the ``luna-plugins`` command has no
``cluster`` command, and the harness has its own, ``luna-cluster``. (That no product module imports
it: ``tests/sdk/test_sdk_imports.py``.)"""

from __future__ import annotations

import io
import re
import subprocess
import sys
import tomllib
import zipfile
from importlib import metadata
from pathlib import Path

import pytest

from luna_cli.image_modules import requirement_closure
from luna_cli.main import COMMANDS, build_parser
from luna_cluster import image

ROOT = Path(__file__).resolve().parents[2]
#: the harness's sub-commands and options, as they were under `luna-plugins cluster`
ACTIONS = ("up", "down", "status", "build", "image", "kind-image", "kind-stop")
OPTIONS = ("--state-dir", "--port", "--timeout", "--node", "--prometheus", "--lua", "--audit-log")
OPTIONS += ("--purge", "--tag", "--base", "--context", "--kind-config")


def test_the_product_packages_no_harness() -> None:
    product = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "tools" not in product["tool"]["setuptools"]["packages"]["find"]["where"]
    harness = tomllib.loads((ROOT / "tools" / "pyproject.toml").read_text())["project"]
    assert harness["scripts"] == {"luna-cluster": "luna_cluster.cli:main"}
    assert not any(requirement.startswith("luna-plugins") for requirement in harness["dependencies"])


def test_the_product_wheel_holds_no_module_of_the_harness(tmp_path: Path) -> None:
    """Built as ``luna-cluster image`` builds it for the image (``pip wheel`` of the checkout)."""
    wheel = image.project_wheel(ROOT, tmp_path / "dist", tmp_path / "wheels.log", io.StringIO())
    assert wheel.name.startswith("luna_plugins-")
    with zipfile.ZipFile(wheel) as archive:
        tops = {name.partition("/")[0] for name in archive.namelist() if "/" in name}
    assert image.harness_files(wheel) == []
    assert {"luna_plugins", "luna_sidecar", "luna_operator", "luna_cli", "luna_contract"} <= tops
    assert "luna_cluster" not in tops


def test_harness_files_finds_the_harness_in_a_wheel(tmp_path: Path) -> None:
    wheel = tmp_path / "mixed-0.1.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.writestr("luna_plugins/__init__.py", "")
        archive.writestr("luna_cluster/cli.py", "")
        archive.writestr("luna_cluster_extra/x.py", "")
    assert image.harness_files(wheel) == ["luna_cluster/cli.py"]


def test_the_installed_distributions_keep_them_apart() -> None:
    assert metadata.packages_distributions()["luna_cluster"] == ["luna-plugins-cluster"]
    assert "luna-plugins-cluster" not in requirement_closure()


def test_the_product_command_has_no_cluster_command() -> None:
    assert "cluster" not in COMMANDS
    assert all(not module.startswith("luna_cluster") for module, _ in COMMANDS.values())
    with pytest.raises(SystemExit):
        build_parser().parse_args(["cluster", "status"])
    shown = subprocess.run(
        [sys.executable, "-m", "luna_cli.main", "--help"], capture_output=True, text=True, timeout=60
    )
    assert shown.returncode == 0, shown.stderr
    listed = re.findall(r"^ {4}(\w[\w-]*)", shown.stdout, re.MULTILINE)
    assert listed == list(COMMANDS) and "sidecar" in listed, shown.stdout


@pytest.mark.parametrize(
    "command",
    [[str(Path(sys.executable).with_name("luna-cluster"))], [sys.executable, "-m", "luna_cluster"]],
    ids=["console-script", "python-m"],
)
def test_the_harness_command_has_the_sub_commands_and_options(command: list[str]) -> None:
    shown = subprocess.run([*command, "--help"], capture_output=True, text=True, timeout=60)
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.startswith("usage: luna-cluster ")
    assert "{" + ",".join(ACTIONS) + "}" in shown.stdout
    assert all(option in shown.stdout for option in OPTIONS), shown.stdout


def test_the_harness_command_runs_and_refuses_an_unknown_action(tmp_path: Path) -> None:
    status = subprocess.run(
        [sys.executable, "-m", "luna_cluster", "status", "--state-dir", str(tmp_path / "none")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert status.returncode == 1 and "no cluster in" in status.stdout, status.stdout + status.stderr
    wrong = subprocess.run(
        [sys.executable, "-m", "luna_cluster", "start"], capture_output=True, text=True, timeout=60
    )
    assert wrong.returncode == 2 and wrong.stderr.startswith("usage: luna-cluster "), wrong.stderr
