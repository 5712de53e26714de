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


def test_the_settings_reference_lists_every_operator_setting() -> None:
    page = (Path(__file__).resolve().parents[2] / "docs" / "reference" / "operator-settings.md").read_text()
    for flag, variable, default, meaning in settings_table():
        assert f"| `{flag}` | `{variable}` | `{default}` | {meaning} |" in page


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


@pytest.mark.parametrize(
    ("flags", "environ", "expected"),
    [
        ({"report_ttl": "0"}, {}, "--report-ttl='0': must be a number of seconds above 0"),
        ({"report_ttl": "-5"}, {}, "--report-ttl='-5': must be a number of seconds above 0"),
        ({"report_ttl": "nan"}, {}, "--report-ttl='nan': must be a number of seconds above 0"),
        ({"report_ttl": "inf"}, {}, "--report-ttl='inf': must be a number of seconds above 0"),
        (
            {},
            {"LUNA_OPERATOR_REPORT_TTL": "soon"},
            "LUNA_OPERATOR_REPORT_TTL='soon': not a number of seconds",
        ),
        ({"log_level": "LOUD"}, {}, "--log-level='LOUD': not a log level (DEBUG, INFO, WARNING, ERROR)"),
        ({"webhook_port": "0"}, {}, "--webhook-port='0': not a port number (1-65535)"),
        ({"webhook_port": "70000"}, {}, "--webhook-port='70000': not a port number (1-65535)"),
        ({"liveness": "8090"}, {}, "--liveness='8090': expected host:port"),
        ({"liveness": "0.0.0.0:99999"}, {}, "--liveness='0.0.0.0:99999': not a port number (1-65535)"),
        ({"priority": "high"}, {}, "--priority='high': not an integer"),
        (
            {"namespaces": ["team-a", "Team_B"]},
            {},
            "--namespace='Team_B': 'Team_B' is not one of the namespace names expected: not a namespace name",
        ),
        ({"peering": "Luna Peers"}, {}, "--peering='Luna Peers': not a Kubernetes object name"),
        ({"code_check_memory": "16"}, {}, "--code-check-memory='16': must be at least 64 (MiB)"),
        ({"code_check_timeout": "0"}, {}, "--code-check-timeout='0': must be a number of seconds above 0"),
        ({}, {"LUNA_OPERATOR_WEBHOOK": "maybe"}, "LUNA_OPERATOR_WEBHOOK='maybe': not a boolean"),
        ({"webhook_cert": "/tls.crt"}, {}, "--webhook-cert and --webhook-key go together"),
    ],
)
def test_bad_settings_are_refused_naming_the_setting(
    flags: dict[str, object], environ: dict[str, str], expected: str
) -> None:
    with pytest.raises(ValueError) as refused:
        resolve(flags, environ)
    assert str(refused.value).startswith(expected), refused.value


def test_settings_are_normalised() -> None:
    config = resolve({"log_level": "debug", "report_ttl": "2.5", "code_check_memory": "256"}, {})
    assert (config.log_level, config.report_ttl, config.code_check_memory) == ("DEBUG", 2.5, 256)


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["--report-ttl", "0"], "--report-ttl"),
        (["--log-level", "LOUD"], "--log-level"),
        (["--webhook-port", "0"], "--webhook-port"),
        (["--liveness", "127.0.0.1:0"], "--liveness"),
    ],
)
def test_the_operator_process_exits_2_naming_the_flag(args: list[str], named: str) -> None:
    """The real `luna-plugins operator` process: refused before it contacts anything."""
    import subprocess
    import sys

    result = subprocess.run(
        [sys.executable, "-m", "luna_cli.main", "operator", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": "/usr/bin:/bin", "KUBECONFIG": "/nonexistent"},
        check=False,
    )
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith(f"luna-plugins operator: {named}="), result.stderr
    assert "Traceback" not in result.stderr


def test_the_operators_own_ca_is_checked_before_anything_starts() -> None:
    own = {
        "webhook": "true",
        "webhook_ca_secret": "luna-system/luna-webhook-ca",
        "webhook_dns_names": "svc, svc.luna-system.svc ,",
        "webhook_configurations": "validating/luna,mutating/luna-inject",
    }
    config = resolve(own, {})
    assert config.webhook_dns_names == ("svc", "svc.luna-system.svc")
    assert config.webhook_configurations == ("validating/luna", "mutating/luna-inject")
    assert config.webhook_ca_validity > 3 * config.webhook_ca_overlap
    for changed, message in [
        ({"webhook": None}, "--webhook-ca-secret needs --webhook"),
        ({"webhook_cert": "/c", "webhook_key": "/k"}, "exclude each other"),
        ({"webhook_dns_names": None}, "needs --webhook-dns-names"),
        ({"webhook_ca_secret": "no-slash"}, "expected NAMESPACE/NAME"),
        ({"webhook_ca_secret": "Bad_NS/name"}, "expected NAMESPACE/NAME"),
        ({"webhook_ca_secret": "ns/Bad Name"}, "not a Kubernetes object name"),
        ({"webhook_dns_names": "svc,evil name"}, "'evil name' is not one of the DNS names expected"),
        ({"webhook_dns_names": " , "}, "one or more DNS names"),
        ({"webhook_configurations": "luna"}, "'luna' is not one of the webhook configurations"),
        ({"webhook_configurations": "admission/luna"}, "is not one of the webhook configurations"),
        ({"webhook_configurations": "validating/Bad Name"}, "is not one of the webhook configurations"),
        ({"webhook_ca_overlap": "3600", "webhook_ca_validity": "10800"}, "below a third"),
        ({"webhook_serving_validity": "99999999"}, "cannot exceed"),
        ({"webhook_ca_validity": "-1"}, "above 0"),
    ]:
        with pytest.raises(ValueError, match=message):
            resolve({**own, **changed}, {})
    with pytest.raises(ValueError, match="need --webhook-ca-secret"):
        resolve({"webhook": "true", "webhook_configurations": "validating/luna"}, {})


def test_seconds_take_durations_as_kubernetes_tools_write_them() -> None:
    for text, seconds in [
        ("720h", 2592000.0),
        ("1h30m", 5400.0),
        ("90s", 90.0),
        ("500ms", 0.5),
        ("2.5", 2.5),
    ]:
        assert resolve({"report_ttl": text}, {}).report_ttl == seconds
    for text in ("1h 30m", "h", "30x", "1h-30m", "0s", "-5m", "inf", "nan"):
        with pytest.raises(ValueError, match="--report-ttl="):
            resolve({"report_ttl": text}, {})
