"""The README is a door: short, with the two set-up commands CI runs, and links that lead somewhere."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()
SET_UP = (
    "make demo   # the whole product on a local Kubernetes control plane; prints what to curl and"
    " which kubectl commands to try\n"
    "make test   # installs everything into .venv (and the Debian tools the tests use), lints,"
    " type-checks, tests\n"
)


def test_the_readme_stays_short() -> None:
    assert len(README.encode()) <= 12 * 1024


def test_the_two_set_up_commands_are_there_as_they_were() -> None:
    assert f"## Set-up: two commands\n\n```sh\n{SET_UP}```" in README


def test_ci_runs_the_readmes_test_command() -> None:
    (test_line,) = [line for line in SET_UP.splitlines() if line.startswith("make test")]
    command = test_line.split("#")[0].strip()
    run = (ROOT / ".ci" / "run").read_text().splitlines()
    commands = [
        line.strip()
        for line in run
        if line.strip() and not line.lstrip().startswith(("#", "export", "set ", "cd "))
    ]
    assert commands[-1] == command, "the last command of .ci/run is the README's test command"
    assert shlex.split(command) == ["make", "test"]


def test_every_link_of_the_readme_leads_to_a_file() -> None:
    targets = [t for t in re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", README) if "://" not in t]
    assert targets
    missing = [t for t in targets if not (ROOT / t).exists()]
    assert missing == []


def test_the_readme_says_where_each_user_goes_next() -> None:
    for who in ("platform engineer", "service developer", "plugin author", "contributor"):
        assert f"**{who}**" in README
    for command in ("luna-plugins new", "pytest test_", "luna-plugins render", "kubectl -n team-a apply"):
        assert command in README
    assert "helm install" in README
