"""The chart's durable delivery: `sidecar.delivery` reaches the sidecar of the demo workload and
of the injection template as settings; the queue volume is always mounted at a fixed path with
`--queue-dir` pointing there (so any LunaPlugin may ask for at-least-once); every emptyDir keeps a
size limit, and the sidecar's ephemeral-storage limit covers them."""

from __future__ import annotations

from typing import Any

import pytest

from luna_operator.injection import QUEUE_VOLUME
from tests.support.chart import CHART, env_of, quantity, render, sidecars

pytestmark = pytest.mark.kube

QUEUE_DIR = "/var/lib/luna-plugins/queues"


def test_the_defaults_give_every_sidecar_a_queue_directory_and_at_most_once(kube: Any) -> None:
    for where, (container, volumes) in sidecars(render(kube, "--set", "demo.enabled=true")).items():
        env = env_of(container)
        assert env["LUNA_SIDECAR_QUEUE_DIR"] == QUEUE_DIR, where
        assert env["LUNA_SIDECAR_DELIVERY"] == "at-most-once", where
        assert (env["LUNA_SIDECAR_QUEUE_MAX_BYTES"], env["LUNA_SIDECAR_QUEUE_WHEN_FULL"]) == (
            "134217728",
            "refuse",
        )
        assert {"name": QUEUE_VOLUME, "mountPath": QUEUE_DIR} in container["volumeMounts"], where
        (queues,) = [volume for volume in volumes if volume["name"] == QUEUE_VOLUME]
        assert queues == {"name": QUEUE_VOLUME, "emptyDir": {"sizeLimit": "512Mi"}}, where
        # the volume holds at least two queues of the default bound
        assert quantity(queues["emptyDir"]["sizeLimit"]) >= 2 * int(env["LUNA_SIDECAR_QUEUE_MAX_BYTES"])


def test_the_delivery_values_reach_the_sidecars(kube: Any) -> None:
    objects = render(
        kube,
        "--set",
        "demo.enabled=true",
        "--set",
        "sidecar.delivery.mode=at-least-once",
        "--set",
        "sidecar.delivery.maxQueueBytes=1073741824",
        "--set",
        "sidecar.delivery.whenFull=dropOldest",
        "--set-json",  # --set gives 0.25 as a string
        "sidecar.delivery.retry.initialBackoffSeconds=0.25",
        "--set",
        "sidecar.delivery.retry.maxBackoffSeconds=120",
        "--set",
        "sidecar.delivery.retry.maxElapsedSeconds=0",  # forever: 0 is a value, not "unset"
        "--set",
        "sidecar.delivery.breaker.failures=9",
        "--set",
        "sidecar.delivery.breaker.openSeconds=45",
        "--set",
        "sidecar.delivery.queueVolume.sizeLimit=4Gi",
        "--set",
        "sidecar.resources.limits.ephemeral-storage=6Gi",
    )
    for where, (container, volumes) in sidecars(objects).items():
        env = env_of(container)
        assert {
            key: env[key] for key in env if key.startswith(("LUNA_SIDECAR_RETRY", "LUNA_SIDECAR_BREAKER"))
        } == {
            "LUNA_SIDECAR_RETRY_INITIAL_BACKOFF": "0.25",
            "LUNA_SIDECAR_RETRY_MAX_BACKOFF": "120",
            "LUNA_SIDECAR_RETRY_MAX_ELAPSED": "0",
            "LUNA_SIDECAR_BREAKER_FAILURES": "9",
            "LUNA_SIDECAR_BREAKER_OPEN_TIME": "45",
        }, where
        assert (
            env["LUNA_SIDECAR_DELIVERY"] == "at-least-once"
            and env["LUNA_SIDECAR_QUEUE_WHEN_FULL"] == "dropOldest"
        )
        assert env["LUNA_SIDECAR_QUEUE_MAX_BYTES"] == "1073741824"
        (queues,) = [volume for volume in volumes if volume["name"] == QUEUE_VOLUME]
        assert queues["emptyDir"] == {"sizeLimit": "4Gi"}


@pytest.mark.parametrize(
    "args",
    [
        [],
        ["--set", "sidecar.packages.indexUrl=https://pypi.example/simple"],  # the packages emptyDir too
    ],
)
def test_every_emptydir_has_a_size_limit_and_the_ephemeral_limit_covers_them(
    kube: Any, args: list[str]
) -> None:
    for where, (container, volumes) in sidecars(render(kube, "--set", "demo.enabled=true", *args)).items():
        mounted = {mount["name"] for mount in container["volumeMounts"]}
        empty_dirs = [volume for volume in volumes if "emptyDir" in volume and volume["name"] in mounted]
        assert {volume["name"] for volume in empty_dirs} >= {"luna-sidecar-tmp", QUEUE_VOLUME}
        for volume in empty_dirs:
            assert volume["emptyDir"].get("sizeLimit"), (where, volume)
        total = sum(quantity(volume["emptyDir"]["sizeLimit"]) for volume in empty_dirs)
        limit = quantity(container["resources"]["limits"]["ephemeral-storage"])
        # the emptyDirs count toward the pod's ephemeral storage; logs need some room besides
        assert limit >= total + 256 * 1024 * 1024, (where, limit, total)


@pytest.mark.parametrize(
    "bad",
    [
        "sidecar.delivery.mode=exactly-once",
        "sidecar.delivery.maxQueueBytes=1",
        "sidecar.delivery.whenFull=block",
        "sidecar.delivery.retry.maxElapsedSeconds=-1",
        "sidecar.delivery.breaker.failures=0",
        "sidecar.delivery.queueVolume.sizeLimit=lots",
    ],
)
def test_the_schema_refuses_bad_delivery_values(kube: Any, bad: str) -> None:
    result = kube.helm("template", "luna", str(CHART), "--set", bad, check=False)
    assert result.returncode != 0
    key = bad.split("=")[0].split(".")[-1]
    assert "schema" in result.stderr and key in result.stderr, result.stderr
