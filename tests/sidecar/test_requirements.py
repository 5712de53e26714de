"""Plugins' own packages, installed by the real sidecar from a package index served by the test.

The index holds a tiny distribution ``lunatestpkg`` in versions 1.0 and 2.0 (wheels made here),
so a plugin can import it, two plugins can conflict over it, and the index can go down.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.package_index import PackageIndex, make_wheel, sha256_of, write_simple_index
from tests.support.sidecar_harness import Sidecar, start_sidecar, wait_for

USES_PACKAGE = """
import lunatestpkg
from luna_plugins.base.plugins_meta.base_plugins import BaseBackgroundPlugin, pluginHTTPResponse

class UsesPackage(BaseBackgroundPlugin):
    async def initialize(self):
        self.addRoute("/{route}", lambda request: pluginHTTPResponse(body=lunatestpkg.VERSION))
"""


@pytest.fixture
def index(tmp_path: Path) -> Iterator[PackageIndex]:
    root = tmp_path / "index"
    wheels = root / "files"
    for version in ("1.0", "2.0"):
        make_wheel(wheels, "lunatestpkg", version)
    # ships lunatestpkg's module besides its own: it would overwrite another distribution's files
    make_wheel(wheels, "squatpkg", "1.0", extra_files={"lunatestpkg/__init__.py": b'VERSION = "planted"\n'})
    make_wheel(wheels, "bigpkg", "1.0", extra_files={"bigpkg/blob.bin": b"x" * 200_000})
    write_simple_index(wheels, root)
    served = PackageIndex(root).start()
    try:
        yield served
    finally:
        served.stop()


def plugin(route: str) -> str:
    return USES_PACKAGE.replace("{route}", route)


def requirements(plugins_dir: Path, module: str, *lines: str) -> None:
    (plugins_dir / f"{module}.requirements.txt").write_text("".join(f"{line}\n" for line in lines))


def start(
    workdir: Path, index: PackageIndex, plugins: dict[str, str], reqs: dict[str, list[str]], *extra: str
) -> Sidecar:
    plugins_dir = workdir / "plugins"
    plugins_dir.mkdir(parents=True, exist_ok=True)
    for module, lines in reqs.items():
        requirements(plugins_dir, module, *lines)
    return start_sidecar(
        workdir,
        plugins=plugins,
        active=list(plugins),
        args=[
            "--packages-dir",
            str(workdir / "packages"),
            "--packages-index-url",
            index.url,
            *extra,
        ],
    )


def plugin_info(sidecar: Sidecar, module: str) -> dict[str, Any]:
    return sidecar.plugins().get(module, {})


def refused_info(sidecar: Sidecar, module: str, *, timeout: float = 120) -> dict[str, Any]:
    """``GET /plugins``' entry of ``module`` once it is failed (waits for it)."""
    found: dict[str, Any] = wait_for(
        lambda: (info := plugin_info(sidecar, module)).get("state") == "failed" and info,
        timeout=timeout,
        what=f"{module} refused",
    )
    return found


def answers(sidecar: Sidecar, path: str) -> str | None:
    reply = sidecar.get(path, timeout=5)
    return reply.text if reply.status == 200 else None


def test_a_plugins_requirement_is_installed_and_imported(tmp_path: Path, index: PackageIndex) -> None:
    sidecar = start(tmp_path, index, {"usespkg": plugin("version")}, {"usespkg": ["lunatestpkg==1.0"]})
    try:
        wait_for(
            lambda: answers(sidecar, "/version") == "1.0", timeout=120, what="the plugin on lunatestpkg 1.0"
        )
        info = plugin_info(sidecar, "usespkg")
        assert info["state"] == "running"
        assert info["requirements"]["state"] == "installed", info
        assert index.requests["/simple/lunatestpkg/"] >= 1
    finally:
        sidecar.stop()


def test_a_changed_requirement_reloads_the_plugin_on_the_new_version(
    tmp_path: Path, index: PackageIndex
) -> None:
    sidecar = start(tmp_path, index, {"usespkg": plugin("version")}, {"usespkg": ["lunatestpkg==1.0"]})
    try:
        wait_for(lambda: answers(sidecar, "/version") == "1.0", timeout=120, what="version 1.0")
        requirements(tmp_path / "plugins", "usespkg", "lunatestpkg==2.0")
        wait_for(lambda: answers(sidecar, "/version") == "2.0", timeout=120, what="the reload on 2.0")
        assert plugin_info(sidecar, "usespkg")["requirements"]["state"] == "installed"
    finally:
        sidecar.stop()


def test_an_installed_set_is_reused_after_a_restart(tmp_path: Path, index: PackageIndex) -> None:
    reqs = {"usespkg": ["lunatestpkg==1.0"]}
    first = start(tmp_path, index, {"usespkg": plugin("version")}, reqs)
    try:
        wait_for(lambda: answers(first, "/version") == "1.0", timeout=120, what="the first install")
    finally:
        first.stop()
    asked = sum(index.requests.values())
    again = start(tmp_path, index, {"usespkg": plugin("version")}, reqs)
    try:
        wait_for(lambda: answers(again, "/version") == "1.0", timeout=60, what="the plugin after the restart")
        assert sum(index.requests.values()) == asked, "the index was asked again"
        assert "reusing the installed requirement set" in again.log()
    finally:
        again.stop()


def test_conflicting_requirements_refuse_the_later_plugin_only(tmp_path: Path, index: PackageIndex) -> None:
    sidecar = start(
        tmp_path,
        index,
        {"first": plugin("first"), "second": plugin("second")},
        {"first": ["lunatestpkg==1.0"], "second": ["lunatestpkg==2.0"]},
    )
    try:
        wait_for(lambda: answers(sidecar, "/first") == "1.0", timeout=120, what="the first plugin")
        second = refused_info(sidecar, "second")
        assert "conflict" in second["error"] and "first" in second["error"], second["error"]
        assert "lunatestpkg" in second["error"], second["error"]
        assert sidecar.get("/second").status == 404
    finally:
        sidecar.stop()


def test_a_plugin_cannot_replace_the_sidecars_own_packages(tmp_path: Path, index: PackageIndex) -> None:
    # aiohttp is the runtime's: its installed version is a constraint no plugin can change
    sidecar = start(tmp_path, index, {"downgrade": plugin("downgrade")}, {"downgrade": ["aiohttp<3"]})
    try:
        info = refused_info(sidecar, "downgrade")
        assert "the sidecar's own packages" in info["error"] and "aiohttp" in info["error"], info["error"]
    finally:
        sidecar.stop()


def test_an_index_that_is_down_is_reported_and_the_last_good_version_keeps_serving(
    tmp_path: Path, index: PackageIndex
) -> None:
    sidecar = start(tmp_path, index, {"usespkg": plugin("version")}, {"usespkg": ["lunatestpkg==1.0"]})
    try:
        wait_for(lambda: answers(sidecar, "/version") == "1.0", timeout=120, what="the first version")
        index.stop()
        requirements(tmp_path / "plugins", "usespkg", "lunatestpkg==2.0")
        info = wait_for(
            lambda: (found := plugin_info(sidecar, "usespkg")).get("failedCodeHash") and found,
            timeout=180,
            what="the update reported as failed",
        )
        assert "cannot be reached" in info["error"], info["error"]
        assert info["state"] == "running"
        assert answers(sidecar, "/version") == "1.0"
    finally:
        sidecar.stop()


def test_a_requirement_that_is_not_one_fails_only_its_plugin(tmp_path: Path, index: PackageIndex) -> None:
    sidecar = start(
        tmp_path,
        index,
        {"hostile": plugin("hostile"), "usespkg": plugin("version")},
        {"hostile": ["--index-url http://attacker.invalid/simple"], "usespkg": ["lunatestpkg==1.0"]},
    )
    try:
        wait_for(lambda: answers(sidecar, "/version") == "1.0", timeout=120, what="the good plugin")
        info = plugin_info(sidecar, "hostile")
        assert info["state"] == "failed" and "pip option" in info["error"], info
    finally:
        sidecar.stop()


def test_without_a_packages_dir_a_plugin_with_requirements_says_so(tmp_path: Path) -> None:
    plugins_dir = tmp_path / "plugins"
    plugins_dir.mkdir()
    requirements(plugins_dir, "usespkg", "lunatestpkg==1.0")
    sidecar = start_sidecar(tmp_path, plugins={"usespkg": plugin("version")}, active=["usespkg"])
    try:
        info = refused_info(sidecar, "usespkg", timeout=30)
        assert "--packages-dir" in info["error"], info
        assert json.dumps(info)  # the answer stays JSON
    finally:
        sidecar.stop()


def _env_dirs(workdir: Path) -> list[Path]:
    envs = workdir / "packages" / "envs"
    return sorted(path for path in envs.iterdir() if path.is_dir()) if envs.is_dir() else []


def test_an_environment_changed_on_disk_is_installed_again_not_trusted(
    tmp_path: Path, index: PackageIndex
) -> None:
    """A planted module, or a changed file, in an installed set: found by its manifest at the next
    start, and the set is installed afresh."""
    reqs = {"usespkg": ["lunatestpkg==1.0"]}
    first = start(tmp_path, index, {"usespkg": plugin("version")}, reqs)
    try:
        wait_for(lambda: answers(first, "/version") == "1.0", timeout=120, what="the first install")
    finally:
        first.stop()
    (env,) = _env_dirs(tmp_path)
    assert (env / ".manifest.json").exists()
    module = env / "lunatestpkg" / "__init__.py"
    assert not os.access(module, os.W_OK) or os.geteuid() == 0, "installed files are read-only"
    env.chmod(0o755)
    (env / "lunatestpkg").chmod(0o755)
    module.chmod(0o644)
    module.write_text('VERSION = "tampered"\n')
    (env / "planted.py").write_text("import os\n")
    again = start(tmp_path, index, {"usespkg": plugin("version")}, reqs)
    try:
        wait_for(lambda: answers(again, "/version") == "1.0", timeout=120, what="the set installed again")
        assert "is not as installed" in again.log()
        (env,) = _env_dirs(tmp_path)
        assert not (env / "planted.py").exists()
    finally:
        again.stop()


def test_a_wheel_that_would_overwrite_another_distributions_files_is_refused(
    tmp_path: Path, index: PackageIndex
) -> None:
    sidecar = start(
        tmp_path,
        index,
        {"first": plugin("first"), "squatter": plugin("squatter")},
        {"first": ["lunatestpkg==1.0"], "squatter": ["squatpkg==1.0"]},
    )
    try:
        wait_for(lambda: answers(sidecar, "/first") == "1.0", timeout=120, what="the first plugin")
        refused = refused_info(sidecar, "squatter")
        assert (
            "'squatpkg' would overwrite lunatestpkg/__init__.py of distribution 'lunatestpkg'"
            in refused["error"]
        )
    finally:
        sidecar.stop()


def test_a_plugin_whose_packages_pass_the_size_cap_is_refused_alone(
    tmp_path: Path, index: PackageIndex
) -> None:
    sidecar = start(
        tmp_path,
        index,
        {"small": plugin("small"), "big": plugin("big")},
        {"small": ["lunatestpkg==1.0"], "big": ["bigpkg==1.0"]},
        "--packages-max-bytes",
        "100000",
    )
    try:
        wait_for(lambda: answers(sidecar, "/small") == "1.0", timeout=120, what="the small plugin")
        refused = refused_info(sidecar, "big")
        assert "over --packages-max-bytes (100,000)" in refused["error"], refused["error"]
    finally:
        sidecar.stop()


def test_only_the_set_in_use_and_no_pip_cache_are_kept(tmp_path: Path, index: PackageIndex) -> None:
    sidecar = start(tmp_path, index, {"usespkg": plugin("version")}, {"usespkg": ["lunatestpkg==1.0"]})
    try:
        wait_for(lambda: answers(sidecar, "/version") == "1.0", timeout=120, what="version 1.0")
        (old,) = _env_dirs(tmp_path)
        requirements(tmp_path / "plugins", "usespkg", "lunatestpkg==2.0")
        wait_for(lambda: answers(sidecar, "/version") == "2.0", timeout=120, what="the reload on 2.0")
        (current,) = _env_dirs(tmp_path)
        assert current != old and not old.exists()
        assert not (tmp_path / "packages" / "pip-cache").exists()
    finally:
        sidecar.stop()


def test_with_hash_checking_only_the_pinned_wheel_is_installed(tmp_path: Path, index: PackageIndex) -> None:
    """The chart's default: what a pod installs is exactly what was reviewed. (One requirement set
    is checked as a whole: pip accepts a wheel whose hash any of its plugins pins.)"""
    digest = sha256_of(index.root / "files" / "lunatestpkg-1.0-py3-none-any.whl")
    pinned = start(
        tmp_path / "pinned",
        index,
        {"pinned": plugin("pinned")},
        {"pinned": [f"lunatestpkg==1.0 --hash=sha256:{digest}"]},
        "--packages-require-hashes",
        "true",
    )
    try:
        wait_for(lambda: answers(pinned, "/pinned") == "1.0", timeout=120, what="the pinned plugin")
    finally:
        pinned.stop()
    others = start(
        tmp_path / "others",
        index,
        {"unpinned": plugin("unpinned"), "forged": plugin("forged")},
        {"unpinned": ["lunatestpkg==1.0"], "forged": [f"lunatestpkg==1.0 --hash=sha256:{'0' * 64}"]},
        "--packages-require-hashes",
        "true",
    )
    try:
        for module in ("unpinned", "forged"):
            info = refused_info(others, module)
            assert "hash" in info["error"].lower(), info["error"]
        assert answers(others, "/unpinned") is None and answers(others, "/forged") is None
    finally:
        others.stop()
