"""A real ``prometheus`` process for tests: started on a free loopback port, queried over its API.

Prometheus and promtool are built from their Go module (``luna-cluster build
--prometheus``, which ``make test`` runs first): Debian's package leaves out Kubernetes service
discovery, which the pod suite needs. Without them a test fails rather than skips.
"""

from __future__ import annotations

import ssl
import subprocess
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.support.sidecar_harness import HOST, free_port, http, wait_for

#: seconds to wait for Prometheus to be ready, or to have scraped what a test expects
SCRAPE_WAIT = 30.0


def required_tool(name: str) -> str:
    """The path of ``prometheus`` or ``promtool`` (built, or reused from the build cache); fails the
    test (never skips) when they cannot be built."""
    from luna_cluster import tools

    try:
        return str(tools.ensure(tools.PROMETHEUS)[name])
    except tools.BuildError as exc:
        pytest.fail(f"{name} is needed and could not be built: {exc}")


@dataclass
class Prometheus:
    """A running ``prometheus`` process on loopback."""

    process: subprocess.Popen[bytes]
    url: str
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def api(self, path: str, **params: str) -> Any:
        """The ``data`` of a successful API reply to GET ``path``; fails the test otherwise."""
        query = f"?{urllib.parse.urlencode(params)}" if params else ""
        reply = http("GET", f"{self.url}{path}{query}", timeout=5)
        assert reply.status == 200, reply.text
        body = reply.json()
        assert body["status"] == "success", body
        return body["data"]

    def query(self, expression: str) -> dict[str, float]:
        """An instant query: for each series of the vector, its label values in the order of the label
        names, joined by ',' -> its value."""
        result = self.api("/api/v1/query", query=expression)
        return {
            ",".join(value for _, value in sorted(item["metric"].items())): float(item["value"][1])
            for item in result["result"]
        }

    def stop(self, timeout: float = 30.0) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def start_prometheus(
    config: Path,
    workdir: Path,
    attempts: int = 3,
    *,
    web_config: Path | None = None,
    ca_file: Path | None = None,
    host: str = HOST,
) -> Prometheus:
    """Start ``prometheus`` with ``config`` on a free loopback port; returns once /-/ready answers.
    With ``web_config`` (Prometheus's ``--web.config.file``: TLS) it serves ``https://``, checked
    against ``ca_file``. ``host``: the address it listens on (an address of this machine).

    Another process may take the free port before Prometheus binds it: then it tries a new one.
    """
    binary = required_tool("prometheus")
    for attempt in range(attempts):
        port = free_port()
        log_path = workdir / f"prometheus-{attempt}.log"
        with log_path.open("wb") as log_file:
            process = subprocess.Popen(
                [
                    binary,
                    f"--config.file={config}",
                    f"--storage.tsdb.path={workdir / f'tsdb-{attempt}'}",
                    f"--web.listen-address={host}:{port}",
                    *([f"--web.config.file={web_config}"] if web_config is not None else []),
                ],
                stdout=log_file,
                stderr=subprocess.STDOUT,
                cwd=workdir,
            )
        scheme = "https" if web_config is not None else "http"
        running = Prometheus(process, f"{scheme}://{host}:{port}", log_path)

        def ready(running: Prometheus = running) -> bool:
            if running.process.poll() is not None:
                return True
            try:
                if web_config is None:
                    return http("GET", running.url + "/-/ready", timeout=1).status == 200
                context = ssl.create_default_context(cafile=ca_file)
                with urllib.request.urlopen(running.url + "/-/ready", timeout=1, context=context) as reply:
                    return bool(reply.status == 200)
            except OSError:
                return False

        try:
            wait_for(ready, timeout=SCRAPE_WAIT, what="prometheus /-/ready")
        except BaseException:
            running.stop()  # not ready in time: it must not outlive the test
            raise
        if process.poll() is None:
            return running
        if "address already in use" not in running.log():
            raise AssertionError(f"prometheus exited with {process.returncode}:\n{running.log()[-3000:]}")
    raise AssertionError(f"prometheus found no free port in {attempts} attempts")
