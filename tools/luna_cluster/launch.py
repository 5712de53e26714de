"""Starting the cluster's processes and waiting until they are ready."""

from __future__ import annotations

import ssl
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable

from . import procs
from .state import ClusterError, StateDir


def spawn(
    state: StateDir, component: str, argv: list[str], env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    """Start ``argv`` in its own session (it outlives ``cluster up``), log to ``DIR/logs``, pid file."""
    state.logs.mkdir(parents=True, exist_ok=True)
    state.run.mkdir(parents=True, exist_ok=True)
    with state.log(component).open("ab") as log:
        log.write(f"\n=== {time.strftime('%Y-%m-%dT%H:%M:%S')} {' '.join(argv)}\n".encode())
        log.flush()
        process = subprocess.Popen(
            argv,
            cwd=state.root,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # own session: survives `up` exiting and its terminal's signals
            close_fds=True,
            env=env,
        )
    state.pid_file(component).write_text(f"{process.pid}\n")
    return process


def http_get(url: str, context: ssl.SSLContext | None, timeout: float = 2.0) -> tuple[int, str]:
    """Status and body of a GET; 0 and "" when nothing answers."""
    try:
        with urllib.request.urlopen(url, timeout=timeout, context=context) as response:
            return int(response.status), response.read().decode(errors="replace")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode(errors="replace")
    except (urllib.error.URLError, OSError):
        return 0, ""


def admin_tls(state: StateDir) -> ssl.SSLContext:
    """TLS context with the cluster CA and the admin client certificate."""
    context = ssl.create_default_context(cafile=str(state.pki.ca_cert))
    context.load_cert_chain(str(state.pki.path("admin.crt")), str(state.pki.path("admin.key")))
    return context


def wait_until(
    what: str,
    check: Callable[[], bool],
    state: StateDir,
    component: str,
    process: subprocess.Popen[bytes] | None,
    timeout: float,
) -> None:
    """Poll ``check`` until it passes; fail early (with the log tail) if ``process`` exits."""
    deadline = time.monotonic() + timeout
    while True:
        if check():
            return
        if process is not None and process.poll() is not None:
            raise ClusterError(
                f"{component} exited with code {process.returncode} while waiting for {what}; "
                f"last lines of {state.log(component)}:\n{procs.log_tail(state.log(component))}"
            )
        if time.monotonic() > deadline:
            raise ClusterError(
                f"timed out after {timeout:.0f}s waiting for {what}; "
                f"last lines of {state.log(component)}:\n{procs.log_tail(state.log(component))}"
            )
        time.sleep(0.1)
