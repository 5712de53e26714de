"""The sidecar's ConfigMap mirror against the real API server: 410 Gone and silence re-list,
a watch closed on schedule resumes, and changes arrive without a re-list."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import pytest

from luna_sidecar.kube.kube_source import ConfigMapMirror
from tests.support.control_plane import restart_apiserver

pytestmark = pytest.mark.kube


def config_map(name: str, value: str) -> str:
    return json.dumps(
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": name, "labels": {"luna.dev/service": "handlers"}},
            "data": {"k": value},
        }
    )


async def until(condition: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


async def test_a_watch_from_an_expired_version_asks_for_a_relist(
    kube: Any, api_client: Any, namespace: str
) -> None:
    # a fresh API server caches watch events from the revision it started at: "1" is then
    # older than anything it can replay (on a young cluster it might still be replayable)
    restart_apiserver(kube)
    mirror = ConfigMapMirror(
        api_client, namespace, "luna.dev/service=handlers", lambda: None, server_timeout=30, client_timeout=40
    )
    started = time.monotonic()
    assert await mirror._watch("1") is None  # 410 Gone: list again
    assert time.monotonic() - started < 5


async def test_changes_arrive_and_silence_or_schedule_is_handled(
    api_client: Any, namespace: str, kube: Any
) -> None:
    changes: list[float] = []
    mirror = ConfigMapMirror(
        api_client,
        namespace,
        "luna.dev/service=handlers",
        lambda: changes.append(1.0),
        server_timeout=2,
        client_timeout=30,
    )
    task = asyncio.create_task(mirror.run())
    try:
        await asyncio.wait_for(mirror.synced.wait(), 30)
        kube.kubectl("apply", "-n", namespace, "-f", "-", input=config_map("one", "1"))
        await until(lambda: "one" in mirror.items, 10, "the created ConfigMap")
        kube.kubectl("apply", "-n", namespace, "-f", "-", input=config_map("one", "2"))
        await until(lambda: mirror.items["one"].data == {"k": "2"}, 10, "the update")
        kube.kubectl("delete", "configmap", "one", "-n", namespace)
        await until(lambda: "one" not in mirror.items, 10, "the deletion")
        await asyncio.sleep(3)  # the server closes the 2 s watch on schedule: resume, no re-list
        assert mirror.lists == 1
    finally:
        task.cancel()
    silent = ConfigMapMirror(
        api_client, namespace, "luna.dev/service=handlers", lambda: None, server_timeout=60, client_timeout=1
    )
    task = asyncio.create_task(silent.run())
    try:
        await until(lambda: silent.lists >= 2, 15, "a silent watch to be followed by a fresh LIST")
    finally:
        task.cancel()
