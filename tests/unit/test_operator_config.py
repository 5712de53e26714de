"""Operator settings: flags over environment over defaults, and the README lists them all."""

from __future__ import annotations

from pathlib import Path

import pytest

from luna_operator.config import OperatorConfig, resolve, settings_table


def test_defaults_are_safe() -> None:
    config = resolve({}, {})
    assert config == OperatorConfig()
    assert config.namespaces == () and config.peering is None and not config.webhook
    assert config.liveness.startswith("127.0.0.1:") and config.webhook_host == "127.0.0.1"


def test_flags_win_over_environment() -> None:
    env = {
        "LUNA_OPERATOR_NAMESPACES": "a, b",
        "LUNA_OPERATOR_WEBHOOK": "true",
        "LUNA_OPERATOR_WEBHOOK_PORT": "9000",
    }
    assert resolve({}, env).namespaces == ("a", "b")
    config = resolve({"namespaces": ["c"], "webhook_port": "9100"}, env)
    assert (config.namespaces, config.webhook, config.webhook_port) == (("c",), True, 9100)


def test_bad_port_names_the_setting() -> None:
    with pytest.raises(ValueError, match="LUNA_OPERATOR_WEBHOOK_PORT='x'"):
        resolve({}, {"LUNA_OPERATOR_WEBHOOK_PORT": "x"})


def test_readme_lists_every_operator_setting() -> None:
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    for flag, variable, default, meaning in settings_table():
        assert f"| `{flag}` | `{variable}` | `{default}` | {meaning} |" in readme
