"""The service client installs alone: its wheel, built from client/, goes into a fresh virtual
environment with aiohttp's wheels and nothing else; there it imports without the runtime's
packages and sends a point to a real sidecar process.

aiohttp's wheels come from a folder of this checkout (``.luna/wheels/client``, filled once from
pip's cache or the index, then used with ``--no-index``), so a rerun needs no network.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.support.sidecar_harness import Sidecar, wait_for

ROOT = Path(__file__).resolve().parents[2]
WHEELS = ROOT / ".luna" / "wheels" / "client"
PIP = (sys.executable, "-m", "pip", "--disable-pip-version-check", "--quiet")
#: what a service's environment must not need (the runtime's dependencies)
RUNTIME_ONLY = (
    "kopf",
    "kubernetes_asyncio",
    "uvloop",
    "httptools",
    "msgspec",
    "orjson",
    "yaml",
    "luna_sidecar",
)

SERVICE = """
import asyncio, importlib.util, json, sys
from importlib import metadata

import luna_plugins_client
import luna_plugins_client.asgi
from luna_plugins_client import SidecarSender

async def main():
    async with SidecarSender(sys.argv[1]) as sender:
        sender.add_point("requests", {"service": "standalone", "route": "GET:/a", "status_code": 200})
        flushed = await sender.flush(timeout=20)
    print(json.dumps({
        "flushed": flushed,
        "sent": sender.stats().points_sent,
        "client": luna_plugins_client.__file__,
        "importable": sorted(m for m in sys.argv[2:] if importlib.util.find_spec(m) is not None),
        "distributions": sorted(d.metadata["Name"].lower() for d in metadata.distributions()),
    }))

asyncio.run(main())
"""

RECORDER = """
from luna_plugins.base.plugins_meta.base_plugins import BaseEventPlugin

class Recorder(BaseEventPlugin):
    eventName = "monitoring_event"

    async def handleEvent(self, points, logger):
        for p in points:
            logger.info("seen %s from %s", p.series, p.tags.get("service"))
"""


def run(*argv: str | Path, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(arg) for arg in argv], capture_output=True, text=True, timeout=300, check=False, cwd=cwd
    )


def client_wheel(scratch: Path) -> Path:
    """The client's wheel, built from a copy of client/ (no build files left in the checkout)."""
    source = scratch / "client"
    shutil.copytree(
        ROOT / "client", source, ignore=shutil.ignore_patterns("__pycache__", "build", "*.egg-info")
    )
    built = run(*PIP, "wheel", "--no-deps", "--no-build-isolation", "--wheel-dir", scratch / "dist", source)
    assert built.returncode == 0, built.stderr
    (wheel,) = (scratch / "dist").glob("luna_plugins_client-*.whl")
    return wheel


def install(python: Path, wheel: Path) -> subprocess.CompletedProcess[str]:
    return run(*PIP, "--python", python, "install", "--no-index", "--find-links", WHEELS, wheel)


def test_the_client_installs_alone_and_sends_to_a_real_sidecar(
    sidecar_factory: Callable[..., Sidecar], tmp_path: Path
) -> None:
    wheel = client_wheel(tmp_path)
    with zipfile.ZipFile(wheel) as archive:
        metadata = archive.read(
            next(n for n in archive.namelist() if n.endswith(".dist-info/METADATA"))
        ).decode()
        packages = {name.split("/")[0] for name in archive.namelist()}
    required = [
        line.split(":", 1)[1].strip() for line in metadata.splitlines() if line.startswith("Requires-Dist:")
    ]
    assert [r for r in required if "extra ==" not in r] == ["aiohttp<4,>=3.9"]
    assert packages == {"luna_plugins_client", wheel.name.split("-")[0] + "-0.1.0.dist-info"}

    created = run(sys.executable, "-m", "venv", "--without-pip", tmp_path / "service")
    assert created.returncode == 0, created.stderr
    python = tmp_path / "service" / "bin" / "python"
    installed = install(python, wheel)
    if installed.returncode != 0:  # first run: aiohttp's wheels from pip's cache (or the index)
        WHEELS.mkdir(parents=True, exist_ok=True)
        fetched = run(*PIP, "download", "--dest", WHEELS, "--only-binary", ":all:", wheel)
        if fetched.returncode != 0:
            pytest.skip(f"aiohttp's wheels are neither in {WHEELS} nor reachable: {fetched.stderr[-500:]}")
        installed = install(python, wheel)
    assert installed.returncode == 0, installed.stderr

    sidecar = sidecar_factory(plugins={"recorder": RECORDER}, active=["recorder"])
    script = tmp_path / "service.py"
    script.write_text(SERVICE)
    result = run(python, "-I", script, sidecar.admin, *RUNTIME_ONLY, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["flushed"] and report["sent"] == 1
    assert report["client"].startswith(str(tmp_path / "service"))
    assert report["importable"] == []
    assert "luna-plugins" not in report["distributions"] and "kopf" not in report["distributions"]
    assert {"luna-plugins-client", "aiohttp"} <= set(report["distributions"])
    wait_for(
        lambda: "seen requests from standalone" in sidecar.log(), what="the sidecar's plugin to get the point"
    )
