"""A tiny package index for tests: wheels made on the spot, served as a PEP 503 "simple" index.

``make_wheel`` writes a pure-Python wheel of a one-module distribution (its module has
``VERSION``); ``PackageIndex`` serves the wheels of a folder on a loopback (or bridge) address
and counts the requests it answered, so a test can tell whether pip came back.
"""

from __future__ import annotations

import base64
import hashlib
import html
import threading
import zipfile
from collections import Counter
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from packaging.utils import canonicalize_name


def _record_hash(data: bytes) -> str:
    return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def make_wheel(
    folder: Path,
    name: str,
    version: str,
    *,
    requires: tuple[str, ...] = (),
    extra_files: dict[str, bytes] | None = None,
) -> Path:
    """A wheel of distribution ``name`` whose module ``name`` (dashes as underscores) has ``VERSION``,
    plus ``extra_files`` (path in the wheel -> content)."""
    module = name.replace("-", "_")
    dist_info = f"{module}-{version}.dist-info"
    files = {
        f"{module}/__init__.py": f'VERSION = "{version}"\n'.encode(),
        **(extra_files or {}),
        f"{dist_info}/METADATA": "".join(
            [f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n"]
            + [f"Requires-Dist: {requirement}\n" for requirement in requires]
        ).encode(),
        f"{dist_info}/WHEEL": (
            b"Wheel-Version: 1.0\nGenerator: luna-tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
        ),
    }
    record = "".join(f"{path},{_record_hash(data)},{len(data)}\n" for path, data in files.items())
    record += f"{dist_info}/RECORD,,\n"
    folder.mkdir(parents=True, exist_ok=True)
    wheel = folder / f"{module}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        for path, data in files.items():
            archive.writestr(path, data)
        archive.writestr(f"{dist_info}/RECORD", record)
    return wheel


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def write_simple_index(wheels: Path, root: Path) -> None:
    """PEP 503 pages under ``root/simple`` for the wheels in ``wheels`` (served from ``root``)."""
    projects: dict[str, list[Path]] = {}
    for wheel in sorted(wheels.glob("*.whl")):
        projects.setdefault(canonicalize_name(wheel.name.split("-")[0]), []).append(wheel)
    simple = root / "simple"
    simple.mkdir(parents=True, exist_ok=True)
    links = "".join(f'<a href="{name}/">{name}</a>\n' for name in sorted(projects))
    (simple / "index.html").write_text(f"<!DOCTYPE html><html><body>\n{links}</body></html>\n")
    for name, files in projects.items():
        page = simple / name
        page.mkdir(exist_ok=True)
        anchors = "".join(
            f'<a href="../../{html.escape(wheel.relative_to(root).as_posix())}#sha256={sha256_of(wheel)}">'
            f"{html.escape(wheel.name)}</a>\n"
            for wheel in files
        )
        (page / "index.html").write_text(f"<!DOCTYPE html><html><body>\n{anchors}</body></html>\n")


class PackageIndex:
    """Serves ``root`` (with ``root/simple`` and the wheels) over HTTP on ``host``."""

    def __init__(self, root: Path, host: str = "127.0.0.1") -> None:
        self.root = root
        self.host = host
        self.requests: Counter[str] = Counter()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.port = 0

    @property
    def url(self) -> str:
        """The index URL pip takes (``--index-url``)."""
        return f"http://{self.host}:{self.port}/simple/"

    def start(self) -> PackageIndex:
        requests, root = self.requests, str(self.root)

        class Handler(SimpleHTTPRequestHandler):
            def __init__(self, *args: Any, **kwargs: Any) -> None:
                super().__init__(*args, directory=root, **kwargs)

            def do_GET(self) -> None:
                requests[self.path.split("?")[0]] += 1
                super().do_GET()

            def log_message(self, format: str, *args: Any) -> None:
                """Quiet."""

        self._server = ThreadingHTTPServer((self.host, self.port), Handler)
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
