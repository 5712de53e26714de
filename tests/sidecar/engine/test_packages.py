"""Pure parts of the sidecar's package installer: set identity, pip options, failure kinds."""

from __future__ import annotations

from pathlib import Path

from luna_sidecar.engine.packages import PackageSettings, PipFailure, runtime_constraints, set_key

PLUGINS = (("a", ("redis==5",)), ("b", ("lunatestpkg==1.0",)))


def test_a_set_is_known_by_what_is_asked_from_where_under_which_pins() -> None:
    settings = PackageSettings(root=Path("/p"), index_url="http://127.0.0.1:1/simple/")
    key = set_key(PLUGINS, settings, ["aiohttp==3"])
    assert key == set_key(PLUGINS, settings, ["aiohttp==3"])
    assert key != set_key(tuple(reversed(PLUGINS)), settings, ["aiohttp==3"])  # load order matters
    assert key != set_key(PLUGINS, settings, ["aiohttp==4"])
    other_index = PackageSettings(root=Path("/p"), index_url="http://127.0.0.1:2/simple/")
    assert key != set_key(PLUGINS, other_index, ["aiohttp==3"])


def test_a_wheelhouse_replaces_every_index() -> None:
    settings = PackageSettings(
        index_url="http://i/simple/", extra_index_urls=("http://e/simple/",), find_links=Path("/w")
    )
    assert settings.pip_options() == ["--no-index", "--find-links", "/w"]
    indexed = PackageSettings(
        index_url="http://i/simple/", extra_index_urls=("http://e/simple/",), ca_file=Path("/ca.pem")
    )
    assert indexed.pip_options() == [
        "--index-url",
        "http://i/simple/",
        "--extra-index-url",
        "http://e/simple/",
        "--cert",
        "/ca.pem",
    ]
    assert "--require-hashes" in PackageSettings(require_hashes=True).pip_options()


def test_pip_failures_are_told_apart() -> None:
    conflict = PipFailure.of("ERROR: Cannot install a==1 and a==2\nERROR: ResolutionImpossible: ...", 1)
    assert conflict.kind == "conflict" and "Cannot install" in conflict.message
    down = PipFailure.of(
        "WARNING: Retrying ... NewConnectionError('Failed to establish a new connection: [Errno 111] "
        "Connection refused')\nERROR: Could not find a version that satisfies the requirement x",
        1,
    )
    assert down.kind == "network" and "cannot be reached" in down.message
    missing = PipFailure.of("ERROR: No matching distribution found for nosuchthing==9", 1)
    assert missing.kind == "other"
    assert PipFailure.of("", 2).message == "pip exited with 2"


def test_the_runtime_pins_its_own_distributions() -> None:
    pins = runtime_constraints()
    assert any(pin.lower().startswith("aiohttp==") for pin in pins)
    assert all("==" in pin for pin in pins)
