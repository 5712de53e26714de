"""The chart's ``logFormat`` values: the operator's ``--log-format`` flag and the sidecar
container's ``LUNA_SIDECAR_LOG_FORMAT``; the schema refuses a format the processes do not know."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.support.chart import CHART, of_kind, render, service_chart

pytestmark = pytest.mark.kube


def operator_args(objects: list[dict[str, Any]]) -> list[str]:
    (deployment,) = [d for d in of_kind(objects, "Deployment") if "operator" in d["metadata"]["name"]]
    args: list[str] = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
    return args


def test_the_operator_flag_follows_the_value(kube: Any) -> None:
    assert "--log-format=text" in operator_args(render(kube))
    assert "--log-format=json" in operator_args(render(kube, "--set", "operator.logFormat=json"))


def test_the_sidecar_variable_follows_the_value(kube: Any, tmp_path: Path) -> None:
    for args, expected in (((), "text"), (("--set", "luna-plugins.sidecar.logFormat=json"), "json")):
        objects = render(kube, *args, chart=service_chart(tmp_path / expected))
        (deployment,) = [d for d in of_kind(objects, "Deployment") if d["metadata"]["name"] == "handlers"]
        sidecar = deployment["spec"]["template"]["spec"]["containers"][1]
        env = {item["name"]: item.get("value") for item in sidecar["env"]}
        assert env["LUNA_SIDECAR_LOG_FORMAT"] == expected


def test_the_schema_refuses_an_unknown_format(kube: Any) -> None:
    refused = kube.helm("template", "luna", str(CHART), "--set", "operator.logFormat=xml", check=False)
    assert refused.returncode != 0
    assert "/operator/logFormat" in refused.stderr and "'text', 'json'" in refused.stderr
