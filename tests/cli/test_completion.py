"""`luna-plugins --version` and `luna-plugins completion`: the bash script is valid (`bash -n`) and
its function, run by bash as the shell runs it, completes sub-commands, options, fixed choices
and files; so do the zsh script, at a Tab in an interactive zsh on a pseudo-terminal, and the fish
script, through fish's `complete -C`, each sourced and installed where the docs say; an unknown
shell is a usage error."""

from __future__ import annotations

import os
import re
import shlex
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
    for name, text in (("zsh", zsh.stdout), ("fish", fish.stdout)):
        result = subprocess.run(
            [shell(name), "-n"], input=text, capture_output=True, text=True, timeout=30, check=False
        )
        assert result.returncode == 0, result.stderr


def shell(name: str) -> str:
    """The path of ``zsh`` or ``fish``: `make test` installs both (`make system-deps`), so CI fails
    without them; elsewhere their tests are skipped."""
    found = shutil.which(name)
    if found is None:
        if os.environ.get("CI"):
            pytest.fail(f"{name} is required in CI (Debian package {name!r}; `make system-deps` installs it)")
        pytest.skip(f"{name} not installed (Debian package {name!r}; `make system-deps` installs it)")
    return found


#: completes ``$2`` in an interactive zsh on a pseudo-terminal (zsh's zpty module) set up by
#: ``$1``, as a user's Tab does, and prints what the terminal showed, where each candidate zsh's
#: completion system adds is between <candidate> and </candidate>; the markers are typed split in
#: two so that the terminal's echo of the typed lines never holds them
ZSH_TAB = r"""
zmodload zsh/zpty || exit 3
zpty tab zsh -f -i
zpty -w tab 'PROMPT= RPROMPT= PS2='
zpty -w tab "$1"
zpty -w tab 'compadd() { local -a hits; builtin compadd -A hits "$@"; local ret=$?
    print -rl -- "<ca""ndidate>"${^hits}"</ca""ndidate>"; return ret }'
zpty -w tab 'ended() { print -r -- "<compl""etion-end>" }; comppostfuncs=(ended)'
zpty -w -n tab "$2"$'\t'
out=
typeset -F SECONDS=0
while (( SECONDS < 20 )); do
    if zpty -r -t tab chunk; then
        out+=$chunk
        [[ $out == *'<completion-end>'* ]] && break
    else
        sleep 0.02
    fi
done
zpty -d tab
[[ $out == *'<completion-end>'* ]] || { print -r -- "no completion ended: $out" >&2; exit 1 }
print -r -- $out
"""


@pytest.fixture(scope="module", params=["sourced", "in-fpath"])
def zsh_setup(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> str:
    """zsh commands that load the completion: ``source`` of the script, or the script installed
    as the docs say (``_luna-plugins`` in a directory of ``$fpath``), then compinit."""
    result = cli("completion", "zsh")
    assert result.returncode == 0, result.stderr
    functions = tmp_path_factory.mktemp("zsh-functions")
    if request.param == "sourced":
        (functions / "luna-plugins.zsh").write_text(result.stdout)
        return f"autoload -U compinit && compinit -u -D && source '{functions}/luna-plugins.zsh'"
    (functions / "_luna-plugins").write_text(result.stdout)
    return f"fpath=('{functions}' $fpath) && autoload -U compinit && compinit -u -D"


def zsh_complete(setup: str, cwd: Path, line: str) -> list[str]:
    """What zsh offers at a Tab after ``line`` (typed at its prompt in ``cwd``)."""
    driver = cwd / "tab.zsh"
    driver.write_text(ZSH_TAB)
    result = subprocess.run(
        [shell("zsh"), "-f", str(driver), setup, line],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return sorted(set(re.findall(r"<candidate>(.*?)</candidate>", result.stdout)) - {"tab.zsh"})


def test_zsh_completes_commands_options_choices_and_files(zsh_setup: str, tmp_path: Path) -> None:
    (tmp_path / "tally.py").write_text("")
    assert zsh_complete(zsh_setup, tmp_path, "luna-plugins si") == ["sidecar"]
    assert zsh_complete(zsh_setup, tmp_path, "luna-plugins --v") == ["--version"]
    assert {"completion", "lint", "sidecar"} <= set(zsh_complete(zsh_setup, tmp_path, "luna-plugins "))
    assert zsh_complete(zsh_setup, tmp_path, "luna-plugins sidecar --log-f") == ["--log-format"]
    assert zsh_complete(zsh_setup, tmp_path, "luna-plugins new --kind ") == ["background", "event"]
    assert zsh_complete(zsh_setup, tmp_path, "luna-plugins completion z") == ["zsh"]
    assert zsh_complete(zsh_setup, tmp_path, "luna-plugins lint ta") == ["tally.py"]


@pytest.fixture(scope="module", params=["sourced", "installed"])
def fish_session(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> tuple[str, dict[str, str]]:
    """The fish commands before a completion and fish's environment: ``source`` of the script
    (no configuration read), or the script installed as the docs say
    (``~/.config/fish/completions/luna-plugins.fish`` of a home of the test's own), where fish
    loads it by itself for a command it finds on the PATH (a stand-in here)."""
    result = cli("completion", "fish")
    assert result.returncode == 0, result.stderr
    home = tmp_path_factory.mktemp("fish-home")
    env = {**os.environ, "HOME": str(home), "XDG_CONFIG_HOME": str(home / ".config")}
    env["XDG_DATA_HOME"] = str(home / ".local" / "share")
    if request.param == "sourced":
        (home / "luna-plugins.fish").write_text(result.stdout)
        return f"source '{home}/luna-plugins.fish'", env
    completions = home / ".config" / "fish" / "completions"
    completions.mkdir(parents=True)
    (completions / "luna-plugins.fish").write_text(result.stdout)
    stand_in = home / "bin" / "luna-plugins"
    stand_in.parent.mkdir()
    stand_in.write_text("#!/bin/sh\n")
    stand_in.chmod(0o755)
    env["PATH"] = f"{stand_in.parent}{os.pathsep}{env.get('PATH', '')}"
    return "true", env


def fish_complete(session: tuple[str, dict[str, str]], cwd: Path, line: str) -> list[str]:
    """What fish offers after ``line`` (``complete -C``, the candidates a Tab shows, without
    their descriptions)."""
    setup, env = session
    options = ["--no-config"] if setup.startswith("source") else []
    result = subprocess.run(
        [shell("fish"), *options, "-c", f"{setup}; complete -C {shlex.quote(line)}"],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return sorted(candidate.split("\t", 1)[0] for candidate in result.stdout.splitlines() if candidate)


def test_fish_completes_commands_options_choices_and_files(
    fish_session: tuple[str, dict[str, str]], tmp_path: Path
) -> None:
    (tmp_path / "tally.py").write_text("")
    assert fish_complete(fish_session, tmp_path, "luna-plugins si") == ["sidecar"]
    assert {"completion", "lint", "sidecar"} <= set(fish_complete(fish_session, tmp_path, "luna-plugins "))
    assert fish_complete(fish_session, tmp_path, "luna-plugins sidecar --log-f") == ["--log-format"]
    assert fish_complete(fish_session, tmp_path, "luna-plugins new --kind ") == ["background", "event"]
    assert fish_complete(fish_session, tmp_path, "luna-plugins completion z") == ["zsh"]
    assert fish_complete(fish_session, tmp_path, "luna-plugins lint ta") == ["tally.py"]


def test_an_unknown_shell_is_a_usage_error() -> None:
    result = cli("completion", "tcsh")
    assert result.returncode == 2 and result.stdout == ""
    assert "invalid choice: 'tcsh' (choose from 'bash', 'zsh', 'fish')" in result.stderr
