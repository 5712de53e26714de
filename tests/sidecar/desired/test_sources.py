"""Desired state from a plugins directory and an active list."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest

from luna_contract.code import code_hash
from luna_sidecar.config import ConfigError
from luna_sidecar.desired.sources import DesiredPlugin, DirectorySource, PluginSource


def test_code_hash_is_sha256_hex() -> None:
    assert code_hash(b"x = 1\n") == hashlib.sha256(b"x = 1\n").hexdigest()


def test_plugin_source_fills_its_hash() -> None:
    source = PluginSource("m", b"code", "m.py")
    assert source.code_hash == code_hash(b"code")
    assert PluginSource("m", b"code", "m.py", code_hash="given").code_hash == "given"
    assert source.settings == {}


def test_read_in_active_list_order_with_settings(tmp_path: Path) -> None:
    (tmp_path / "b.py").write_text("B = 1\n")
    (tmp_path / "a.py").write_text("A = 1\n")
    (tmp_path / "a.settings.json").write_text(json.dumps({"url": "http://x", "n": 2}))
    desired = DirectorySource(tmp_path, active=("b", "a")).read()
    assert [entry.module for entry in desired] == ["b", "a"]
    b, a = desired
    assert b.source is not None and a.source is not None
    assert b.error is None
    assert b.source.code == b"B = 1\n"
    assert b.source.origin == str(tmp_path / "b.py")
    assert b.source.settings == {}
    assert a.source.settings == {"url": "http://x", "n": 2}


def test_missing_file_becomes_an_entry_with_error(tmp_path: Path) -> None:
    [entry] = DirectorySource(tmp_path, active=("ghost",)).read()
    assert entry == DesiredPlugin("ghost", None, f"plugin file not found: {tmp_path / 'ghost.py'}")


@pytest.mark.parametrize(
    ("content", "message"),
    [("{broken", "cannot read settings file"), ("[1, 2]", "must hold a JSON object")],
)
def test_bad_settings_file_becomes_an_error(tmp_path: Path, content: str, message: str) -> None:
    (tmp_path / "p.py").write_text("")
    (tmp_path / "p.settings.json").write_text(content)
    [entry] = DirectorySource(tmp_path, active=("p",)).read()
    assert entry.source is None
    assert entry.error is not None and message in entry.error


def test_active_file_is_read_every_time(tmp_path: Path) -> None:
    active_file = tmp_path / "active"
    active_file.write_text('["one"]')
    source = DirectorySource(tmp_path, active_file=active_file)
    assert source.active_list() == ("one",)
    active_file.write_text("one, two")
    assert source.active_list() == ("one", "two")


def test_unusable_active_file(tmp_path: Path) -> None:
    missing = DirectorySource(tmp_path, active_file=tmp_path / "nope")
    with pytest.raises(ConfigError, match="cannot read active-list file"):
        missing.active_list()
    bad = tmp_path / "bad"
    bad.write_text("a, a")
    with pytest.raises(ConfigError, match=f"^{bad}: "):
        DirectorySource(tmp_path, active_file=bad).active_list()


def test_no_active_list_means_nothing(tmp_path: Path) -> None:
    (tmp_path / "a.py").write_text("")
    assert DirectorySource(tmp_path).read() == []


def test_fingerprint_changes_with_the_files_that_matter(tmp_path: Path) -> None:
    active_file = tmp_path / "active.txt"
    active_file.write_text("a")
    plugin = tmp_path / "a.py"
    plugin.write_text("x = 1\n")
    source = DirectorySource(tmp_path, active_file=active_file)
    first = source.fingerprint()
    assert {entry[0] for entry in first} == {str(plugin), str(active_file)}
    assert source.fingerprint() == first
    (tmp_path / "notes.md").write_text("irrelevant")
    assert source.fingerprint() == first
    plugin.write_text("x = 22\n")
    second = source.fingerprint()
    assert second != first
    (tmp_path / "a.settings.json").write_text("{}")
    third = source.fingerprint()
    assert len(third) == 3
    stat = plugin.stat()
    os.utime(plugin, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    assert source.fingerprint() != third
