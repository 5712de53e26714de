"""The chart's `sidecar.isolation` values: the limits of plugins that run in a process of their own
(`spec.isolation: process`) reach the demo's and the injection template's sidecar as its
`LUNA_SIDECAR_ISOLATED_*` settings, which the sidecar reads as given; the defaults leave the
sidecar container's memory limit room for one isolated plugin besides the sidecar; the schema
refuses values the sidecar would."""

from __future__ import annotations

from typing import Any

import pytest

from luna_sidecar.config import resolve
from tests.support.chart import CHART, env_of, quantity, render, sidecars

pytestmark = pytest.mark.kube

ISOLATED = (
    "LUNA_SIDECAR_ISOLATED_MEMORY",
    "LUNA_SIDECAR_ISOLATED_STALL_TIMEOUT",
    "LUNA_SIDECAR_ISOLATED_OPEN_FILES",
    "LUNA_SIDECAR_ISOLATED_PROCESSES",
    "LUNA_SIDECAR_ISOLATED_CRASH_LIMIT",
)
#: what the sidecar itself takes besides its isolated plugins (its RSS is about 50 MiB idle)
SIDECAR_ROOM = 192 * 1024 * 1024


def isolated_env(container: dict[str, Any]) -> dict[str, str]:
    env = env_of(container)
    return {key: env[key] for key in env if key.startswith("LUNA_SIDECAR_ISOLATED_")}


def test_the_defaults_reach_every_sidecar_and_fit_its_memory_limit(kube: Any) -> None:
    for where, (container, _) in sidecars(render(kube, "--set", "demo.enabled=true")).items():
        assert isolated_env(container) == {
            "LUNA_SIDECAR_ISOLATED_MEMORY": "268435456",
            "LUNA_SIDECAR_ISOLATED_STALL_TIMEOUT": "10",
            "LUNA_SIDECAR_ISOLATED_OPEN_FILES": "256",
            "LUNA_SIDECAR_ISOLATED_PROCESSES": "64",
            "LUNA_SIDECAR_ISOLATED_CRASH_LIMIT": "5",
        }, where
        # as values.yaml says: the container's limit covers the sidecar and one isolated plugin
        limit = quantity(container["resources"]["limits"]["memory"])
        assert limit >= SIDECAR_ROOM + int(isolated_env(container)["LUNA_SIDECAR_ISOLATED_MEMORY"]), where


def test_the_values_reach_every_sidecar_and_the_sidecar_reads_them(kube: Any) -> None:
    objects = render(
        kube,
        "--set",
        "demo.enabled=true",
        "--set",
        "sidecar.isolation.memory=1073741824",
        "--set-json",  # --set gives 2.5 as a string
        "sidecar.isolation.stallTimeout=2.5",
        "--set",
        "sidecar.isolation.openFiles=1024",
        "--set",
        "sidecar.isolation.processes=512",
        "--set",
        "sidecar.isolation.crashLimit=3",
    )
    for where, (container, _) in sidecars(objects).items():
        env = isolated_env(container)
        assert env == {
            "LUNA_SIDECAR_ISOLATED_MEMORY": "1073741824",
            "LUNA_SIDECAR_ISOLATED_STALL_TIMEOUT": "2.5",
            "LUNA_SIDECAR_ISOLATED_OPEN_FILES": "1024",
            "LUNA_SIDECAR_ISOLATED_PROCESSES": "512",
            "LUNA_SIDECAR_ISOLATED_CRASH_LIMIT": "3",
        }, where
        # the container's variables, as the sidecar's own settings parser reads them
        given = {item["name"]: item["value"] for item in container["env"] if "value" in item}
        config = resolve({}, given)
        assert (
            config.isolated_memory,
            config.isolated_stall_timeout,
            config.isolated_open_files,
            config.isolated_processes,
            config.isolated_crash_limit,
        ) == (1 << 30, 2.5, 1024, 512, 3), where


def test_a_partial_mapping_keeps_the_other_defaults(kube: Any) -> None:
    objects = render(kube, "--set", "demo.enabled=true", "--set", "sidecar.isolation.crashLimit=2")
    for where, (container, _) in sidecars(objects).items():
        env = isolated_env(container)
        assert set(env) == set(ISOLATED), where
        assert (env["LUNA_SIDECAR_ISOLATED_CRASH_LIMIT"], env["LUNA_SIDECAR_ISOLATED_MEMORY"]) == (
            "2",
            "268435456",
        )


@pytest.mark.parametrize(
    "bad",
    [
        "sidecar.isolation.memory=1048576",  # below the sidecar's 64 MiB floor
        "sidecar.isolation.memory=512Mi",  # bytes, not a quantity
        "sidecar.isolation.stallTimeout=0",
        "sidecar.isolation.openFiles=0",
        "sidecar.isolation.processes=0",
        "sidecar.isolation.crashLimit=0",
        "sidecar.isolation.cpu=1",
    ],
)
def test_the_schema_refuses_bad_isolation_values(kube: Any, bad: str) -> None:
    result = kube.helm("template", "luna", str(CHART), "--set", bad, check=False)
    assert result.returncode != 0
    key = bad.split("=")[0].split(".")[-1]
    assert "schema" in result.stderr and key in result.stderr, result.stderr
