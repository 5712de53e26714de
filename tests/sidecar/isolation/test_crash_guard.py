"""The markers that keep a plugin version that crashed the sidecar while loading from loading again."""

from __future__ import annotations

from pathlib import Path

import pytest

from luna_sidecar.isolation.crash_guard import LOADING, QUARANTINED, CrashGuard


def test_a_load_that_ended_leaves_no_marker(tmp_path: Path) -> None:
    guard = CrashGuard(tmp_path)
    with guard.loading("kettle", "abc"):
        assert (tmp_path / LOADING).exists()
    assert not (tmp_path / LOADING).exists()
    assert CrashGuard(tmp_path).quarantined("kettle") is None


def test_a_load_that_raised_leaves_no_marker(tmp_path: Path) -> None:
    guard = CrashGuard(tmp_path)
    with pytest.raises(RuntimeError), guard.loading("kettle", "abc"):
        raise RuntimeError("failed to load, but the process lives")
    assert CrashGuard(tmp_path).quarantined("kettle") is None


def test_a_marker_left_by_a_dead_process_quarantines_that_version_until_released(tmp_path: Path) -> None:
    (tmp_path / LOADING).write_text('{"kettle": "abc"}')
    guard = CrashGuard(tmp_path)
    assert guard.quarantined("kettle") == "abc"
    assert not (tmp_path / LOADING).exists()
    assert CrashGuard(tmp_path).quarantined("kettle") == "abc", "kept across more restarts"
    CrashGuard(tmp_path).release("kettle")
    assert CrashGuard(tmp_path).quarantined("kettle") is None


def test_release_of_everything(tmp_path: Path) -> None:
    (tmp_path / QUARANTINED).write_text('{"a": "1", "b": "2"}')
    guard = CrashGuard(tmp_path)
    guard.release()
    assert CrashGuard(tmp_path).quarantined("a") is None and CrashGuard(tmp_path).quarantined("b") is None


@pytest.mark.parametrize("content", ["", "not json", "[1, 2]", '{"kettle": 5}', "\x00\xff"])
def test_unreadable_or_hostile_files_are_ignored(tmp_path: Path, content: str) -> None:
    (tmp_path / LOADING).write_text(content)
    (tmp_path / QUARANTINED).write_text(content)
    assert CrashGuard(tmp_path).quarantined("kettle") is None


def test_a_directory_that_cannot_be_made_turns_the_guard_off(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    guard = CrashGuard(blocker / "state")
    assert guard.directory is None
    with guard.loading("kettle", "abc"):
        pass
    assert guard.quarantined("kettle") is None


def test_without_a_directory_nothing_is_remembered() -> None:
    guard = CrashGuard(None)
    with guard.loading("kettle", "abc"):
        pass
    assert guard.quarantined("kettle") is None
