"""Sidecar settings: flags, environment, defaults and the active list."""

from __future__ import annotations

import argparse
from dataclasses import fields
from pathlib import Path

import pytest

from luna_contract.names import active_list_key
from luna_sidecar.config import (
    ConfigError,
    SidecarConfig,
    add_arguments,
    env_name,
    flag_name,
    parse_active_list,
    resolve,
    setting_docs,
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('["kettle", "http_forwarder"]', ("kettle", "http_forwarder")),
        ("[kettle, http_forwarder]", ("kettle", "http_forwarder")),
        ("['kettle','digest']", ("kettle", "digest")),
        ("kettle, digest.py ,", ("kettle", "digest")),
        ("kettle", ("kettle",)),
        ("", ()),
        ("   ", ()),
        ("[]", ()),
    ],
)
def test_parse_active_list_forms(text: str, expected: tuple[str, ...]) -> None:
    assert parse_active_list(text) == expected


@pytest.mark.parametrize("text", ["kettle, bad-name", '["a b"]', "1plugin"])
def test_parse_active_list_rejects_non_module_names(text: str) -> None:
    with pytest.raises(ConfigError, match="Python module names"):
        parse_active_list(text)


def test_parse_active_list_rejects_duplicates() -> None:
    with pytest.raises(ConfigError, match=r"twice: \['a'\]"):
        parse_active_list("a, b, a.py")


def test_defaults_without_flags_or_environment() -> None:
    config = resolve({}, {})
    assert config == SidecarConfig()
    assert config.service == "handlers"
    assert config.active is None
    assert config.port == 8080
    assert config.callback_timeout == 10.0


def test_flag_beats_environment_beats_default() -> None:
    environ = {"LUNA_SIDECAR_PORT": "9000", "LUNA_SIDECAR_ADMIN_PORT": "9001"}
    config = resolve({"port": "7000"}, environ)
    assert config.port == 7000
    assert config.admin_port == 9001
    assert config.metrics_port == 9100


def test_conversions() -> None:
    config = resolve(
        {
            "plugins_dir": "/srv/plugins",
            "active": "a,b",
            "callback_timeout": "0.25",
            "log_level": "debug",
            "max_label_sets": "7",
        },
        {},
    )
    assert config.plugins_dir == Path("/srv/plugins")
    assert config.active == ("a", "b")
    assert config.callback_timeout == 0.25
    assert config.log_level == "DEBUG"
    assert config.max_label_sets == 7


def test_empty_environment_value_means_unset() -> None:
    assert resolve({}, {"LUNA_SIDECAR_PORT": ""}).port == 8080


@pytest.mark.parametrize(
    ("flags", "environ", "origin"),
    [
        ({"port": "70000"}, {}, "--port='70000'"),
        ({"port": "http"}, {}, "--port='http'"),
        ({}, {"LUNA_SIDECAR_QUEUE_ITEMS": "0"}, "LUNA_SIDECAR_QUEUE_ITEMS='0'"),
        ({}, {"LUNA_SIDECAR_CALLBACK_TIMEOUT": "-1"}, "LUNA_SIDECAR_CALLBACK_TIMEOUT='-1'"),
        ({"log_level": "chatty"}, {}, "--log-level='chatty'"),
        ({"active": "a,a"}, {}, "--active='a,a'"),
    ],
)
def test_bad_values_name_their_origin(flags: dict[str, str], environ: dict[str, str], origin: str) -> None:
    with pytest.raises(ConfigError) as caught:
        resolve(flags, environ)
    assert str(caught.value).startswith(origin + ":")


def test_service_active_env_is_used_when_no_active_list_given() -> None:
    environ = {"LUNA_HANDLERS_ACTIVE_PLUGINS": '["kettle", "digest"]'}
    assert resolve({}, environ).active == ("kettle", "digest")


def test_service_active_env_follows_the_service_name() -> None:
    environ = {"LUNA_SIDECAR_SERVICE": "remote-sdk", "LUNA_REMOTE_SDK_ACTIVE_PLUGINS": "x,y"}
    config = resolve({}, environ)
    assert config.service == "remote-sdk"
    assert config.active == ("x", "y")
    assert active_list_key("remote-sdk") == "LUNA_REMOTE_SDK_ACTIVE_PLUGINS"


def test_explicit_active_list_beats_service_env() -> None:
    environ = {"LUNA_HANDLERS_ACTIVE_PLUGINS": "a"}
    assert resolve({"active": "b"}, environ).active == ("b",)
    assert resolve({"active_file": "/tmp/list"}, environ).active is None


def test_bad_service_env_names_the_variable() -> None:
    with pytest.raises(ConfigError, match=r"^LUNA_HANDLERS_ACTIVE_PLUGINS='not-valid': "):
        resolve({}, {"LUNA_HANDLERS_ACTIVE_PLUGINS": "not-valid"})


def test_names_of_flags_and_variables() -> None:
    assert flag_name("plugins_dir") == "--plugins-dir"
    assert env_name("plugins_dir") == "LUNA_SIDECAR_PLUGINS_DIR"


def test_setting_docs_cover_every_field_with_a_description() -> None:
    docs = setting_docs()
    assert [row[0] for row in docs] == [flag_name(field.name) for field in fields(SidecarConfig)]
    by_flag = {flag: (variable, default, text) for flag, variable, default, text in docs}
    assert by_flag["--port"] == ("LUNA_SIDECAR_PORT", "8080", "Port of the plugin-route listener.")
    assert by_flag["--plugins-dir"][1] == "unset"
    assert all(text for _, _, _, text in docs)


def test_argparse_flags_round_trip_through_resolve() -> None:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    namespace = parser.parse_args(["--port", "1234", "--active", "a,b", "--reload-debounce", "0.1"])
    config = resolve(vars(namespace), {"LUNA_SIDECAR_PORT": "999"})
    assert config.port == 1234
    assert config.active == ("a", "b")
    assert config.reload_debounce == 0.1
    assert config.admin_host == "127.0.0.1"


def test_event_loop_is_uvloop_unless_asked_otherwise() -> None:
    import asyncio

    import uvloop

    from luna_sidecar.cli import new_event_loop

    assert resolve({}, environ={}).event_loop == "uvloop"
    assert resolve({"event_loop": "asyncio"}, environ={}).event_loop == "asyncio"
    with pytest.raises(ConfigError, match=r"--event-loop='trio': not an event loop \(uvloop, asyncio\)"):
        resolve({"event_loop": "trio"}, environ={})
    for kind, expected in (("uvloop", uvloop.Loop), ("asyncio", asyncio.BaseEventLoop)):
        loop = new_event_loop(kind)
        try:
            assert isinstance(loop, expected)
        finally:
            loop.close()
