"""Running the real `luna-plugins sidecar` process and talking HTTP to it, on loopback."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from luna_sidecar.testing import Reply

HOST = "127.0.0.1"


_HANDED_OUT: set[int] = set()


def free_port() -> int:
    """A TCP port free on loopback right now, never one this test process was handed before.

    The kernel may hand a just-closed port out again at once, so two calls in a row could
    otherwise give the same port to two listeners of one sidecar.
    """
    while True:
        with socket.socket() as sock:
            sock.bind((HOST, 0))
            port = int(sock.getsockname()[1])
        if port not in _HANDED_OUT:
            _HANDED_OUT.add(port)
            return port


def http(
    method: str,
    url: str,
    *,
    body: Any = None,
    raw: bytes | None = None,
    headers: dict[str, str] | None = None,
    timeout: float = 10.0,
) -> Reply:
    """One HTTP request; never raises for an HTTP error status."""
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    request = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    if data is not None and raw is None:
        request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return Reply(response.status, dict(response.headers), response.read())
    except urllib.error.HTTPError as exc:
        return Reply(exc.code, dict(exc.headers), exc.read())


def wait_for(condition: Callable[[], Any], *, timeout: float = 10.0, what: str = "condition") -> Any:
    """Poll ``condition`` until it returns something truthy; fail with ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = condition()
        if last:
            return last
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout} s waiting for {what} (last value: {last!r})")


def points(
    n: int = 1,
    *,
    series: str = "requests",
    route: str = "POST:/6/handlers/x/events",
    status: int = 200,
    elapsed: float = 0.02,
) -> dict[str, Any]:
    """An intake body with ``n`` points of ``series``."""
    return {
        "points": [
            {
                "series": series,
                "eventTime": 1_700_000_000.0 + index,
                "tags": {"service": "handlers", "route": route, "status_code": status},
                "fields": {"request_id": f"req-{index}", "execution_time": elapsed},
            }
            for index in range(n)
        ]
    }


@dataclass
class Sidecar:
    """A running sidecar process with its plugins directory."""

    process: subprocess.Popen[bytes]
    plugins_dir: Path
    log_path: Path
    public: str
    admin: str
    metrics_url: str
    extra: dict[str, Any] = field(default_factory=dict)

    def get(self, path: str, **kw: Any) -> Reply:
        return http("GET", self.public + path, **kw)

    def post_event(self, event_name: str, body: Any = None, **kw: Any) -> Reply:
        return http("POST", f"{self.admin}/events/{event_name}", body=body, **kw)

    def plugins(self) -> dict[str, dict[str, Any]]:
        reply = http("GET", self.admin + "/plugins")
        assert reply.status == 200, reply.text
        return {plugin["name"]: plugin for plugin in reply.json()["plugins"]}

    def plugin(self, name: str) -> dict[str, Any]:
        return self.plugins()[name]

    def metrics_text(self) -> str:
        reply = http("GET", self.metrics_url + "/metrics")
        assert reply.status == 200
        return reply.text

    def metric(self, name: str, **labels: str) -> float:
        """Sum of the samples called ``name`` whose labels include ``labels`` (0 when none)."""
        total = 0.0
        for family in text_string_to_metric_families(self.metrics_text()):
            for sample in family.samples:
                if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                    total += sample.value
        return total

    def series_of(self, plugin: str) -> set[str]:
        """Names of the samples labelled ``plugin=<plugin>``."""
        return {
            sample.name
            for family in text_string_to_metric_families(self.metrics_text())
            for sample in family.samples
            if sample.labels.get("plugin") == plugin
        }

    def write_plugin(self, name: str, code: str) -> None:
        """Write ``name``.py atomically (a rename), as a deploy tool would."""
        target = self.plugins_dir / f"{name}.py"
        tmp = self.plugins_dir / f".{name}.py.tmp"
        tmp.write_text(textwrap.dedent(code))
        os.replace(tmp, target)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int:
        if self.process.poll() is None:
            self.process.send_signal(sig)
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            raise AssertionError(
                f"sidecar did not exit within {timeout} s after signal {sig}\n{self.log()[-3000:]}"
            ) from None


def sidecar_command() -> list[str]:
    script = Path(sys.executable).with_name("luna-plugins")
    if script.exists():
        return [str(script)]
    return [sys.executable, "-m", "luna_cli.main"]


def start_sidecar(
    workdir: Path,
    *,
    plugins: dict[str, str] | None = None,
    active: Iterable[str] | None = None,
    args: Iterable[str] = (),
    env: dict[str, str] | None = None,
    settings: dict[str, dict[str, Any]] | None = None,
    wait_ready: bool = True,
    standalone: bool = True,
) -> Sidecar:
    """Write ``plugins`` (name -> code) into a fresh directory and start the sidecar on free ports."""
    plugins_dir = workdir / "plugins"
    plugins_dir.mkdir(parents=True, exist_ok=True)
    for name, code in (plugins or {}).items():
        (plugins_dir / f"{name}.py").write_text(textwrap.dedent(code))
    for name, values in (settings or {}).items():
        (plugins_dir / f"{name}.settings.json").write_text(json.dumps(values))
    attempts = 3
    for attempt in range(1, attempts + 1):
        sidecar = _launch(workdir, plugins_dir, list(args), active, env, standalone)
        if not wait_ready:
            return sidecar
        try:
            _wait_ready(sidecar)
        except _PortTakenError:
            # a port picked free was bound by someone else (another test's client connection
            # takes its ephemeral port from the same range) before the sidecar bound it
            if attempt == attempts:
                raise
            continue
        except BaseException:
            # never ready: nobody else holds it to stop it (and its plugins' processes end with it)
            if sidecar.process.poll() is None:
                sidecar.process.kill()
                sidecar.process.wait()
            raise
        return sidecar
    raise AssertionError("unreachable")


class _PortTakenError(AssertionError):
    """The sidecar exited because one of its ports was taken before it could bind it."""


def _launch(
    workdir: Path,
    plugins_dir: Path,
    args: list[str],
    active: Iterable[str] | None,
    env: dict[str, str] | None,
    standalone: bool,
) -> Sidecar:
    port, admin_port, metrics_port = free_port(), free_port(), free_port()
    command = [
        *sidecar_command(),
        "sidecar",
        *(["--plugins-dir", str(plugins_dir)] if standalone else []),
        "--host",
        HOST,
        "--port",
        str(port),
        "--admin-host",
        HOST,
        "--admin-port",
        str(admin_port),
        "--metrics-host",
        HOST,
        "--metrics-port",
        str(metrics_port),
        "--poll-interval",
        "0.1",
        "--reload-debounce",
        "0.2",
        *args,
    ]
    if active is not None:
        command += ["--active", ",".join(active)]
    if "--state-dir" not in command:
        command += ["--state-dir", str(workdir / "state")]
    log_path = workdir / "sidecar.log"
    child_env = {k: v for k, v in os.environ.items() if not k.startswith("LUNA_")}
    child_env.update(env or {})
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(
            command, stdout=log_file, stderr=subprocess.STDOUT, env=child_env, cwd=workdir
        )
    sidecar = Sidecar(
        process,
        plugins_dir,
        log_path,
        f"http://{HOST}:{port}",
        f"http://{HOST}:{admin_port}",
        f"http://{HOST}:{metrics_port}",
    )
    return sidecar


def _wait_ready(sidecar: Sidecar) -> None:
    def ready() -> bool:
        if sidecar.process.poll() is not None:
            log = sidecar.log()
            failure = _PortTakenError if "address already in use" in log.lower() else AssertionError
            raise failure(f"sidecar exited with {sidecar.process.returncode}:\n{log[-3000:]}")
        try:
            return http("GET", sidecar.metrics_url + "/readyz", timeout=1).status == 200
        except OSError:
            return False

    wait_for(ready, timeout=20, what="sidecar /readyz")


def start_cluster_sidecar(
    kube: Any,
    namespace: str,
    workdir: Path,
    pod: str,
    *args: str,
    env: dict[str, str] | None = None,
    wait_ready: bool = True,
) -> Sidecar:
    """A sidecar in cluster mode for ``namespace`` (service ``handlers``) as pod ``pod``,
    reporting every second, with the cluster's kubeconfig (and ``env``)."""
    workdir.mkdir()
    return start_sidecar(
        workdir,
        standalone=False,
        args=[
            "--namespace",
            namespace,
            "--service",
            "handlers",
            "--pod-name",
            pod,
            "--heartbeat-interval",
            "1",
            *args,
        ],
        env={"KUBECONFIG": str(kube.kubeconfig), **(env or {})},
        wait_ready=wait_ready,
    )
