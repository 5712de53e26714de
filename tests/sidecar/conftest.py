"""Fixtures starting real sidecar processes; every one is stopped after its test."""

from __future__ import annotations

import signal
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.sidecar_harness import Sidecar, start_sidecar


@pytest.fixture
def sidecar_factory(tmp_path: Path) -> Iterator[Callable[..., Sidecar]]:
    """Start sidecars in per-call directories; kills whatever is still running at the end."""
    started: list[Sidecar] = []

    def factory(**kwargs: Any) -> Sidecar:
        workdir = tmp_path / f"sidecar{len(started)}"
        workdir.mkdir()
        sidecar = start_sidecar(workdir, **kwargs)
        started.append(sidecar)
        return sidecar

    yield factory
    for sidecar in started:
        if sidecar.process.poll() is None:
            sidecar.process.send_signal(signal.SIGKILL)
            sidecar.process.wait()
