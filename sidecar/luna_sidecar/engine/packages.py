"""Plugins' own Python packages: installed by pip, off the event loop, into a folder per requirement set.

One process has one module namespace, so the requirements of all plugins of the service are
resolved together, in load order, into one *environment*: ``<packages dir>/envs/<key>``, where
``key`` hashes the requirements of every plugin, the index settings and the runtime's own pins.
An environment that is complete (``.complete``) is reused, also after a restart when the folder
is on a volume. While a set is installed the runtime keeps running what it runs; plugins whose
requirements are not installed yet wait (``installing``).

The runtime's own distributions are constraints (``name==version`` of everything installed
beside it): a plugin can neither replace nor upgrade them. When the whole set cannot be resolved,
plugins are added one at a time in load order, and each whose requirements make the set
unresolvable is refused with pip's message; the others are installed. Only wheels are
installed (``--only-binary :all:``): nothing is built, no setup script runs in the pod.

The environment is appended to ``sys.path``, after the runtime's own packages, so a plugin's
package never shadows one of the runtime's. A module a plugin already imported stays imported
from the environment it came from: a new version of an already imported package takes effect
at the next restart of the sidecar (``GET /plugins`` says so).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import importlib
import importlib.metadata
import json
import logging
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from packaging.utils import canonicalize_name

from luna_contract.requirements import project_names

log = logging.getLogger(__name__)

#: what pip prints when the requirements cannot be satisfied together
_CONFLICT_MARKERS = ("ResolutionImpossible", "conflicting dependencies", "Cannot install")
#: what pip prints when it cannot reach the index (then nothing is refused: it is tried again)
_NETWORK_MARKERS = (
    "NewConnectionError",
    "Max retries exceeded",
    "Could not fetch URL",
    "Failed to establish a new connection",
    "Connection refused",
    "Name or service not known",
    "Temporary failure in name resolution",
    "Read timed out",
    "CERTIFICATE_VERIFY_FAILED",
)
_RETRY_BACKOFF = (10.0, 30.0, 60.0, 120.0, 300.0)
_OUTPUT_TAIL = 2000


@dataclass(frozen=True)
class PackageSettings:
    """Where requirements are installed and where pip gets them from."""

    root: Path | None = None
    """folder of the environments (None: requirements cannot be installed)"""
    index_url: str | None = None
    extra_index_urls: tuple[str, ...] = ()
    find_links: Path | None = None
    """a wheelhouse folder: install from it only, never from an index"""
    ca_file: Path | None = None
    trusted_hosts: tuple[str, ...] = ()
    """hosts whose plain-HTTP index pip may use (pip ``--trusted-host``)"""
    timeout: float = 300.0
    require_hashes: bool = False
    max_bytes: int = 512 * 1024 * 1024
    """most bytes one requirement set may install; a plugin whose packages would go past it is
    refused (the others are installed)"""

    def pip_options(self) -> list[str]:
        """Index options of every pip command."""
        options: list[str] = []
        if self.find_links is not None:
            options += ["--no-index", "--find-links", str(self.find_links)]
        else:
            if self.index_url:
                options += ["--index-url", self.index_url]
            for url in self.extra_index_urls:
                options += ["--extra-index-url", url]
        if self.ca_file is not None:
            options += ["--cert", str(self.ca_file)]
        for host in self.trusted_hosts:
            options += ["--trusted-host", host]
        if self.require_hashes:
            options.append("--require-hashes")
        return options


@dataclass(frozen=True)
class Environment:
    """An installed requirement set: where it is and which plugins had to be left out."""

    path: Path
    refused: dict[str, str] = field(default_factory=dict)


@dataclass
class _Attempt:
    """The installation of one requirement set (running, failed, or done)."""

    key: str
    plugins: tuple[tuple[str, tuple[str, ...]], ...]
    task: asyncio.Task[None] | None = None
    environment: Environment | None = None
    error: str | None = None
    failures: int = 0
    retry_at: float = 0.0
    started: float = field(default_factory=time.time)


@dataclass(frozen=True)
class PackageStatus:
    """What the runtime needs to know about one plugin's requirements."""

    state: str
    """``none`` (no requirements), ``installed``, ``installing`` or ``failed``"""
    error: str | None = None
    environment: str | None = None

    @property
    def ready(self) -> bool:
        return self.state in ("none", "installed")


def runtime_constraints() -> list[str]:
    """``name==version`` of every distribution installed beside the runtime (pip's constraints)."""
    pins: dict[str, str] = {}
    for distribution in importlib.metadata.distributions():
        name = distribution.metadata["Name"]
        if name and distribution.version:
            pins.setdefault(name.lower(), f"{name}=={distribution.version}")
    return sorted(pins.values())


def set_key(
    plugins: Sequence[tuple[str, tuple[str, ...]]], settings: PackageSettings, constraints: Sequence[str]
) -> str:
    """The identity of a requirement set: what is asked, from where, under which pins."""
    digest = hashlib.sha256()
    digest.update(json.dumps([list(plugins), settings.pip_options(), list(constraints)]).encode())
    return digest.hexdigest()[:16]


def _tail(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    useful = [
        line for line in lines if line.startswith(("ERROR", "WARNING", "  ", "The conflict", "To fix"))
    ] or lines
    joined = "\n".join(useful)
    return joined[-_OUTPUT_TAIL:]


class PackageManager:
    """Installs the requirement sets the runtime asks for, one at a time, in the background.

    ``status(plugins)`` answers at once; when the set is new it starts installing it and calls
    ``on_done`` (on the event loop) when that ends, so the runtime can try again.
    """

    def __init__(
        self,
        settings: PackageSettings,
        *,
        on_done: Callable[[], None] | None = None,
        python: str = sys.executable,
    ) -> None:
        self.settings = settings
        self.on_done = on_done
        self.python = python
        self._constraints = runtime_constraints()
        self._current: _Attempt | None = None
        self._active_paths: list[str] = []
        self._native: set[str] = set()
        self._retry: asyncio.TimerHandle | None = None

    # --- what the runtime asks --------------------------------------------------------------

    def status(self, plugins: Sequence[tuple[str, tuple[str, ...]]]) -> dict[str, PackageStatus]:
        """Each plugin's requirement status for the set ``plugins`` ((module, requirements) in
        load order); starts installing the set when it is new. Never blocks."""
        wanted = tuple((module, reqs) for module, reqs in plugins if reqs)
        result = {module: PackageStatus("none") for module, _ in plugins}
        if not wanted:
            return result
        if self.settings.root is None:
            error = (
                "this sidecar installs no packages (no --packages-dir; with the chart: no "
                "sidecar.packages.indexUrl or wheelhouse): bake them into the image, or name an index"
            )
            return result | {module: PackageStatus("failed", error) for module, _ in wanted}
        key = set_key(wanted, self.settings, self._constraints)
        attempt = self._current
        if attempt is None or attempt.key != key:
            attempt = self._start(key, wanted)
        elif attempt.environment is None and attempt.task is None and time.monotonic() >= attempt.retry_at:
            self._launch(attempt)
        for module, _ in wanted:
            result[module] = self._module_status(attempt, module)
        return result

    def _module_status(self, attempt: _Attempt, module: str) -> PackageStatus:
        environment = attempt.environment
        if environment is not None:
            if module in environment.refused:
                return PackageStatus("failed", environment.refused[module], attempt.key)
            return PackageStatus("installed", environment=attempt.key)
        if attempt.task is not None:
            return PackageStatus("installing", environment=attempt.key)
        return PackageStatus("failed", attempt.error or "not installed", attempt.key)

    def _start(self, key: str, plugins: tuple[tuple[str, tuple[str, ...]], ...]) -> _Attempt:
        if self._current is not None and self._current.task is not None:
            self._current.task.cancel()  # a newer set supersedes the one being installed
        if self._retry is not None:
            self._retry.cancel()
            self._retry = None
        attempt = _Attempt(key, plugins)
        self._current = attempt
        cached = self._cached(key)
        if cached is not None:
            attempt.environment = cached
            self._activate(cached)
        else:
            self._launch(attempt)
        return attempt

    def _launch(self, attempt: _Attempt) -> None:
        attempt.task = asyncio.create_task(self._install(attempt), name=f"luna-packages-{attempt.key}")

    # --- installing --------------------------------------------------------------------------

    def _env_dir(self, key: str) -> Path:
        assert self.settings.root is not None
        return self.settings.root / "envs" / key

    def _cached(self, key: str) -> Environment | None:
        folder = self._env_dir(key)
        marker = folder / ".complete"
        try:
            refused = json.loads(marker.read_text()).get("refused", {})
        except (OSError, ValueError, AttributeError):
            return None
        problem = verify_manifest(folder)
        if problem is not None:
            log.warning(
                "the installed requirement set %s is not as installed (%s): installing it again", key, problem
            )
            remove_tree(folder)
            return None
        log.info("reusing the installed requirement set %s", key)
        self._remove_others(key)
        return Environment(folder, {str(k): str(v) for k, v in dict(refused).items()})

    def _remove_others(self, key: str) -> None:
        """Remove every environment but ``key``'s, and pip's cache: only the set in use is kept."""
        assert self.settings.root is not None
        envs = self.settings.root / "envs"
        with contextlib.suppress(OSError):
            for entry in envs.iterdir():
                if entry.name != key and entry.is_dir():
                    remove_tree(entry)
        remove_tree(self.settings.root / "pip-cache")

    async def _install(self, attempt: _Attempt) -> None:
        started = time.monotonic()
        try:
            environment = await asyncio.wait_for(self._resolve_and_install(attempt), self.settings.timeout)
        except TimeoutError:
            self._failed(
                attempt, f"installing requirements did not finish within {self.settings.timeout:g} s"
            )
        except asyncio.CancelledError:
            attempt.task = None
            raise
        except InstallError as exc:
            self._failed(attempt, str(exc))
        else:
            attempt.environment = environment
            attempt.task = None
            self._activate(environment)
            log.info(
                "requirement set %s installed in %.1f s%s",
                attempt.key,
                time.monotonic() - started,
                f"; refused: {sorted(environment.refused)}" if environment.refused else "",
            )
        if self.on_done is not None and self._current is attempt:
            self.on_done()

    def _failed(self, attempt: _Attempt, error: str) -> None:
        attempt.task = None
        attempt.error = f"requirements not installed: {error}"
        delay = _RETRY_BACKOFF[min(attempt.failures, len(_RETRY_BACKOFF) - 1)]
        attempt.failures += 1
        attempt.retry_at = time.monotonic() + delay
        log.error("requirement set %s: %s (retrying in %g s)", attempt.key, error, delay)
        loop = asyncio.get_running_loop()
        self._retry = loop.call_later(delay, self._retry_now, attempt)

    def _retry_now(self, attempt: _Attempt) -> None:
        self._retry = None
        if self._current is attempt and attempt.environment is None and attempt.task is None:
            self._launch(attempt)

    async def _resolve_and_install(self, attempt: _Attempt) -> Environment:
        """Resolve the set against the runtime's environment (what it has counts as installed),
        refuse the plugins that make it unresolvable, install what is missing into a new folder."""
        assert self.settings.root is not None
        (self.settings.root / "envs").mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix=".work-", dir=self.settings.root) as scratch:
            work = Path(scratch)
            (work / "constraints.txt").write_text("".join(f"{pin}\n" for pin in self._constraints))
            plugins, lasting = attempt.plugins, True
            refused: dict[str, str] = {}
            outcome = await self._resolve(work, plugins)
            if isinstance(outcome, PipFailure):
                if outcome.kind == "network":
                    raise InstallError(outcome.message)
                plugins, refused, lasting = await self._attribute(work, plugins)
                outcome = await self._resolved(work, plugins)
            cap = self.settings.max_bytes
            staging = await self._install_into(work, outcome)
            installed = installed_files(staging)
            if not installed.fits(cap):
                # refuse, in load order, the plugins whose packages overwrite another's files or
                # go past the size cap; install what the others need
                plugins, more = await self._fit(work, plugins, installed)
                refused |= more
                remove_tree(staging)
                staging = await self._install_into(work, await self._resolved(work, plugins))
                installed = installed_files(staging)
                if not installed.fits(cap):
                    raise InstallError(installed.describe(cap))
            write_manifest(staging)
            if lasting:  # a refusal that may pass (a version not on the index yet) is not kept
                (staging / ".complete").write_text(json.dumps({"refused": refused, "plugins": plugins}))
            final = self._env_dir(attempt.key)
            if final.exists():
                remove_tree(final)
            staging.rename(final)
            make_read_only(final)
            self._remove_others(attempt.key)
            return Environment(final, refused)

    async def _resolved(self, work: Path, plugins: Sequence[tuple[str, tuple[str, ...]]]) -> list[str]:
        """:meth:`_resolve` of a set expected to resolve; raises :class:`InstallError` if not."""
        outcome = await self._resolve(work, plugins)
        if isinstance(outcome, PipFailure):
            raise InstallError(outcome.message)
        return outcome

    async def _install_into(self, work: Path, pins: list[str]) -> Path:
        staging = work / "env"
        staging.mkdir()
        if pins:
            failure = await self._pip(work, self._install_command(work, pins, staging))
            if failure is not None:
                raise InstallError(failure.message)
        return staging

    async def _fit(
        self, work: Path, plugins: tuple[tuple[str, tuple[str, ...]], ...], installed: InstalledFiles
    ) -> tuple[tuple[tuple[str, tuple[str, ...]], ...], dict[str, str]]:
        """Plugins in load order, each accepted when what it needs, with what the ones before it
        need, neither overlaps nor goes past the size cap; the others refused with the reason."""
        accepted: list[tuple[str, tuple[str, ...]]] = []
        refused: dict[str, str] = {}
        needed: set[str] = set()
        cap = self.settings.max_bytes
        for plugin in plugins:
            alone = await self._resolve(work, (plugin,))
            names = (
                {canonicalize_name(pin.split("==")[0]) for pin in alone} if isinstance(alone, list) else set()
            )
            together = needed | names
            clash = next(
                (o for o in installed.overlaps if o.first in together and o.second in together), None
            )
            size = sum(installed.sizes.get(name, 0) for name in together)
            if clash is not None:
                refused[plugin[0]] = (
                    f"requirements refused: distribution {clash.second!r} would overwrite {clash.path} of "
                    f"distribution {clash.first!r}"
                )
            elif size > cap:
                refused[plugin[0]] = (
                    f"requirements refused: with them the service's packages would take {size:,} bytes, "
                    f"over --packages-max-bytes ({cap:,})"
                )
            else:
                accepted.append(plugin)
                needed = together
        return tuple(accepted), refused

    async def _attribute(
        self, work: Path, plugins: tuple[tuple[str, tuple[str, ...]], ...]
    ) -> tuple[tuple[tuple[str, tuple[str, ...]], ...], dict[str, str], bool]:
        """Add plugins one at a time in load order; refuse each that makes the set unresolvable.
        Returns the accepted plugins, the refused ones with pip's reason, and whether every
        refusal is a conflict (which the same index will always give again)."""
        accepted: list[tuple[str, tuple[str, ...]]] = []
        refused: dict[str, str] = {}
        lasting = True
        for plugin in plugins:
            outcome = await self._resolve(work, (*accepted, plugin))
            if not isinstance(outcome, PipFailure):
                accepted.append(plugin)
                continue
            if outcome.kind == "network":
                raise InstallError(outcome.message)
            lasting = lasting and outcome.kind == "conflict"
            if outcome.kind != "conflict":
                refused[plugin[0]] = f"requirements cannot be installed: {outcome.message}"
                continue
            alone = await self._resolve(work, (plugin,)) if accepted else outcome
            if isinstance(alone, PipFailure):
                pins = self._pins_of(plugin[1])
                having = f" (it has {', '.join(pins)})" if pins else ""
                refused[plugin[0]] = (
                    f"requirements conflict with the sidecar's own packages{having}: {alone.message}"
                )
            else:
                others = ", ".join(module for module, _ in accepted)
                refused[plugin[0]] = f"requirements conflict with those of {others}: {outcome.message}"
        return tuple(accepted), refused, lasting

    async def _resolve(
        self, work: Path, plugins: Sequence[tuple[str, tuple[str, ...]]]
    ) -> list[str] | PipFailure:
        """pip's resolution of ``plugins`` in the runtime's environment: the distributions to
        install (``name==version`` lines, with hashes when pinned), or why it failed."""
        requirements = work / "requirements.txt"
        requirements.write_text("".join(f"{req}\n" for _, reqs in plugins for req in reqs))
        report = work / "report.json"
        command = self._pip_command(work, "-r", str(requirements), "--dry-run", "--report", str(report))
        failure = await self._pip(work, command)
        if failure is not None:
            return failure
        try:
            items = json.loads(report.read_text()).get("install", [])
        except (OSError, ValueError) as exc:
            return PipFailure("other", f"pip wrote no usable report: {exc}")
        pins = []
        for item in items:
            metadata = item.get("metadata", {})
            line = f"{metadata.get('name')}=={metadata.get('version')}"
            digest = item.get("download_info", {}).get("archive_info", {}).get("hashes", {}).get("sha256")
            if self.settings.require_hashes and digest:
                line += f" --hash=sha256:{digest}"
            pins.append(line)
        return pins

    def _pins_of(self, requirements: tuple[str, ...]) -> list[str]:
        """The runtime's own pins of the distributions ``requirements`` name."""
        names = project_names(requirements)
        return [pin for pin in self._constraints if canonicalize_name(pin.split("==")[0]) in names]

    def _install_command(self, work: Path, pins: list[str], target: Path) -> list[str]:
        """Install exactly the resolved distributions, nothing else (their dependencies were
        resolved already: the runtime's own count as installed and are not copied)."""
        resolved = work / "resolved.txt"
        resolved.write_text("".join(f"{pin}\n" for pin in pins))
        return self._pip_command(
            work,
            "-r",
            str(resolved),
            "--no-deps",
            "--target",
            str(target),
            "--no-compile",
            "--no-warn-script-location",
        )

    def _pip_command(self, work: Path, *arguments: str) -> list[str]:
        return [
            self.python,
            "-m",
            "pip",
            "install",
            # the sidecar's settings are the whole configuration: no pip.conf, no PIP_* variables
            "--isolated",
            "--disable-pip-version-check",
            "--no-input",
            "--quiet",
            # wheels only: nothing is built and no setup script runs in the pod
            "--only-binary",
            ":all:",
            "--cache-dir",
            str(work.parent / "pip-cache"),
            "-c",
            str(work / "constraints.txt"),
            *self.settings.pip_options(),
            *arguments,
        ]

    async def _pip(self, work: Path, command: list[str]) -> PipFailure | None:
        """Run pip (killed when cancelled); None on success, else what went wrong."""
        env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1", "TMPDIR": str(work)}
        process = await asyncio.create_subprocess_exec(
            *command, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, env=env
        )
        try:
            output, _ = await process.communicate()
        except asyncio.CancelledError:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            await process.wait()
            raise
        if process.returncode == 0:
            return None
        return PipFailure.of(output.decode(errors="replace"), process.returncode)

    # --- using --------------------------------------------------------------------------------

    def _activate(self, environment: Environment) -> None:
        """Make ``environment`` importable, after the runtime's own packages, instead of the set
        before it: its pure-Python modules are forgotten, so plugins loaded from now on import
        the new versions (plugins still running keep the modules they have). A native extension
        cannot be loaded twice: it stays, and ``describe`` says a restart would update it."""
        path = str(environment.path)
        if path in sys.path:
            return
        for old in self._active_paths:
            with contextlib.suppress(ValueError):
                sys.path.remove(old)
            self._forget_modules_from(old)
        self._active_paths = [path]
        sys.path.append(path)
        importlib.invalidate_caches()

    def _forget_modules_from(self, folder: str) -> None:
        prefix = folder + os.sep
        for name, module in list(sys.modules.items()):
            origin = getattr(module, "__file__", None) or ""
            if not origin.startswith(prefix):
                continue
            if origin.endswith((".so", ".pyd")):
                self._native.add(name)
            else:
                del sys.modules[name]

    def describe(self) -> dict[str, object]:
        """The requirement set being installed or in use, for ``GET /plugins``."""
        attempt = self._current
        if attempt is None:
            return {"state": "none"}
        state = "installed" if attempt.environment else ("installing" if attempt.task else "failed")
        return {
            "state": state,
            "set": attempt.key,
            "error": attempt.error if state == "failed" else None,
            # native extensions of an older set still loaded: a restart loads the current ones
            "restartToUpdate": sorted(self._native),
        }

    async def close(self) -> None:
        """Stop an installation under way (pip is killed)."""
        if self._retry is not None:
            self._retry.cancel()
        attempt = self._current
        if attempt is not None and attempt.task is not None:
            attempt.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await attempt.task


class InstallError(RuntimeError):
    """The set could not be installed for now (index unreachable, pip failed); retried later."""


@dataclass(frozen=True)
class PipFailure:
    """Why pip failed: ``conflict`` (unresolvable together), ``network`` (the index could not be
    reached: try again later) or ``other`` (e.g. no such distribution on the index)."""

    kind: str
    message: str

    @classmethod
    def of(cls, output: str, code: int | None) -> PipFailure:
        message = _tail(output) or f"pip exited with {code}"
        if any(marker in output for marker in _NETWORK_MARKERS):
            return cls("network", f"the package index cannot be reached: {message}")
        if "is not a trusted or secure host" in output:
            return cls(
                "network",
                "the package index is plain HTTP on a host pip does not trust: use HTTPS, or list the "
                f"host in --packages-trusted-hosts: {message}",
            )
        if any(marker in output for marker in _CONFLICT_MARKERS):
            return cls("conflict", message)
        return cls("other", message)


MANIFEST = ".manifest.json"


@dataclass(frozen=True)
class Overlap:
    """A file that two distributions of one environment both ship."""

    path: str
    first: str
    second: str


@dataclass(frozen=True)
class InstalledFiles:
    """What the wheels of an environment put there: bytes per distribution, shared files."""

    sizes: dict[str, int]
    overlaps: tuple[Overlap, ...]

    @property
    def total(self) -> int:
        return sum(self.sizes.values())

    def fits(self, cap: int) -> bool:
        """No file shipped twice, and no more than ``cap`` bytes."""
        return not self.overlaps and self.total <= cap

    def describe(self, cap: int) -> str:
        if self.overlaps:
            o = self.overlaps[0]
            return f"distribution {o.second!r} would overwrite {o.path} of distribution {o.first!r}"
        return f"the packages would take {self.total:,} bytes, over --packages-max-bytes ({cap:,})"


def installed_files(folder: Path) -> InstalledFiles:
    """Read every ``*.dist-info/RECORD`` of ``folder``: sizes per distribution (canonical name)
    and the files more than one distribution lists."""
    owner: dict[str, str] = {}
    sizes: dict[str, int] = {}
    overlaps: list[Overlap] = []
    for record in sorted(folder.glob("*.dist-info/RECORD")):
        name = canonicalize_name(record.parent.name[: -len(".dist-info")].rsplit("-", 1)[0])
        total = 0
        try:
            lines = record.read_text(errors="replace").splitlines()
        except OSError:
            continue
        for line in lines:
            fields = line.rsplit(",", 2)
            if len(fields) != 3:
                continue
            path, _, size = fields
            if size.isdigit():
                total += int(size)
            if ".dist-info/" in path:
                continue  # each distribution's own metadata
            path = os.path.normpath(path)
            first = owner.setdefault(path, name)
            if first != name:
                overlaps.append(Overlap(path, first, name))
        sizes[name] = total
    return InstalledFiles(sizes, tuple(overlaps))


def _digest(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _files(folder: Path) -> dict[str, Path]:
    found: dict[str, Path] = {}
    for base, directories, names in os.walk(folder):
        directories.sort()
        for name in names:
            path = Path(base) / name
            relative = path.relative_to(folder).as_posix()
            if relative not in (MANIFEST, ".complete"):
                found[relative] = path
    return found


def write_manifest(folder: Path) -> None:
    """Record the SHA-256 of every file of an environment (checked before it is used again)."""
    files = {relative: _digest(path) for relative, path in sorted(_files(folder).items())}
    (folder / MANIFEST).write_text(json.dumps({"files": files}))


def verify_manifest(folder: Path) -> str | None:
    """None when ``folder`` holds exactly the files its manifest names, with their hashes; else
    what differs."""
    try:
        expected = json.loads((folder / MANIFEST).read_text())["files"]
    except (OSError, ValueError, KeyError, TypeError):
        return "no manifest"
    if not isinstance(expected, dict):
        return "no manifest"
    present = _files(folder)
    added = sorted(set(present) - set(expected))
    missing = sorted(set(expected) - set(present))
    if added or missing:
        return f"{len(added)} file(s) added, {len(missing)} missing, e.g. {(added or missing)[0]}"
    for relative, path in present.items():
        try:
            if _digest(path) != expected[relative]:
                return f"{relative} changed"
        except OSError as exc:
            return f"{relative}: {exc.strerror or exc}"
    return None


def make_read_only(folder: Path) -> None:
    """Files 0444 and folders 0555: code of the same user must make them writable on purpose."""
    for base, directories, names in os.walk(folder):
        for name in names:
            with contextlib.suppress(OSError):
                os.chmod(Path(base) / name, 0o444)
        for name in directories:
            with contextlib.suppress(OSError):
                os.chmod(Path(base) / name, 0o555)
    with contextlib.suppress(OSError):
        os.chmod(folder, 0o555)


def remove_tree(folder: Path) -> None:
    """Remove ``folder`` and everything in it, read-only parts included (missing: nothing)."""
    if not folder.exists():
        return
    for base, directories, _ in os.walk(folder):
        for name in directories:
            with contextlib.suppress(OSError):
                os.chmod(Path(base) / name, 0o755)
    with contextlib.suppress(OSError):
        os.chmod(folder, 0o755)
    shutil.rmtree(folder, ignore_errors=True)
