"""The README's first plugin, in its four commands, works as written: `new` writes the plugin and
its test, pytest passes in a fresh directory, `render` prints a LunaPlugin, and the API server
accepts it (the CRD's schema; no operator runs here)."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]


def readme_commands() -> list[list[str]]:
    text = (ROOT / "README.md").read_text()
    section = text[text.index("## A first plugin in four commands") :]
    block = section[section.index("```sh\n") + 6 : section.index("```", section.index("```sh\n") + 6)]
    return [shlex.split(line.split("#")[0]) for line in block.splitlines() if line.strip()]


def test_the_readme_gives_the_four_commands() -> None:
    first = [command[:2] if command[0] != "pytest" else command[:1] for command in readme_commands()]
    assert first == [["luna-plugins", "new"], ["pytest"], ["luna-plugins", "render"], ["kubectl", "-n"]]


@pytest.mark.kube
def test_the_four_commands_work_as_written(kube: Any, namespace: str, crd: None, tmp_path: Path) -> None:
    new, test, render, apply = readme_commands()
    bin_dir = Path(sys.executable).parent
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"}
    env.pop("PYTEST_ADDOPTS", None)

    def run(argv: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            argv, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120, **kwargs
        )
        assert result.returncode == 0, f"{shlex.join(argv)}:\n{result.stdout}\n{result.stderr}"
        return result

    run(new)
    tested = run([sys.executable, "-m", *test, "-q", "-p", "no:cacheprovider"])
    assert "1 passed" in tested.stdout
    target = render[render.index(">") + 1]
    manifest = run(render[: render.index(">")]).stdout
    (tmp_path / target).write_text(manifest)
    plugin = yaml.safe_load(manifest)
    assert plugin["kind"] == "LunaPlugin" and plugin["metadata"]["name"] == "route-tally"
    assert apply[:2] == ["kubectl", "-n"] and apply[3:5] == ["apply", "-f"]
    kube.kubectl("-n", namespace, *apply[3:5], str(tmp_path / apply[5]))
    stored = yaml.safe_load(
        kube.kubectl("-n", namespace, "get", "lp", plugin["metadata"]["name"], "-o", "yaml").stdout
    )
    assert stored["spec"]["code"] == plugin["spec"]["code"]
