"""``luna-cluster image``: build the project's Dockerfile and hand the image to the node.

The build is the one a user runs (``docker build .``) with two build arguments where this machine
needs them: ``WHEELS=wheelhouse`` (the wheels are built on the host first, so no build step needs
the network: ``docker build --network none``), and ``BASE_IMAGE`` when ``python:3.11-slim`` can be
neither found nor pulled: then a base made from Debian's own packages (bookworm and its Python
3.11, by ``debootstrap``) is used, cached under the user cache directory and rebuilt only when its
recipe changes.

The container engine is the user's Docker when ``docker info`` answers; else, as root with
``dockerd`` installed, a private daemon of the cluster's state directory (no bridge, no firewall
rules of its own, images kept in the user cache directory), stopped by ``cluster down``.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import zipfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from . import procs, tools
from .launch import spawn, wait_until
from .state import ClusterError, StateDir

UPSTREAM_BASE = "python:3.11-slim"
DEFAULT_TAG = "luna-plugins:dev"
#: the base image recipe: Debian release, variant and packages; its hash names the image
BASE_SUITE = "bookworm"
BASE_PACKAGES = ("python3", "python3-venv", "ca-certificates")
BASE_RECIPE_VERSION = "1"
DEFAULT_MIRROR = "http://deb.debian.org/debian"
#: where a private Docker daemon listens (one per machine; its owner is the state dir that started it)
PRIVATE_DOCKER_DIR = Path("/run/luna-plugins/docker")


class ImageError(ClusterError):
    """The image could not be built or imported; the message says why."""


class EngineUnavailableError(ImageError):
    """No container engine can build here (no Docker and no dockerd to start); the CLI exits 2."""


@dataclass(frozen=True)
class Engine:
    """A Docker engine to talk to: the ``docker`` CLI and the environment that reaches the daemon."""

    cli: str
    env: dict[str, str]
    #: the buildx plugin is there (BuildKit); otherwise the classic builder is used
    buildkit: bool
    #: the private daemon (its images are all ours: dangling ones may be pruned)
    private: bool = False

    def run(
        self, *args: str, timeout: float = 600, check: bool = True, input: bytes | None = None
    ) -> subprocess.CompletedProcess[bytes]:
        result = subprocess.run(
            [self.cli, *args], env=self.env, capture_output=True, timeout=timeout, check=False, input=input
        )
        if check and result.returncode != 0:
            raise ImageError(
                f"`docker {' '.join(args)}` failed: {result.stderr.decode(errors='replace').strip()}"
            )
        return result


# --- the engine -----------------------------------------------------------------------------------


def engine_answers(cli: str, env: dict[str, str]) -> bool:
    try:
        return (
            subprocess.run([cli, "info"], env=env, capture_output=True, timeout=20, check=False).returncode
            == 0
        )
    except subprocess.TimeoutExpired:
        return False


def _private_env(base: dict[str, str]) -> dict[str, str]:
    env = dict(base)
    env["DOCKER_HOST"] = f"unix://{PRIVATE_DOCKER_DIR / 'docker.sock'}"
    return env


def with_builder(cli: str, env: dict[str, str], *, private: bool = False) -> Engine:
    buildx = (
        subprocess.run([cli, "buildx", "version"], env=env, capture_output=True, check=False).returncode == 0
    )
    if not buildx:
        env = {**env, "DOCKER_BUILDKIT": "0"}
    return Engine(cli, env, buildkit=buildx, private=private)


def find_engine(
    state: StateDir,
    purpose: str,
    private: dict[str, str],
    start: Callable[[str], tuple[str, subprocess.Popen[bytes]]],
) -> Engine:
    """The user's Docker if ``docker info`` answers; else the private daemon that the environment
    ``private`` reaches, if it answers; else the one ``start(dockerd)`` starts (it returns the name
    its pid file and log go under, and the process), once it answers. Raises
    :class:`EngineUnavailableError`, naming ``purpose``, when no engine can be had (no Docker CLI or
    dockerd, or not root)."""
    cli = shutil.which("docker")
    env = dict(os.environ)
    if cli and engine_answers(cli, env):
        return with_builder(cli, env)
    if cli and engine_answers(cli, private):
        return with_builder(cli, private, private=True)
    dockerd = shutil.which("dockerd")
    if cli is None or dockerd is None:
        raise EngineUnavailableError(
            f"{purpose} needs a container engine: no Docker daemon answers and dockerd is not "
            "installed (apt-get install docker.io)"
        )
    if os.geteuid() != 0:
        raise EngineUnavailableError(
            f"{purpose} needs a container engine: no Docker daemon answers, and starting one needs root"
        )
    name, process = start(dockerd)
    wait_until("dockerd to answer", lambda: engine_answers(cli, private), state, name, process, 120)
    return with_builder(cli, private, private=True)


def spawn_private_dockerd(
    state: StateDir, name: str, dockerd: str, directory: Path, data_root: Path, *extra: str
) -> subprocess.Popen[bytes]:
    """Start a Docker daemon of ours, logged and pid-filed under ``name``: its socket and runtime
    state in ``directory``, its images in ``data_root``; it changes nothing on this machine's
    network (no bridge, no NAT, no firewall rules, no forwarding changes). ``extra`` flags follow."""
    directory.mkdir(parents=True, exist_ok=True)
    return spawn(
        state,
        name,
        [
            dockerd,
            f"--host=unix://{directory / 'docker.sock'}",
            f"--data-root={data_root}",
            f"--exec-root={directory / 'exec'}",
            f"--pidfile={state.run / f'{name}.own.pid'}",
            "--bridge=none",
            "--iptables=false",
            "--ip-forward=false",
            "--ip-masq=false",
            "--storage-driver=overlay2",
            *extra,
        ],
    )


def engine(state: StateDir, out: TextIO) -> Engine:
    """The user's Docker if it answers; else a private ``dockerd`` started for ``state``."""

    def start(dockerd: str) -> tuple[str, subprocess.Popen[bytes]]:
        print("starting a private Docker daemon for image builds", file=out, flush=True)
        data_root = tools.cache_root() / "docker"
        return "dockerd", spawn_private_dockerd(state, "dockerd", dockerd, PRIVATE_DOCKER_DIR, data_root)

    return find_engine(state, "image", _private_env(dict(os.environ)), start)


# --- the base image -------------------------------------------------------------------------------


def base_recipe_hash(mirror: str) -> str:
    """Hash of everything that makes the local base image what it is."""
    recipe = "\n".join((BASE_RECIPE_VERSION, BASE_SUITE, "minbase", mirror, *BASE_PACKAGES))
    return hashlib.sha256(recipe.encode()).hexdigest()[:12]


def _has_image(docker: Engine, reference: str) -> bool:
    return find_image_id(docker, reference) is not None


@contextlib.contextmanager
def _progress(label: str, out: TextIO, interval: float = 15.0) -> Iterator[None]:
    """Print ``label`` and the elapsed time every ``interval`` seconds while the caller works."""
    stop = threading.Event()
    started = time.monotonic()

    def report() -> None:
        while not stop.wait(interval):
            print(f"  ... {label}: {time.monotonic() - started:.0f}s elapsed", file=out, flush=True)

    thread = threading.Thread(target=report, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def run_logged(
    argv: list[str], log: Path, label: str, out: TextIO, env: dict[str, str] | None = None
) -> None:
    """Run ``argv`` with its output in ``log``; progress on ``out``; :class:`ImageError` with the tail."""
    with _progress(label, out), log.open("ab") as handle:
        handle.write(f"\n=== {time.strftime('%Y-%m-%dT%H:%M:%S')} {' '.join(argv)}\n".encode())
        handle.flush()
        code = subprocess.run(argv, stdout=handle, stderr=subprocess.STDOUT, env=env, check=False).returncode
    if code != 0:
        raise ImageError(f"{label} failed (exit {code}); last lines of {log}:\n{procs.log_tail(log)}")


def debootstrap_root(
    debootstrap: str,
    suite: str,
    packages: Sequence[str],
    root: Path,
    mirror: str,
    log: Path,
    out: TextIO,
) -> None:
    """A minimal Debian ``suite`` with ``packages`` in ``root``, from ``mirror`` (the output in
    ``log``), without the package lists, caches and logs that are not part of an image."""
    run_logged(
        [debootstrap, "--variant=minbase", f"--include={','.join(packages)}", suite, str(root), mirror],
        log,
        "debootstrap",
        out,
    )
    for leftover in ("var/lib/apt/lists", "var/cache/apt", "var/log"):
        for entry in (root / leftover).glob("*"):
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                entry.unlink(missing_ok=True)


def local_base(docker: Engine, out: TextIO) -> str:
    """The base image made from Debian's packages: reused, imported from the cache, or built."""
    mirror = os.environ.get("LUNA_DEBIAN_MIRROR", DEFAULT_MIRROR)
    key = base_recipe_hash(mirror)
    reference = f"luna-plugins-base:{BASE_SUITE}-{key}"
    if _has_image(docker, reference):
        return reference
    cache = tools.cache_root() / "base"
    cache.mkdir(parents=True, exist_ok=True)
    archive = cache / f"{BASE_SUITE}-{key}.tar"
    log = tools.cache_root() / "logs" / f"base-{BASE_SUITE}-{key}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    if not archive.is_file():
        debootstrap = shutil.which("debootstrap")
        if debootstrap is None or os.geteuid() != 0:
            raise ImageError(
                f"no base image: {UPSTREAM_BASE} cannot be pulled, and building one from Debian's packages "
                "needs root and debootstrap (apt-get install debootstrap)"
            )
        print(
            f"building the base image {reference} from Debian {BASE_SUITE} packages (~2 min)",
            file=out,
            flush=True,
        )
        with tempfile.TemporaryDirectory(prefix="base-", dir=cache) as scratch:
            root = Path(scratch) / "root"
            debootstrap_root(debootstrap, BASE_SUITE, BASE_PACKAGES, root, mirror, log, out)
            staging = archive.with_suffix(".tmp")
            run_logged(
                ["tar", "--numeric-owner", "-C", str(root), "-cf", str(staging), "."],
                log,
                "packing the base",
                out,
            )
            staging.replace(archive)
    docker.run(
        "import",
        "--change",
        'CMD ["python3"]',
        "--change",
        "ENV LANG=C.UTF-8",
        str(archive),
        reference,
        timeout=600,
    )
    return reference


def choose_base(docker: Engine, requested: str | None, out: TextIO) -> str | None:
    """The ``BASE_IMAGE`` build argument: ``None`` keeps the Dockerfile's default."""
    if requested == "local":
        return local_base(docker, out)
    if requested:
        return requested
    if _has_image(docker, UPSTREAM_BASE):
        return None
    if docker.run("pull", UPSTREAM_BASE, check=False, timeout=300).returncode == 0:
        return None
    print(
        f"{UPSTREAM_BASE} cannot be pulled here; using a base made from Debian's packages",
        file=out,
        flush=True,
    )
    return local_base(docker, out)


# --- the project image ----------------------------------------------------------------------------


#: ``pip wheel`` as the image's wheels are built
PIP_WHEEL = (sys.executable, "-m", "pip", "wheel", "--disable-pip-version-check")


def harness_files(wheel: Path) -> list[str]:
    """The files of this harness's package that ``wheel`` holds: none in the product's wheel (the
    harness is a distribution of its own, never installed in the image)."""
    package = __name__.partition(".")[0]
    with zipfile.ZipFile(wheel) as archive:
        return [name for name in archive.namelist() if name.partition("/")[0] == package]


def project_wheel(context: Path, dest: Path, log: Path, out: TextIO) -> Path:
    """The wheel of the project in ``context`` alone (no dependencies), built into ``dest``, which
    holds no other wheel; returns its path.

    setuptools builds in ``context/build`` and packs everything ``build/lib`` holds, what an earlier
    build left there included (such as this harness, packaged with the product before it was a
    distribution of its own). So the build gets a build directory of its own, through the extra
    configuration file setuptools reads (``DIST_EXTRA_CONFIG``): the wheel holds what the project's
    ``pyproject.toml`` packages, and nothing else."""
    dest.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="wheel-build-") as scratch:
        config = Path(scratch) / "build.cfg"
        config.write_text(f"[build]\nbuild_base = {Path(scratch) / 'build'}\n")
        run_logged(
            [*PIP_WHEEL, "--no-deps", "--wheel-dir", str(dest), str(context)],
            log,
            "building the project's wheel",
            out,
            env={**os.environ, "DIST_EXTRA_CONFIG": str(config)},
        )
    wheels = sorted(dest.glob("*.whl"))
    if len(wheels) != 1:
        raise ImageError(f"building the project's wheel left {len(wheels)} wheels in {dest}, not one")
    return wheels[0]


def build_wheels(context: Path, out: TextIO) -> None:
    """The project's and its dependencies' wheels in ``context/wheelhouse`` (stale ones removed);
    the harness is not among them."""
    wheelhouse = context / "wheelhouse"
    wheelhouse.mkdir(exist_ok=True)
    for wheel in wheelhouse.glob("*.whl"):
        wheel.unlink()
    log = tools.cache_root() / "logs" / "wheels.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="wheels-", dir=tools.cache_root()) as scratch:
        project = project_wheel(context, Path(scratch), log, out)
        # the project's wheel, copied, and those of its requirements
        argv = [*PIP_WHEEL, "--wheel-dir", str(wheelhouse), str(project)]
        run_logged(argv, log, "building the wheels of its requirements", out)
    with_harness = sorted(wheel.name for wheel in wheelhouse.glob("*.whl") if harness_files(wheel))
    if with_harness:
        raise ImageError(
            f"the image's wheels hold the cluster harness ({', '.join(with_harness)}): "
            f"{context}/pyproject.toml must not package it"
        )


def build(docker: Engine, context: Path, tag: str, base: str | None, out: TextIO, log: Path) -> str:
    """``docker build`` of ``context``'s Dockerfile, offline; returns the image ID.

    The image ``tag`` named before is removed once the new one has the tag (unless something
    else still uses it), and the private daemon's dangling images are pruned: rebuilds do not
    pile up images in the cache directory."""
    previous = find_image_id(docker, tag)
    argv = [docker.cli, "build", "--network", "none", "--tag", tag, "--build-arg", "WHEELS=wheelhouse"]
    if base:
        argv += ["--build-arg", f"BASE_IMAGE={base}"]
    if docker.buildkit:
        argv += ["--load"]
    run_logged([*argv, str(context)], log, f"docker build {tag}", out, env=docker.env)
    image_id = find_image_id(docker, tag)
    if image_id is None:
        raise ImageError(f"docker build {tag} succeeded but no image has that tag")
    if previous is not None and previous != image_id:
        if docker.run("image", "rm", previous, check=False, timeout=300).returncode == 0:
            print(f"removed the image {tag} named before ({previous[:19]})", file=out, flush=True)
    if docker.private:
        pruned = docker.run("image", "prune", "--force", check=False, timeout=900)
        reclaimed = [
            line for line in pruned.stdout.decode(errors="replace").splitlines() if "reclaimed" in line
        ]
        if pruned.returncode == 0 and reclaimed and not reclaimed[0].rstrip().endswith(": 0B"):
            print(f"pruned the private engine's dangling images ({reclaimed[0].strip()})", file=out)
    return image_id


def find_image_id(docker: Engine, reference: str) -> str | None:
    """The ID of the image ``reference`` names, None when there is none."""
    found = docker.run("image", "inspect", "--format", "{{.Id}}", reference, check=False, timeout=60)
    if found.returncode != 0:
        return None
    return found.stdout.decode().strip() or None


def smoke_test(docker: Engine, tag: str) -> None:
    """Both commands start as UID 10001 on a read-only root filesystem, without a network."""
    for command in ("operator", "sidecar"):
        result = docker.run(
            "run",
            "--rm",
            "--read-only",
            "--network",
            "none",
            "--user",
            "10001:10001",
            tag,
            command,
            "--help",
            check=False,
            timeout=120,
        )
        if result.returncode != 0:
            error = result.stderr.decode(errors="replace").strip()
            raise ImageError(f"the image {tag} does not run `luna-plugins {command}`: {error}")


def default_context() -> Path:
    """The checkout this package comes from (``tools/luna_cluster`` is two levels below it)."""
    return Path(__file__).resolve().parents[2]


def load_into_node(state: StateDir, docker: Engine, tag: str, image_id: str, out: TextIO) -> bool:
    """Import ``tag`` into the node's containerd unless it already holds that very image.

    Returns False when ``state`` runs no node (nothing to import into).
    """
    from . import node as node_mod

    data = state.load()
    if not data or not data.get("node") or not node_mod.running(state, data):
        return False
    binaries = {name: Path(path) for name, path in data["binaries"].items()}
    layout = state.node
    record = layout.root / "imported-images"
    imported = (
        dict(line.split(" ", 1) for line in record.read_text().splitlines()) if record.is_file() else {}
    )
    if imported.get(tag) == image_id and node_mod.image_present(layout, binaries, tag):
        print(f"the node already has {tag} ({image_id[:19]})", file=out)
        return True
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="image-", dir=tools.cache_root()) as scratch:
        archive = Path(scratch) / "image.tar"
        with archive.open("wb") as handle:
            saved = subprocess.run(
                [docker.cli, "save", tag], env=docker.env, stdout=handle, stderr=subprocess.PIPE, check=False
            )
        if saved.returncode != 0:
            raise ImageError(f"`docker save {tag}` failed: {saved.stderr.decode(errors='replace').strip()}")
        node_mod.import_image(layout, binaries, archive)
    imported[tag] = image_id
    record.write_text("".join(f"{name} {value}\n" for name, value in sorted(imported.items())))
    print(f"imported {tag} into the node in {time.monotonic() - started:.1f}s", file=out)
    return True


def build_and_load(
    state: StateDir, *, tag: str, base: str | None, context: Path, out: TextIO, load: bool = True
) -> str:
    """Everything ``cluster image`` does; returns the image ID."""
    started = time.monotonic()
    if not (context / "Dockerfile").is_file():
        raise ImageError(f"no Dockerfile in {context} (pass --context with the project checkout)")
    docker = engine(state, out)
    base_image = choose_base(docker, base, out)
    build_wheels(context, out)
    log = tools.cache_root() / "logs" / "image-build.log"
    image_id = build(docker, context, tag, base_image, out, log)
    smoke_test(docker, tag)
    elapsed = time.monotonic() - started
    print(
        f"built {tag} ({image_id[:19]}) on {base_image or UPSTREAM_BASE} in {elapsed:.1f}s",
        file=out,
        flush=True,
    )
    if load and not load_into_node(state, docker, tag, image_id, out):
        print(f"no node runs in {state.root}: the image was built, not imported", file=out)
    return image_id


def stop_private_engine(state: StateDir, out: TextIO) -> bool:
    """Stop the Docker daemon ``state`` started (if any); True when none of ours runs."""
    pid = procs.read_pid(state.pid_file("dockerd"))
    if pid is None:
        return True
    dockerd = shutil.which("dockerd")
    if dockerd and procs.is_ours(pid, Path(dockerd), f"{state.root}{os.sep}"):
        if not procs.stop(pid, timeout=30):
            print(f"could not stop dockerd (pid {pid})", file=out)
            return False
        print(f"stopped dockerd (pid {pid})", file=out)
    state.pid_file("dockerd").unlink(missing_ok=True)
    return True
