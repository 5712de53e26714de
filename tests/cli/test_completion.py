"""`luna-plugins --version` and `luna-plugins completion`: the bash script is valid (`bash -n`) and
its function, run by bash as the shell runs it, completes sub-commands, options, fixed choices
and files; the zsh and fish scripts are written from the same parser; an unknown shell is a
usage error."""

from __future__ import annotations

import shutil
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "luna_cli.main", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_version() -> None:
    result = cli("--version")
    assert result.returncode == 0
    assert result.stdout.strip() == f"luna-plugins {metadata.version('luna-plugins')}"


@pytest.fixture(scope="module")
def bash_script(tmp_path_factory: pytest.TempPathFactory) -> Path:
    result = cli("completion", "bash")
    assert result.returncode == 0, result.stderr
    path = tmp_path_factory.mktemp("completion") / "luna-plugins.bash"
    path.write_text(result.stdout)
    return path


def complete(script: Path, cwd: Path, *words: str) -> list[str]:
    """What bash's completion function offers for the command line ``words`` (the last one being
    completed)."""
    line = " ".join(f"'{word}'" for word in words)
    program = f"""
source '{script}'
COMP_WORDS=(luna-plugins {line})
COMP_CWORD={len(words)}
_luna_plugins
printf '%s\\n' "${{COMPREPLY[@]}}"
"""
    result = subprocess.run(
        ["bash", "-c", program], capture_output=True, text=True, cwd=cwd, timeout=30, check=False
    )
    assert result.returncode == 0, result.stderr
    return sorted(filter(None, result.stdout.splitlines()))


def test_the_bash_script_is_valid_bash(bash_script: Path) -> None:
    result = subprocess.run(["bash", "-n", str(bash_script)], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr


def test_bash_completes_commands_options_choices_and_files(bash_script: Path, tmp_path: Path) -> None:
    (tmp_path / "tally.py").write_text("")
    assert complete(bash_script, tmp_path, "si") == ["sidecar"]
    assert complete(bash_script, tmp_path, "--v") == ["--version"]
    assert "completion" in complete(bash_script, tmp_path, "")
    assert complete(bash_script, tmp_path, "sidecar", "--log-f") == ["--log-format"]
    assert complete(bash_script, tmp_path, "new", "--kind", "") == ["background", "event"]
    assert complete(bash_script, tmp_path, "completion", "z") == ["zsh"]
    assert {"bash", "fish", "zsh"} <= set(complete(bash_script, tmp_path, "completion", ""))
    assert complete(bash_script, tmp_path, "lint", "ta") == ["tally.py"]


def test_zsh_and_fish_scripts_come_from_the_same_parser() -> None:
    zsh, fish = cli("completion", "zsh"), cli("completion", "fish")
    assert zsh.returncode == fish.returncode == 0
    assert zsh.stdout.startswith("#compdef luna-plugins\n") and "bashcompinit" in zsh.stdout
    assert "complete -c luna-plugins -f -n 'not __fish_seen_subcommand_from" in fish.stdout
    assert "-l kind -x -a 'event background'" in fish.stdout
    for shell, text in (("zsh", zsh.stdout), ("fish", fish.stdout)):
        binary = shutil.which(shell)
        if binary:  # the shell's own syntax check, where the shell is installed
            result = subprocess.run([binary, "-n"], input=text, capture_output=True, text=True, check=False)
            assert result.returncode == 0, result.stderr


def test_an_unknown_shell_is_a_usage_error() -> None:
    result = cli("completion", "tcsh")
    assert result.returncode == 2 and result.stdout == ""
    assert "invalid choice: 'tcsh' (choose from 'bash', 'zsh', 'fish')" in result.stderr
