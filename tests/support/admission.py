"""Admission calls through the API server while something changes, and the API server's own
count of webhook calls that failed."""

from __future__ import annotations

import threading
from typing import Any

from tests.support.sidecar_harness import wait_for


class AdmissionLoad:
    """Server-side dry-run creates of ``manifest`` (each goes through the admission webhooks and
    is never stored), one after the other in a thread, for as long as the ``with`` block runs;
    ``failures`` holds kubectl's message for every call that did not succeed."""

    def __init__(self, kube: Any, manifest: str) -> None:
        self.kube = kube
        self.manifest = manifest
        self.calls = 0
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> AdmissionLoad:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(timeout=60)

    def _run(self) -> None:
        while not self._stop.is_set():
            result = self.kube.kubectl(
                "create", "--dry-run=server", "-f", "-", input=self.manifest, check=False, timeout=60
            )
            self.calls += 1
            if result.returncode != 0:
                self.failures.append(result.stderr.strip())

    def wait_calls(self, more: int, timeout: float = 60) -> None:
        """Wait for ``more`` calls after this one (or the first failure)."""
        target = self.calls + more
        wait_for(
            lambda: self.calls >= target or self.failures, timeout=timeout, what=f"{more} admission calls"
        )


def webhook_failures(kube: Any, webhook: str) -> float:
    """The API server's count of calls to webhooks whose name contains ``webhook`` that failed
    (could not be made, or failed open), not answers that denied."""
    text = kube.kubectl("get", "--raw", "/metrics").stdout
    total = 0.0
    for line in text.splitlines():
        if line.startswith(
            ("apiserver_admission_webhook_rejection_count{", "apiserver_admission_webhook_fail_open_count{")
        ):
            if webhook in line and 'error_type="no_error"' not in line:
                total += float(line.rsplit(" ", 1)[1])
    return total
