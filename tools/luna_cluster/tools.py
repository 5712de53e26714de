"""Build (or reuse) the control-plane binaries from the Go modules under ``tools/``.

Each Go module under ``tools/`` pins one upstream release in its ``go.mod``/``go.sum``: the
control plane (``kube``, ``etcd``, ``helm``) and, for ``cluster up --node``, the node (``node``:
kubelet, kube-scheduler, kube-proxy; ``containerd``; ``cni``: the CNI plugins; ``coredns``). The
binaries are built once per machine into the user's cache directory, in a folder keyed by the
upstream version and a hash of everything that affects the result (go.mod, go.sum, ldflags, build
tags, Go version, platform), so later runs only check that folder exists.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

#: where the Go modules live (``tools/`` of the repository, next to this package)
TOOLS_DIR = Path(os.environ.get("LUNA_TOOLS_DIR", Path(__file__).resolve().parent.parent))

COMPLETE_MARKER = ".complete"
#: a cached build of a tool (another version or key than the one in use) that no build or
#: ``cluster up`` used for this long is removed; the marker's mtime is its last use
UNUSED_FOR = 30 * 24 * 3600.0


class BuildError(RuntimeError):
    """A Go toolchain problem or a failed ``go build``; the message carries the output tail."""


@dataclass(frozen=True)
class ToolModule:
    """One Go module of ours and the binaries built from it in a single ``go build``."""

    name: str
    #: module path of the upstream release whose version names the cache folder
    upstream: str
    #: binary name -> Go package path
    packages: dict[str, str]
    #: ldflags, with ``{version}``, ``{major}`` and ``{minor}`` filled from the upstream version
    ldflags: tuple[str, ...] = field(default_factory=tuple)
    #: Go build tags (``-tags``)
    tags: tuple[str, ...] = field(default_factory=tuple)

    @property
    def directory(self) -> Path:
        return TOOLS_DIR / self.name


def _k8s_version_flags(package: str) -> tuple[str, ...]:
    return (
        f"-X {package}.gitVersion={{version}}",
        f"-X {package}.gitMajor={{major}}",
        f"-X {package}.gitMinor={{minor}}",
        f"-X {package}.gitTreeState=clean",
    )


#: the version every Kubernetes binary reports (``kubectl version``, the API server's /version)
_K8S_LDFLAGS = _k8s_version_flags("k8s.io/component-base/version") + _k8s_version_flags(
    "k8s.io/client-go/pkg/version"
)

MODULES: tuple[ToolModule, ...] = (
    ToolModule(
        name="kube",
        upstream="k8s.io/kubernetes",
        packages={
            "kube-apiserver": "k8s.io/kubernetes/cmd/kube-apiserver",
            "kube-controller-manager": "k8s.io/kubernetes/cmd/kube-controller-manager",
            "kubectl": "k8s.io/kubernetes/cmd/kubectl",
        },
        ldflags=_K8S_LDFLAGS,
    ),
    ToolModule(
        name="etcd",
        upstream="go.etcd.io/etcd/server/v3",
        packages={"etcd": "go.etcd.io/etcd/server/v3"},
    ),
    ToolModule(
        name="helm",
        upstream="helm.sh/helm/v4",
        packages={"helm": "helm.sh/helm/v4/cmd/helm"},
        ldflags=("-X helm.sh/helm/v4/internal/version.version={version}",),
    ),
)

#: what ``cluster up --node`` adds: built only when a node is asked for
NODE_MODULES: tuple[ToolModule, ...] = (
    ToolModule(
        name="node",
        upstream="k8s.io/kubernetes",
        packages={
            "kubelet": "k8s.io/kubernetes/cmd/kubelet",
            "kube-scheduler": "k8s.io/kubernetes/cmd/kube-scheduler",
            "kube-proxy": "k8s.io/kubernetes/cmd/kube-proxy",
        },
        ldflags=_K8S_LDFLAGS,
    ),
    ToolModule(
        name="containerd",
        upstream="github.com/containerd/containerd/v2",
        packages={
            "containerd": "github.com/containerd/containerd/v2/cmd/containerd",
            "containerd-shim-runc-v2": "github.com/containerd/containerd/v2/cmd/containerd-shim-runc-v2",
            "ctr": "github.com/containerd/containerd/v2/cmd/ctr",
        },
        ldflags=("-X github.com/containerd/containerd/v2/version.Version={version}",),
        # storage drivers that need cgo or kernel features we do not use
        tags=("no_btrfs", "no_devmapper", "no_zfs"),
    ),
    ToolModule(
        name="cni",
        upstream="github.com/containernetworking/plugins",
        packages={
            "bridge": "github.com/containernetworking/plugins/plugins/main/bridge",
            "host-local": "github.com/containernetworking/plugins/plugins/ipam/host-local",
            "loopback": "github.com/containernetworking/plugins/plugins/main/loopback",
        },
        ldflags=("-X github.com/containernetworking/plugins/pkg/utils/buildversion.BuildVersion={version}",),
    ),
    ToolModule(
        name="coredns",
        upstream="github.com/coredns/coredns",
        packages={"coredns": "github.com/coredns/coredns"},
    ),
)

#: for the tests and the node demo: Prometheus with Kubernetes service discovery (Debian's package
#: leaves that out), and its promtool; built only when asked for
PROMETHEUS = ToolModule(
    name="prometheus",
    upstream="github.com/prometheus/prometheus",
    packages={
        "prometheus": "github.com/prometheus/prometheus/cmd/prometheus",
        "promtool": "github.com/prometheus/prometheus/cmd/promtool",
    },
    ldflags=("-X github.com/prometheus/common/version.Version={version}",),
    # of the service discovery mechanisms, only Kubernetes' (the others pull in cloud SDKs)
    tags=("remove_all_sd", "enable_kubernetes_sd"),
)

#: for the tests of the Argo CD health check: gopher-lua's interpreter, the Lua that Argo CD runs
#: resource health scripts with; built only when asked for
LUA = ToolModule(
    name="lua",
    upstream="github.com/yuin/gopher-lua",
    packages={"glua": "github.com/yuin/gopher-lua/cmd/glua"},
)

#: the environment variable ``luna-cluster up`` and ``build`` read when ``--kube-version`` is not
#: given (the tests' ``kube`` fixture runs ``luna-cluster up``: ``make test-compat`` sets it)
KUBE_VERSION_ENV = "LUNA_KUBE_VERSION"

#: older Kubernetes minors the control plane can run instead of today's, for the compatibility tests
#: (``--kube-version``): their kube-apiserver and kube-controller-manager only; etcd, kubectl and helm
#: stay today's, and the node (today's kubelet may not be newer than the API server) is not offered
KUBE_COMPAT: dict[str, ToolModule] = {
    "1.30": ToolModule(
        name="kube-1.30",
        upstream="k8s.io/kubernetes",
        packages={
            "kube-apiserver": "k8s.io/kubernetes/cmd/kube-apiserver",
            "kube-controller-manager": "k8s.io/kubernetes/cmd/kube-controller-manager",
        },
        ldflags=_K8S_LDFLAGS,
    ),
}

#: for ``make e2e-kind`` and ``luna-cluster kind-image``: kind (Kubernetes in Docker) itself;
#: built only when asked for
KIND = ToolModule(
    name="kind",
    upstream="sigs.k8s.io/kind",
    packages={"kind": "sigs.k8s.io/kind"},
)

#: what a kind node image (``luna-cluster kind-image``) adds to the node's binaries: kubeadm, which
#: kind runs in the node, crictl, which ``kind load`` runs there, and local-path-provisioner, kind's
#: default storage; built only when asked for
KIND_NODE_MODULES: tuple[ToolModule, ...] = (
    ToolModule(
        name="kubeadm",
        upstream="k8s.io/kubernetes",
        packages={"kubeadm": "k8s.io/kubernetes/cmd/kubeadm"},
        ldflags=_K8S_LDFLAGS,
    ),
    ToolModule(
        name="crictl",
        upstream="sigs.k8s.io/cri-tools",
        packages={"crictl": "sigs.k8s.io/cri-tools/cmd/crictl"},
        ldflags=("-X sigs.k8s.io/cri-tools/pkg/version.Version={version}",),
    ),
    ToolModule(
        name="local-path-provisioner",
        upstream="github.com/rancher/local-path-provisioner",
        packages={"local-path-provisioner": "github.com/rancher/local-path-provisioner"},
        ldflags=("-X main.VERSION={version}",),
    ),
)

#: binary name -> module that builds it (today's; :data:`KUBE_COMPAT` replaces two of them on request)
BINARIES: dict[str, ToolModule] = {
    binary: module
    for module in (*MODULES, *NODE_MODULES, PROMETHEUS, LUA, KIND, *KIND_NODE_MODULES)
    for binary in module.packages
}


def cache_root() -> Path:
    """``${XDG_CACHE_HOME:-~/.cache}/luna-plugins``."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "luna-plugins"


def minor_version(version: str) -> str:
    """``v1.36.3`` or ``1.36`` -> ``1.36``."""
    numbers = re.match(r"v?(\d+)\.(\d+)", version)
    if numbers is None:
        raise BuildError(f"not a Kubernetes version: {version!r}")
    return f"{numbers.group(1)}.{numbers.group(2)}"


def default_kube_version() -> str:
    """The minor of today's control plane (``tools/kube/go.mod``), e.g. ``1.36``."""
    return minor_version(module_version(MODULES[0]))


def kube_compat(kube_version: str | None) -> ToolModule | None:
    """The module that builds the control plane of ``kube_version`` (``1.30``) instead of today's;
    ``None`` for today's (``None``, empty, or today's minor). Raises :class:`BuildError` for a minor
    there is no module of."""
    if not kube_version:
        return None
    wanted = minor_version(kube_version)
    if wanted in KUBE_COMPAT:
        return KUBE_COMPAT[wanted]
    if wanted == default_kube_version():
        return None
    known = ", ".join((*KUBE_COMPAT, default_kube_version()))
    raise BuildError(f"no control plane of Kubernetes {kube_version} here (there are {known})")


def older_minor(kube_version: str | None) -> str | None:
    """``kube_version`` as the key of its :data:`KUBE_COMPAT` module (``v1.30`` -> ``1.30``),
    ``None`` for today's; :class:`BuildError` as :func:`kube_compat`."""
    return minor_version(kube_version) if kube_version and kube_compat(kube_version) else None


def control_plane_modules(kube_version: str | None = None) -> tuple[ToolModule, ...]:
    """Today's control-plane modules, then the one of ``kube_version`` if that is another minor
    (its kube-apiserver and kube-controller-manager replace today's: see :func:`ensure_all`)."""
    compat = kube_compat(kube_version)
    return (*MODULES, *((compat,) if compat else ()))


def required_version(go_mod: str, module_path: str) -> str:
    """The version ``go_mod`` (the text of a go.mod) requires of ``module_path``."""
    pattern = re.compile(rf"^\s*(?:require\s+)?{re.escape(module_path)}\s+(v\S+)", re.MULTILINE)
    found = pattern.search(go_mod)
    if found is None:
        raise BuildError(f"go.mod does not require {module_path}")
    return found.group(1)


def expand_ldflags(module: ToolModule, version: str) -> list[str]:
    """``-s -w`` plus the module's version flags for ``version`` (``v1.36.3`` -> major 1, minor 36)."""
    numbers = re.match(r"v(\d+)\.(\d+)", version)
    major, minor = (numbers.group(1), numbers.group(2)) if numbers else ("0", "0")
    flags = ["-s", "-w"]
    for flag in module.ldflags:
        flags.extend(flag.format(version=version, major=major, minor=minor).split(" ", 1))
    return flags


def cache_key(module: ToolModule, go_mod: bytes, go_sum: bytes, go_env: str, version: str) -> str:
    """Hash of every input that changes the binaries; names the cache folder."""
    digest = hashlib.sha256()
    # build tags join the key only when a module has some, so keys of the others stay as they were
    tags = (",".join(module.tags).encode(),) if module.tags else ()
    for part in (
        module.name.encode(),
        go_mod,
        go_sum,
        go_env.encode(),
        json.dumps(sorted(module.packages.items())).encode(),
        " ".join(expand_ldflags(module, version)).encode(),
        *tags,
        build_env()["GOFLAGS"].encode(),
    ):
        digest.update(len(part).to_bytes(8, "big"))
        digest.update(part)
    return digest.hexdigest()[:16]


def go_output_name(package: str) -> str:
    """The file name ``go build -o DIR/`` gives the command ``package`` (a /vN suffix is skipped)."""
    parts = package.rstrip("/").split("/")
    if len(parts) > 1 and re.fullmatch(r"v\d+", parts[-1]):
        return parts[-2]
    return parts[-1]


def build_env() -> dict[str, str]:
    """Environment of every go command: static binaries, the installed toolchain only."""
    env = dict(os.environ)
    env.update(CGO_ENABLED="0", GOTOOLCHAIN="local")
    # our go.sum is committed: never let a user's -mod=mod or -mod=vendor rewrite or bypass it
    flags = [flag for flag in env.get("GOFLAGS", "").split() if not flag.startswith(("-mod=", "-buildvcs"))]
    for flag in ("-trimpath", "-buildvcs=false", "-mod=readonly"):
        if flag not in flags:
            flags.append(flag)
    env["GOFLAGS"] = " ".join(flags)
    return env


def go_binary() -> str:
    found = shutil.which("go")
    if found is None:
        raise BuildError(
            "the Go toolchain is needed to build the local cluster binaries: `go` is not on PATH "
            "(install Go >= 1.26 from your distribution or https://go.dev/dl/)"
        )
    return found


def go_environment() -> str:
    """``GOVERSION GOOS GOARCH`` of the local toolchain (part of the cache key)."""
    result = subprocess.run(
        [go_binary(), "env", "GOVERSION", "GOOS", "GOARCH"],
        env=build_env(),
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise BuildError(f"`go env` failed:\n{result.stderr.strip()}")
    return " ".join(result.stdout.split())


@dataclass(frozen=True)
class BuildPlan:
    module: ToolModule
    version: str
    key: str
    output: Path

    @property
    def ready(self) -> bool:
        return (self.output / COMPLETE_MARKER).is_file() and all(
            (self.output / binary).is_file() for binary in self.module.packages
        )

    def binary(self, name: str) -> Path:
        return self.output / name


def module_version(module: ToolModule) -> str:
    """The upstream version ``module``'s go.mod pins (no toolchain needed)."""
    return required_version((module.directory / "go.mod").read_text(), module.upstream)


def plan(module: ToolModule, go_env: str | None = None) -> BuildPlan:
    """Where ``module``'s binaries are (or will be) cached."""
    go_mod_path = module.directory / "go.mod"
    try:
        go_mod = go_mod_path.read_bytes()
        go_sum = (module.directory / "go.sum").read_bytes()
    except FileNotFoundError as exc:
        raise BuildError(f"missing Go module file {exc.filename} (is LUNA_TOOLS_DIR right?)") from exc
    version = required_version(go_mod.decode(), module.upstream)
    env_text = go_env if go_env is not None else go_environment()
    key = cache_key(module, go_mod, go_sum, env_text, version)
    return BuildPlan(module, version, key, cache_root() / "bin" / f"{module.name}-{version}-{key}")


def tail(text: str, lines: int = 30) -> str:
    return "\n".join(text.rstrip().splitlines()[-lines:])


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """Serialize builds of one cache folder across processes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _format_elapsed(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


class _Progress:
    """Prints what is building and the elapsed time, every ``interval`` seconds."""

    def __init__(self, label: str, out: TextIO, interval: float, counter: Callable[[], int]) -> None:
        self._label = label
        self._out = out
        self._interval = interval
        self._counter = counter
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.started = time.monotonic()

    def __enter__(self) -> _Progress:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            elapsed = _format_elapsed(time.monotonic() - self.started)
            print(
                f"  ... {self._label}: {elapsed} elapsed, {self._counter()} packages compiled",
                file=self._out,
                flush=True,
            )


def build(plan_: BuildPlan, out: TextIO = sys.stderr, interval: float = 15.0) -> BuildPlan:
    """Build ``plan_`` unless it is cached; returns it once its binaries exist."""
    if plan_.ready:
        return plan_
    module = plan_.module
    lock = cache_root() / "bin" / f".{module.name}.lock"
    with _locked(lock):
        if plan_.ready:  # another process built it while we waited
            return plan_
        log_dir = cache_root() / "logs"
        log_dir.mkdir(parents=True, exist_ok=True)
        log_path = log_dir / f"build-{module.name}-{plan_.version}.log"
        staging = Path(tempfile.mkdtemp(prefix=f".{module.name}-", dir=plan_.output.parent))
        command = [
            go_binary(),
            "build",
            "-v",
            "-p",
            str(max(1, os.cpu_count() or 1)),
            "-ldflags",
            " ".join(expand_ldflags(module, plan_.version)),
            *(["-tags", ",".join(module.tags)] if module.tags else []),
            "-o",
            f"{staging}{os.sep}",
            *module.packages.values(),
        ]
        names = ", ".join(module.packages)
        print(f"building {names} ({module.upstream} {plan_.version}) -> {plan_.output}", file=out, flush=True)
        compiled = 0

        def count() -> int:
            return compiled

        with (
            log_path.open("w") as log,
            _Progress(f"{module.name} {plan_.version}", out, interval, count) as bar,
        ):
            log.write(f"$ {' '.join(command)}\n")
            log.flush()
            process = subprocess.Popen(
                command,
                cwd=module.directory,
                env=build_env(),
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
            assert process.stdout is not None
            for line in process.stdout:
                log.write(line)
                if not line.startswith((" ", "#", "go:")):
                    compiled += 1
            code = process.wait()
        elapsed = _format_elapsed(time.monotonic() - bar.started)
        if code != 0:
            shutil.rmtree(staging, ignore_errors=True)
            raise BuildError(
                f"building {names} failed (exit {code}) after {elapsed}; full log: {log_path}\n"
                f"{tail(log_path.read_text())}"
            )
        for binary, package in module.packages.items():
            default = staging / go_output_name(package)
            if default != staging / binary and default.is_file():
                default.rename(staging / binary)
            if not (staging / binary).is_file():
                shutil.rmtree(staging, ignore_errors=True)
                raise BuildError(f"`go build` produced no {binary} binary; full log: {log_path}")
        (staging / COMPLETE_MARKER).write_text(
            json.dumps({"version": plan_.version, "key": plan_.key, "built": time.time()})
        )
        if plan_.output.exists():
            shutil.rmtree(plan_.output)
        staging.rename(plan_.output)
        print(f"built {names} in {elapsed}", file=out, flush=True)
    return plan_


def mark_used(plan_: BuildPlan) -> None:
    """Record that ``plan_``'s cached build is in use now (see :data:`UNUSED_FOR`)."""
    with contextlib.suppress(OSError):
        os.utime(plan_.output / COMPLETE_MARKER)


def prune_unused(plans: Iterable[BuildPlan], out: TextIO, *, now: float | None = None) -> list[Path]:
    """Remove the cached builds of these plans' modules that are not the plans' own and were
    not used for :data:`UNUSED_FOR` seconds; returns what was removed. A folder without the
    completion marker (not ours, or a build under way) is left alone."""
    now = time.time() if now is None else now
    removed: list[Path] = []
    for plan_ in plans:
        # NAME-vVERSION-KEY: `kube-v*` is not `kube-1.30-v*`, another module's
        for folder in sorted(plan_.output.parent.glob(f"{plan_.module.name}-v*")):
            if folder == plan_.output or not folder.is_dir():
                continue
            try:
                used = (folder / COMPLETE_MARKER).stat().st_mtime
            except OSError:
                continue
            if now - used > UNUSED_FOR:
                shutil.rmtree(folder, ignore_errors=True)
                removed.append(folder)
    if removed:
        days = UNUSED_FOR / 86400
        names = ", ".join(folder.name for folder in removed)
        print(f"removed {len(removed)} cached build(s) unused for {days:g} days: {names}", file=out)
    return removed


def ensure_all(
    out: TextIO = sys.stderr,
    *,
    node: bool = False,
    extras: tuple[ToolModule, ...] = (),
    kube_version: str | None = None,
) -> dict[str, Path]:
    """Build or reuse every control-plane module (with ``node`` the node's too, and ``extras``;
    with ``kube_version`` another minor's API server and controller manager, see
    :func:`control_plane_modules`); returns binary name -> path. Cached builds of these modules
    unused for :data:`UNUSED_FOR` seconds are removed."""
    go_env = go_environment()
    binaries: dict[str, Path] = {}
    plans: list[BuildPlan] = []
    for module in (*control_plane_modules(kube_version), *(NODE_MODULES if node else ()), *extras):
        ready = plan(module, go_env)
        if ready.ready:
            print(f"reusing {', '.join(module.packages)} {ready.version} from {ready.output}", file=out)
        build(ready, out)
        mark_used(ready)
        plans.append(ready)
        for binary in module.packages:
            binaries[binary] = ready.binary(binary)
    prune_unused(plans, out)
    return binaries


def cached_binaries(*, node: bool = False, kube_version: str | None = None) -> dict[str, Path] | None:
    """Binary name -> path when every module is already built, else ``None`` (never builds)."""
    go_env = go_environment()
    binaries: dict[str, Path] = {}
    for module in (*control_plane_modules(kube_version), *(NODE_MODULES if node else ())):
        ready = plan(module, go_env)
        if not ready.ready:
            return None
        binaries.update({binary: ready.binary(binary) for binary in module.packages})
    return binaries


def ensure(module: ToolModule, out: TextIO = sys.stderr) -> dict[str, Path]:
    """Build or reuse one module; returns its binaries (name -> path)."""
    built = build(plan(module), out)
    return {binary: built.binary(binary) for binary in module.packages}
