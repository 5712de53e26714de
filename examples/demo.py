"""`make demo`: the whole product on the local Kubernetes control plane.

1. ``luna-cluster up`` (the test harness: etcd, kube-apiserver, kube-controller-manager on
   127.0.0.1; the first run builds them from Go and caches them), the CRDs from ``crds/``,
   namespace ``luna-demo``;
2. the operator (``luna-plugins operator --namespace luna-demo``);
3. one "pod" as it would run on Kubernetes: a small stand-in for the handlers service
   (``examples/demo_service.py``, posting a ``requests`` point per request it serves) and the
   plugins sidecar beside it in cluster mode;
4. the example plugins of ``examples/plugins/`` applied as LunaPlugin resources (built from the
   .py files at run time; ``--print-manifests`` shows them), then a load generator against the
   service. It prints what to curl and which kubectl commands to try, and a status line every 10 s.

Ctrl-C (or SIGTERM, or ``--duration``) stops everything in order: the load generator, the service,
the sidecar, the operator, then ``luna-cluster down``. ``--standalone`` runs the earlier
demo without Kubernetes: the sidecar on a plugins directory, fed by a generator of points.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
PLUGINS_DIR = HERE / "plugins"
MANIFESTS_DIR = HERE / "lunaplugins"
CRDS_DIR = ROOT / "crds"
HOST = "127.0.0.1"
NAMESPACE = "luna-demo"
SERVICE = "handlers"
POD = "handlers-demo-0"
STATUS_EVERY = 10.0
#: load order of the example plugins; other files in examples/plugins follow, by name
PLUGIN_ORDER = ["kettle", "route_digest", "http_forwarder"]
#: a handler the demo service starts with (used in the printed curl command)
DEMO_HANDLER = "0b3b6b1c-1f5b-4a8e-9d43-2d6a7e1e9c01"

_LIBC = ctypes.CDLL(None, use_errno=True) if sys.platform.startswith("linux") else None


class Interrupted(BaseException):
    """SIGINT or SIGTERM arrived: stop what is going on and tear down."""


class DemoError(Exception):
    """Something the user should read; the demo tears down and exits 1."""


def console_command(script: str, module: str) -> list[str]:
    """The console script ``script`` of this Python's environment, else ``python -m module``."""
    found = Path(sys.executable).with_name(script)
    return [str(found)] if found.exists() else [sys.executable, "-m", module]


def luna_command() -> list[str]:
    """The product's command, ``luna-plugins``."""
    return console_command("luna-plugins", "luna_cli.main")


def cluster_command() -> list[str]:
    """The local-cluster harness's command, ``luna-cluster``."""
    return console_command("luna-cluster", "luna_cluster")


def port_or_free(preferred: int) -> int:
    with socket.socket() as sock:
        # as the servers do: a port whose old connections linger in TIME_WAIT is still free
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((HOST, preferred))
        except OSError:
            sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def request(method: str, url: str, body: object | None = None, timeout: float = 5) -> tuple[int, str]:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def shown(path: Path) -> str:
    """``path`` relative to the current directory when it is inside it (shorter commands)."""
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


# ---------------------------------------------------------------------------------------------
# LunaPlugin manifests, built from examples/plugins/*.py


def plugin_settings(service_url: str) -> dict[str, dict[str, Any]]:
    return {
        "kettle": {"tickSeconds": 1.0},
        "route_digest": {"slowSeconds": 0.05},
        "http_forwarder": {"targetUrl": f"{service_url}/third-party/events"},
    }


def lunaplugin_manifests(service_url: str = "http://127.0.0.1:5090") -> list[dict[str, Any]]:
    """One LunaPlugin per file of examples/plugins (name: the module with ``-`` for ``_``)."""
    modules = sorted(path.stem for path in PLUGINS_DIR.glob("*.py") if not path.stem.startswith("_"))
    modules.sort(key=lambda m: PLUGIN_ORDER.index(m) if m in PLUGIN_ORDER else len(PLUGIN_ORDER))
    settings = plugin_settings(service_url)
    manifests = []
    for order, module in enumerate(modules):
        spec: dict[str, Any] = {"service": SERVICE, "order": order}
        if settings.get(module):
            spec["settings"] = settings[module]
        spec["code"] = (PLUGINS_DIR / f"{module}.py").read_text()
        manifests.append(
            {
                "apiVersion": "luna.dev/v1alpha1",
                "kind": "LunaPlugin",
                "metadata": {
                    "name": module.replace("_", "-"),
                    "labels": {"app.kubernetes.io/part-of": "luna-demo"},
                },
                "spec": spec,
            }
        )
    return manifests


class _LiteralDumper(yaml.SafeDumper):
    """Multi-line strings (plugin code) as ``|`` blocks, readable in ``kubectl get -o yaml`` style."""


def _str_representer(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_LiteralDumper.add_representer(str, _str_representer)


def to_yaml(documents: list[dict[str, Any]]) -> str:
    return yaml.dump_all(documents, Dumper=_LiteralDumper, sort_keys=False, width=120)


# ---------------------------------------------------------------------------------------------
# child processes


def _die_with_parent() -> None:
    """In the child before exec: get SIGTERM if the demo itself dies (even by SIGKILL)."""
    if _LIBC is not None:
        _LIBC.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


@dataclass
class Child:
    name: str
    process: subprocess.Popen[bytes]
    log_path: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    def alive(self) -> bool:
        return self.process.poll() is None

    def log_tail(self, lines: int = 25) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self, timeout: float = 30) -> int | None:
        """SIGTERM, wait, SIGKILL (its whole session) when it does not exit in time."""
        if self.alive():
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            print(f"  {self.name} did not stop within {timeout:.0f} s: killing it", flush=True)
            try:
                os.killpg(self.process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            return self.process.wait(timeout=10)


class LoadGenerator(threading.Thread):
    """About ``rate`` requests a second against the demo service; counts answers by status."""

    def __init__(self, base_url: str, rate: float = 10) -> None:
        super().__init__(name="load-generator", daemon=True)
        self.base_url = base_url
        self.rate = rate
        self.counts: Counter[str] = Counter()
        self.stopping = threading.Event()

    def run(self) -> None:
        handlers = [DEMO_HANDLER]
        try:
            status, text = request("GET", f"{self.base_url}/6/handlers", timeout=5)
            if status == 200:
                handlers = [h["handler_id"] for h in json.loads(text)["handlers"]] or handlers
        except OSError:
            pass
        number = 0
        while not self.stopping.is_set():
            number += 1
            handler = random.choice(handlers)
            kind = random.choices(["events", "list", "get", "unknown", "bad"], weights=[70, 15, 5, 5, 5])[0]
            try:
                if kind == "events":
                    status, _ = self.post(f"/6/handlers/{handler}/events", {"image": f"frame-{number}.jpg"})
                elif kind == "list":
                    status, _ = request("GET", f"{self.base_url}/6/handlers")
                elif kind == "get":
                    status, _ = request("GET", f"{self.base_url}/6/handlers/{handler}")
                elif kind == "unknown":
                    status, _ = self.post("/6/handlers/00000000-0000-0000-0000-000000000000/events", {})
                else:
                    status, _ = self.post(f"/6/handlers/{handler}/events", {"img": number})
                self.counts[str(status)] += 1
            except OSError:
                self.counts["error"] += 1
            self.stopping.wait(1 / self.rate)

    def post(self, path: str, body: object) -> tuple[int, str]:
        return request("POST", f"{self.base_url}{path}", body)

    def total(self) -> int:
        return sum(self.counts.values())

    def stop(self) -> None:
        self.stopping.set()
        self.join(timeout=10)


# ---------------------------------------------------------------------------------------------
# the demo on the local control plane


class ClusterDemo:
    def __init__(self, state_dir: Path, keep_cluster: bool) -> None:
        self.state = state_dir
        self.keep_cluster = keep_cluster
        self.kubeconfig = state_dir / "kubeconfig"
        self.kubectl_path = state_dir / "bin" / "kubectl"
        self.logs = state_dir / "logs"
        self.children: dict[str, Child] = {}
        self.cluster_started = False
        self.generator: LoadGenerator | None = None
        self.ports: dict[str, int] = {}
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("LUNA_")}
        self.env["KUBECONFIG"] = str(self.kubeconfig)
        self.env["PYTHONUNBUFFERED"] = "1"

    # -- helpers -------------------------------------------------------------------------------

    def url(self, name: str, path: str = "") -> str:
        return f"http://{HOST}:{self.ports[name]}{path}"

    def kubectl(
        self, *args: str, input: str | None = None, check: bool = True, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [str(self.kubectl_path), *args],
            input=input,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if check and result.returncode != 0:
            raise DemoError(f"kubectl {' '.join(args)} failed:\n{result.stderr.strip()}")
        return result

    def spawn(self, name: str, argv: list[str]) -> Child:
        self.logs.mkdir(parents=True, exist_ok=True)
        log_path = self.logs / f"{name}.log"
        with log_path.open("wb") as log_file:
            process = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                env=self.env,
                cwd=self.state,
                start_new_session=True,  # Ctrl-C reaches only the demo, which stops children in order
                preexec_fn=_die_with_parent,
            )
        child = Child(name, process, log_path)
        self.children[name] = child
        return child

    def wait_until(self, what: str, condition: Any, timeout: float, *watch: Child) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for child in watch:
                if not child.alive():
                    raise DemoError(
                        f"{child.name} exited with {child.process.returncode} while waiting for {what}; "
                        f"last lines of {shown(child.log_path)}:\n{child.log_tail()}"
                    )
            try:
                result = condition()
            except OSError:
                result = None
            if result:
                return result
            time.sleep(0.2)
        logs = "".join(f"\nlast lines of {shown(c.log_path)}:\n{c.log_tail()}" for c in watch)
        raise DemoError(f"timed out after {timeout:.0f} s waiting for {what}{logs}")

    def answers(self, name: str, path: str) -> str | None:
        status, text = request("GET", self.url(name, path), timeout=2)
        return text if status == 200 else None

    # -- steps ---------------------------------------------------------------------------------

    def check_tools(self) -> None:
        if shutil.which("go") is None:
            raise DemoError(
                "the local Kubernetes control plane needs the Go toolchain (`go` is not on PATH): it builds "
                "etcd, kube-apiserver, kube-controller-manager and kubectl once and caches them.\n"
                "Install Go >= 1.26 (your distribution or https://go.dev/dl/), or run the demo without "
                "Kubernetes: .venv/bin/python examples/demo.py --standalone"
            )
        if shutil.which("openssl") is None:
            raise DemoError(
                "the local control plane needs `openssl` (for its certificates); please install it"
            )
        try:
            from luna_cluster import tools

            cached = tools.cached_binaries()
        except Exception:  # the build below reports toolchain problems in full
            cached = None
        if cached is None:
            print(
                "First run: building etcd, kube-apiserver, kube-controller-manager, kubectl and helm from "
                "Go.\nThis takes 10-15 minutes on 2 cores (once; cached in ~/.cache/luna-plugins). "
                "Progress:",
                flush=True,
            )

    def cluster_up(self) -> None:
        argv = [*cluster_command(), "up", "--state-dir", str(self.state)]
        print(f"$ luna-cluster up --state-dir {shown(self.state)}", flush=True)
        self.cluster_started = True
        process = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=self.env,
            start_new_session=True,
            preexec_fn=_die_with_parent,
        )
        try:
            assert process.stdout is not None
            for raw in process.stdout:
                line = raw.decode(errors="replace").rstrip()
                if line != str(self.kubeconfig):  # `up` prints the kubeconfig path last, on stdout
                    print("  " + line, flush=True)
            code = process.wait()
        except BaseException:
            # interrupted (e.g. Ctrl-C during the first build): stop `up` and its go build
            try:
                os.killpg(process.pid, signal.SIGINT)
                process.wait(timeout=30)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                try:
                    os.killpg(process.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            raise
        if code != 0:
            raise DemoError(f"`luna-cluster up` failed (exit {code}); see its output above")

    def install_crds(self) -> None:
        print(f"$ kubectl apply -f {shown(CRDS_DIR)}/ && kubectl create namespace {NAMESPACE}", flush=True)
        self.kubectl("apply", "-f", str(CRDS_DIR))
        self.kubectl(
            "wait",
            "--for=condition=Established",
            "crd/lunaplugins.luna.dev",
            "crd/lunapluginruntimes.luna.dev",
            "--timeout=60s",
        )
        namespace = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}}
        self.kubectl("apply", "-f", "-", input=json.dumps(namespace))

    def start_operator(self) -> None:
        self.ports["operator"] = port_or_free(8090)
        self.ports["operator-metrics"] = port_or_free(8091)
        child = self.spawn(
            "operator",
            [
                *luna_command(),
                "operator",
                "--namespace",
                NAMESPACE,
                "--liveness",
                f"{HOST}:{self.ports['operator']}",
                "--metrics",
                f"{HOST}:{self.ports['operator-metrics']}",
            ],
        )
        self.wait_until(
            "the operator's liveness endpoint", lambda: self.answers("operator", "/healthz"), 60, child
        )
        print(f"operator running (pid {child.pid}), log {shown(child.log_path)}", flush=True)

    def start_sidecar(self) -> None:
        self.ports |= {
            "routes": port_or_free(8080),
            "admin": port_or_free(8081),
            "metrics": port_or_free(9100),
        }
        child = self.spawn(
            "sidecar",
            [
                *luna_command(),
                "sidecar",
                "--namespace",
                NAMESPACE,
                "--service",
                SERVICE,
                "--pod-name",
                POD,
                "--host",
                HOST,
                "--port",
                str(self.ports["routes"]),
                "--admin-host",
                HOST,
                "--admin-port",
                str(self.ports["admin"]),
                "--metrics-host",
                HOST,
                "--metrics-port",
                str(self.ports["metrics"]),
            ],
        )
        self.wait_until("the sidecar's /readyz", lambda: self.answers("metrics", "/readyz"), 60, child)
        print(
            f"sidecar running in cluster mode (pid {child.pid}, pod {POD}), log {shown(child.log_path)}",
            flush=True,
        )

    def start_service(self) -> None:
        self.ports["service"] = port_or_free(5090)
        child = self.spawn(
            "demo-service",
            [
                sys.executable,
                str(HERE / "demo_service.py"),
                "--host",
                HOST,
                "--port",
                str(self.ports["service"]),
                "--sidecar",
                self.url("admin"),
            ],
        )
        self.wait_until("the demo service", lambda: self.answers("service", "/stats"), 30, child)
        print(
            f"demo service (the handlers stand-in) running (pid {child.pid}) on {self.url('service')}, "
            f"log {shown(child.log_path)}",
            flush=True,
        )

    def apply_plugins(self) -> list[str]:
        manifests = lunaplugin_manifests(self.url("service"))
        names = [m["metadata"]["name"] for m in manifests]
        print(
            f"$ kubectl -n {NAMESPACE} apply -f -   # LunaPlugins built from {shown(PLUGINS_DIR)}/*.py",
            flush=True,
        )
        result = self.kubectl("-n", NAMESPACE, "apply", "-f", "-", input=to_yaml(manifests))
        for line in result.stdout.splitlines():
            print("  " + line, flush=True)
        watch = [self.children["operator"], self.children["sidecar"]]
        kettle = self.wait_until(
            "the kettle route on the sidecar", lambda: self.answers("routes", "/kettle"), 60, *watch
        )
        print(f"kettle answered: {kettle}", flush=True)

        def all_loaded() -> bool:
            items = json.loads(self.kubectl("-n", NAMESPACE, "get", "lp", "-o", "json").stdout)["items"]
            loaded = {i["metadata"]["name"]: (i.get("status") or {}).get("loaded") for i in items}
            return all(loaded.get(name) == "1/1" for name in names)

        try:
            self.wait_until("every LunaPlugin to report LOADED 1/1", all_loaded, 30, *watch)
        except DemoError as exc:
            print(f"warning: {exc}", flush=True)
        print(f"$ kubectl -n {NAMESPACE} get lp", flush=True)
        for line in self.kubectl("-n", NAMESPACE, "get", "lp").stdout.splitlines():
            print("  " + line, flush=True)
        return names

    def start_load(self) -> None:
        """The load generator; waits until the service's requests points show in /digest."""
        self.generator = LoadGenerator(self.url("service"))
        self.generator.start()
        watch = [self.children["demo-service"], self.children["sidecar"]]

        def digest_has_service_points() -> str | None:
            text = self.answers("routes", "/digest")
            return text if text and "/6/handlers" in text else None

        digest = self.wait_until("the service's points in /digest", digest_has_service_points, 30, *watch)
        print(f"digest answered: {digest}", flush=True)

    def print_instructions(self) -> None:
        routes, admin, metrics, service = (self.url(n) for n in ("routes", "admin", "metrics", "service"))
        kube_dir = self.kubeconfig.parent
        v2 = shown(MANIFESTS_DIR / "kettle-v2.yaml")
        hello = shown(MANIFESTS_DIR / "hello.yaml")
        width = 60

        def line(command: str, comment: str = "") -> str:
            if not comment:
                return f"  {command}"
            if len(command) > width:
                return f"  {command}\n  {'':<{width}} # {comment}"
            return f"  {command:<{width}} # {comment}"

        curl = [
            line(f"curl {routes}/kettle", "kettle (background plugin): its state"),
            line(f"curl -X POST {routes}/kettle -d '{{\"litres\": 2}}'", "refill it"),
            line(f"curl {routes}/kettle/version", "'kettle 1.0' until you update the plugin"),
            line(f"curl {routes}/digest", "route_digest: the service's requests points per route"),
            line(f"curl {service}/6/handlers", "the demo service: each request -> a requests point"),
            line(
                f'curl -X POST {service}/6/handlers/{DEMO_HANDLER}/events -d \'{{"image": "me.jpg"}}\'',
                "-> events, which http_forwarder forwards to:",
            ),
            line(f"curl {service}/third-party/events", "the stand-in third party: what arrived"),
            line(f"curl {admin}/plugins", "the sidecar: every plugin's state and code hash"),
            line(f"curl -s {metrics}/metrics | grep ^luna_requests_total", "Prometheus metrics"),
        ]
        ns = f"kubectl -n {NAMESPACE}"
        kubectl = [
            line(f"export KUBECONFIG={self.kubeconfig} PATH={kube_dir / 'bin'}:$PATH"),
            line(f"{ns} get lp", "PHASE Ready, LOADED 1/1 (pods serving the current code)"),
            line(f"{ns} get lpr", "the sidecar's per-pod report (heartbeat)"),
            line(f"{ns} describe lp kettle", "status, code hash per pod, events"),
            line(f"{ns} get cm luna-plugins-{SERVICE} -o yaml", "the active list the sidecar follows"),
            line(f"{ns} apply -f {v2}", f"then: curl {routes}/kettle/version -> kettle 2.0"),
            line(f"{ns} edit lp kettle", "change spec.code or spec.settings: reloaded in ~1 s"),
            line(
                f'{ns} patch lp kettle --type=merge -p \'{{"spec":{{"code":"def broken(:\\n"}}}}\'',
                "-> PHASE Invalid (with the line); the last good version keeps serving",
            ),
            line(f"{ns} apply -f {hello}", f"then: curl {routes}/hello"),
            line(f"{ns} delete lp kettle", "the /kettle routes answer 404 within a second"),
        ]
        print(
            "\n".join(
                [
                    "",
                    "=" * 100,
                    "The demo is up: a local control plane, the operator and one 'pod' of the handlers",
                    "service (demo service + plugins sidecar in cluster mode) with the example LunaPlugins;",
                    f"a load generator sends ~10 requests/s to the service. Logs: {shown(self.logs)}/",
                    "",
                    "Try curl:",
                    *curl,
                    "",
                    "Try kubectl (e.g. in another terminal):",
                    *kubectl,
                    "",
                    "A status line follows every 10 s. Ctrl-C stops everything and takes the cluster down.",
                    "=" * 100,
                    "",
                ]
            ),
            flush=True,
        )

    def status_line(self, elapsed: float) -> str:
        parts: list[str] = []
        if self.generator is not None:
            counts = ", ".join(f"{k}: {v}" for k, v in sorted(self.generator.counts.items()))
            parts.append(f"load: {self.generator.total()} requests ({counts})")
        try:
            stats = json.loads(request("GET", self.url("service", "/stats"), timeout=2)[1])
            dropped = stats.get("points_dropped", 0) + stats.get("events_dropped", 0)
            parts.append(
                f"service sent {stats.get('points_sent', 0)} points + {stats.get('events_sent', 0)} "
                f"events ({dropped} dropped, {stats.get('points_buffered', 0)} buffered), "
                f"third party got {stats.get('third_party_batches', 0)}"
            )
        except (OSError, ValueError):
            parts.append("service: ?")
        try:
            text = request("GET", self.url("metrics", "/metrics"), timeout=2)[1]
            total = sum(
                float(row.rsplit(" ", 1)[1])
                for row in text.splitlines()
                if row.startswith("luna_requests_total{")
            )
            plugins = json.loads(request("GET", self.url("admin", "/plugins"), timeout=2)[1])["plugins"]
            running = sum(1 for p in plugins if p.get("state") == "running")
            parts.append(
                f"sidecar: {running}/{len(plugins)} plugins running, luna_requests_total {total:.0f}"
            )
        except (OSError, ValueError, KeyError, IndexError):
            parts.append("sidecar: ?")
        try:
            items = json.loads(self.kubectl("-n", NAMESPACE, "get", "lp", "-o", "json", timeout=5).stdout)[
                "items"
            ]
            groups: dict[str, list[str]] = {}
            for item in items:
                status = item.get("status") or {}
                key = f"{status.get('phase', '-')} {status.get('loaded', '-')}"
                groups.setdefault(key, []).append(item["metadata"]["name"])
            parts.append("lp " + "; ".join(f"{k}: {', '.join(v)}" for k, v in groups.items()))
        except (DemoError, ValueError, subprocess.TimeoutExpired):
            parts.append("lp: ?")
        return f"[{elapsed:4.0f}s] " + " | ".join(parts)

    def serve(self, duration: float) -> None:
        started = last_status = time.monotonic()
        while True:
            time.sleep(0.5)
            for child in self.children.values():
                if not child.alive():
                    raise DemoError(
                        f"{child.name} exited unexpectedly with {child.process.returncode}; "
                        f"last lines of {shown(child.log_path)}:\n{child.log_tail()}"
                    )
            now = time.monotonic()
            if now - last_status >= STATUS_EVERY:
                print(self.status_line(now - started), flush=True)
                last_status = now
            if duration and now - started >= duration:
                print(f"--duration {duration:g} s reached", flush=True)
                return

    def teardown(self) -> bool:
        """Stop everything that was started, in order; True when all went well."""
        ok = True
        if not (self.cluster_started or self.children):
            return ok
        print("tearing down ...", flush=True)
        if self.generator is not None:
            self.generator.stop()
            print(f"  stopped the load generator ({self.generator.total()} requests sent)", flush=True)
        for name in ("demo-service", "sidecar"):
            ok &= self._stop(name)
        if self.keep_cluster and "operator" in self.children and self.children["operator"].alive():
            self.kubectl("-n", NAMESPACE, "delete", "lp", "--all", "--timeout=30s", check=False)
        ok &= self._stop("operator")
        if self.cluster_started and not self.keep_cluster:
            print(f"$ luna-cluster down --state-dir {shown(self.state)}", flush=True)
            down = subprocess.run(
                [*cluster_command(), "down", "--state-dir", str(self.state)],
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                env=self.env,
                check=False,
            )
            for line in (down.stderr + down.stdout).splitlines():
                print("  " + line, flush=True)
            ok &= down.returncode == 0
        elif self.cluster_started:
            print(f"the cluster keeps running (--keep-cluster); KUBECONFIG={self.kubeconfig}", flush=True)
        return ok

    def _stop(self, name: str) -> bool:
        child = self.children.get(name)
        if child is None:
            return True
        started = time.monotonic()
        code = child.stop()
        print(
            f"  stopped {name} (pid {child.pid}, exit {code}, {time.monotonic() - started:.1f} s)", flush=True
        )
        return code in (0, -signal.SIGTERM)


def run_until_interrupted(name: str, steps: Callable[[], None], teardown: Callable[[], bool]) -> int:
    """Run ``steps`` (they serve until ``--duration`` or Ctrl-C/SIGTERM), then ``teardown``, whatever
    happened; a second signal during the teardown only says to wait. Returns the exit code."""

    def interrupt(signum: int, _frame: object) -> None:
        raise Interrupted(signal.Signals(signum).name)

    signal.signal(signal.SIGINT, interrupt)
    signal.signal(signal.SIGTERM, interrupt)
    result = 1
    try:
        steps()
        result = 0
    except Interrupted as exc:
        print(f"\n{exc} received", flush=True)
        result = 0
    except DemoError as exc:
        print(f"{name}: error: {exc}", file=sys.stderr, flush=True)
    finally:

        def still_stopping(signum: int, _frame: object) -> None:
            print(f"({signal.Signals(signum).name}: still tearing down, please wait)", flush=True)

        signal.signal(signal.SIGINT, still_stopping)
        signal.signal(signal.SIGTERM, still_stopping)
        if not teardown():
            result = 1
    print("demo stopped" if result == 0 else "demo stopped with errors", flush=True)
    return result


def run_cluster(options: argparse.Namespace) -> int:
    state = Path(options.state_dir).resolve()
    state.mkdir(parents=True, exist_ok=True)
    demo = ClusterDemo(state, options.keep_cluster)

    def steps() -> None:
        demo.check_tools()
        demo.cluster_up()
        demo.install_crds()
        demo.start_operator()
        demo.start_sidecar()
        demo.start_service()
        demo.apply_plugins()
        demo.start_load()
        demo.print_instructions()
        demo.serve(options.duration)

    return run_until_interrupted("demo", steps, demo.teardown)


# ---------------------------------------------------------------------------------------------
# --standalone: the sidecar on the plugins directory, no Kubernetes


ROUTES = ["POST:/6/handlers/{id}/events", "GET:/6/handlers", "POST:/6/verifiers/{id}/verifications"]


def batch(size: int) -> dict[str, object]:
    now = time.time()
    points = []
    for _ in range(size):
        status = random.choices([200, 201, 400, 500], weights=[70, 20, 7, 3])[0]
        points.append(
            {
                "series": "requests",
                "eventTime": now,
                "tags": {"service": "handlers", "route": random.choice(ROUTES), "status_code": status},
                "fields": {
                    "request_id": f"{random.getrandbits(64):016x}",
                    "execution_time": random.expovariate(20),
                },
            }
        )
        if status >= 400:
            points.append(
                {
                    "series": "errors",
                    "eventTime": now,
                    "tags": {
                        "service": "handlers",
                        "route": points[-1]["tags"]["route"],
                        "error_code": 11000 + status,
                    },
                    "fields": {"request_id": points[-1]["fields"]["request_id"]},
                }
            )
    return {"points": points}


def run_standalone(options: argparse.Namespace) -> int:
    port, admin, metrics = port_or_free(8080), port_or_free(8081), port_or_free(9100)
    command = [
        *luna_command(),
        "sidecar",
        "--plugins-dir",
        str(PLUGINS_DIR),
        "--active",
        "kettle,route_digest,http_forwarder",
        "--host",
        HOST,
        "--port",
        str(port),
        "--admin-port",
        str(admin),
        "--metrics-host",
        HOST,
        "--metrics-port",
        str(metrics),
    ]
    print("starting:", " ".join(command), flush=True)
    sidecar = subprocess.Popen(command)
    stop = False

    def on_signal(*_: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and sidecar.poll() is None:
        try:
            if request("GET", f"http://{HOST}:{metrics}/readyz")[0] == 200:
                break
        except OSError:
            pass
        time.sleep(0.1)
    else:
        print("the sidecar did not become ready", file=sys.stderr)
        sidecar.kill()
        return 1
    print(
        f"""
The sidecar is up with three example plugins. Try:
  curl http://{HOST}:{port}/kettle                      # background plugin route (class handler)
  curl -X POST http://{HOST}:{port}/kettle -d '{{"litres": 2}}'
  curl 'http://{HOST}:{port}/kettle/cups/2?sugar=1'     # path variable + query
  curl http://{HOST}:{port}/digest                      # event + background plugin working together
  curl http://{HOST}:{admin}/plugins                    # every plugin's state
  curl http://{HOST}:{metrics}/metrics | grep ^luna_    # Prometheus metrics
  curl -X POST http://{HOST}:{admin}/events/sending_event \\
       -d '{{"events": [{{"id": 1}}], "handlerId": "h1", "accountId": "a1"}}'
Edit a file in {PLUGINS_DIR} and it reloads within a second. Ctrl-C stops everything.
""",
        flush=True,
    )
    started, sent, last_report = time.monotonic(), 0, time.monotonic()
    while not stop and sidecar.poll() is None:
        if options.duration and time.monotonic() - started >= options.duration:
            break
        try:
            status, text = request("POST", f"http://{HOST}:{admin}/events/monitoring_event", batch(20))
        except OSError as exc:
            status, text = 0, repr(exc)
        if status == 202:
            sent += json.loads(text)["accepted"]
        elif not stop:
            print(f"intake answered {status}: {text}", file=sys.stderr)
        if time.monotonic() - last_report >= 5:
            print(f"generator: {sent} points sent so far", flush=True)
            last_report = time.monotonic()
        time.sleep(0.5)
    print(f"stopping (generator sent {sent} points)", flush=True)
    if sidecar.poll() is None:
        sidecar.send_signal(signal.SIGTERM)
    code = sidecar.wait(timeout=30)
    print(f"sidecar exited with {code}")
    return code


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--duration",
        type=float,
        default=0,
        help="stop this many seconds after everything is up (default 0: run until Ctrl-C)",
    )
    parser.add_argument(
        "--standalone", action="store_true", help="no Kubernetes: the sidecar on examples/plugins only"
    )
    parser.add_argument(
        "--state-dir",
        default=str(ROOT / ".luna" / "demo"),
        help="the local cluster's state directory (default: .luna/demo of the repository)",
    )
    parser.add_argument(
        "--keep-cluster",
        action="store_true",
        help="leave the local cluster running at the end for the next run (its LunaPlugins are deleted)",
    )
    parser.add_argument(
        "--print-manifests",
        action="store_true",
        help="print the LunaPlugin manifests the demo applies (YAML) and exit",
    )
    options = parser.parse_args()
    if options.print_manifests:
        print(to_yaml(lunaplugin_manifests()), end="")
        return 0
    if options.standalone:
        return run_standalone(options)
    return run_cluster(options)


if __name__ == "__main__":
    sys.exit(main())
