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


def test_webhook_managed_takes_a_boolean_value() -> None:
    assert resolve({}, {}).webhook_managed is True
    assert resolve({"webhook_managed": "false"}, {}).webhook_managed is False
    for text, expected in [
        ("0", False),
        ("off", False),
        ("No", False),
        ("1", True),
        ("yes", True),
        ("ON", True),
    ]:
        assert resolve({}, {"LUNA_OPERATOR_WEBHOOK_MANAGED": text}).webhook_managed is expected
    assert resolve({"webhook_managed": "true"}, {"LUNA_OPERATOR_WEBHOOK_MANAGED": "false"}).webhook_managed
    with pytest.raises(ValueError, match="--webhook-managed='maybe': not a boolean"):
        resolve({"webhook_managed": "maybe"}, {})
    with pytest.raises(ValueError, match="LUNA_OPERATOR_WEBHOOK_MANAGED='x'"):
        resolve({}, {"LUNA_OPERATOR_WEBHOOK_MANAGED": "x"})


def test_inject_needs_the_webhook_and_a_template() -> None:
    config = resolve({"inject": "true", "webhook": "true", "inject_template": "/etc/luna/inject.yaml"}, {})
    assert (config.inject, config.inject_template) == (True, "/etc/luna/inject.yaml")
    env = {
        "LUNA_OPERATOR_WEBHOOK": "true",
        "LUNA_OPERATOR_INJECT": "true",
        "LUNA_OPERATOR_INJECT_TEMPLATE": "t.yaml",
    }
    assert resolve({}, env).inject and not resolve({}, {}).inject
    with pytest.raises(ValueError, match="--inject needs --webhook"):
        resolve({"inject": "true", "inject_template": "t.yaml"}, {})
    with pytest.raises(ValueError, match="--inject needs --inject-template"):
        resolve({"inject": "true", "webhook": "true"}, {})
    with pytest.raises(ValueError, match="LUNA_OPERATOR_INJECT='sure'"):
        resolve({}, {"LUNA_OPERATOR_INJECT": "sure"})
    assert resolve({"inject_template": "t.yaml"}, {}).inject is False  # a template alone injects nothing


def test_the_flags_parse_as_documented() -> None:
    import argparse

    from luna_operator.config import add_arguments

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args(
        ["--webhook", "--webhook-managed", "false", "--inject", "--inject-template", "/t.yaml"]
    )
    config = resolve(vars(args), {})
    assert (config.webhook, config.webhook_managed, config.inject, config.inject_template) == (
        True,
        False,
        True,
        "/t.yaml",
    )


def test_a_bad_inject_template_stops_the_operator_with_the_path(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import argparse

    from luna_operator import cli

    parser = argparse.ArgumentParser()
    cli.add_arguments(parser)
    missing = tmp_path / "inject.yaml"
    args = parser.parse_args(["--webhook", "--inject", "--inject-template", str(missing)])
    assert cli.run(args) == 2
    assert f"luna-plugins operator: injection template {missing}: cannot read it" in capsys.readouterr().err
    missing.write_text("container: {image: x}\n")
    assert cli.run(args) == 2
    assert "`container.name` is required" in capsys.readouterr().err
