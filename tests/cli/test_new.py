"""`luna-plugins new`: each skeleton passes lint and its own test (run by a plain pytest in a fresh
directory, as the author would: the test uses the ``luna_plugin`` fixture pytest finds through
luna-plugins' ``pytest11`` entry point), and names or files that would not work are refused."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest


def luna(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "luna_cli.main", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=120,
        check=False,
    )


@pytest.mark.parametrize(
    ("name", "options"),
    [
        ("route_tally", ["--kind", "event"]),
        ("event_logger", ["--kind", "event", "--event", "sending_event"]),
        ("tea_time", ["--kind", "background"]),
    ],
)
def test_each_skeleton_lints_clean_and_its_test_passes(name: str, options: list[str], tmp_path: Path) -> None:
    created = luna("new", name, *options, "--dir", "plugins", cwd=tmp_path)
    assert created.returncode == 0, created.stderr
    plugin, test = tmp_path / "plugins" / f"{name}.py", tmp_path / "plugins" / f"test_{name}.py"
    assert plugin.exists() and test.exists()
    # the fixture of luna-plugins' pytest plugin (entry point pytest11), nothing imported
    assert "(luna_plugin)" in test.read_text() and "import" not in test.read_text()
    assert f"{name}.requirements.txt" in plugin.read_text() and "secret_settings=" in plugin.read_text()
    linted = luna("lint", str(plugin), cwd=tmp_path)
    assert linted.returncode == 0 and linted.stdout == "", linted.stdout + linted.stderr
    tested = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-c", "/dev/null", str(test)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
        check=False,
    )
    assert tested.returncode == 0, tested.stdout + tested.stderr
    assert "1 passed" in tested.stdout


def test_unusable_names_and_existing_files_are_refused(tmp_path: Path) -> None:
    for name in ("json", "my-plugin", "1st", "class"):
        result = luna("new", name, "--kind", "event", cwd=tmp_path)
        assert result.returncode == 1 and "choose another NAME" in result.stderr, (name, result.stderr)
    assert luna("new", "mine", "--kind", "background", cwd=tmp_path).returncode == 0
    again = luna("new", "mine", "--kind", "event", cwd=tmp_path)
    assert again.returncode == 1 and "already exist" in again.stderr
    assert "Counts" not in (tmp_path / "mine.py").read_text()  # the first skeleton is untouched
