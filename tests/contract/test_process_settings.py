"""The settings engine both processes read their flags and variables with: hostile values first,
then the declarations, the flags and the tables made from them, then both sides side by side."""

from __future__ import annotations

import argparse
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from luna_contract import process_settings as rules
from luna_contract.process_settings import SettingError, Settings


@dataclass(frozen=True)
class Example:
    """A process with one setting of each kind."""

    timeout: float = 30.0
    """Seconds something may take."""
    budget: float = 0.0
    """Seconds of something; 0 turns it off."""
    port: int = 8080
    """Port of the   listener,
    on two lines."""
    listen: str = "127.0.0.1:9000"
    """host:port of something."""
    verbose: bool = False
    """Say more (100% more)."""
    managed: bool = True
    """Manage things."""
    count: int = 10
    """How many."""
    level: str = "INFO"
    """Log level."""
    namespaces: tuple[str, ...] = ()
    """Namespaces to watch."""
    name: str | None = None
    """An object name."""
    where: Path | None = None
    """A directory."""
    label: str = "plain"
    """Any text."""


EXAMPLE = Settings(
    Example,
    env_prefix="LUNA_EXAMPLE_",
    flags={"namespaces": "--namespace"},
    switches=("verbose",),
    repeatable=("namespaces",),
    parsers={
        "timeout": rules.seconds,
        "budget": rules.seconds_or_zero,
        "port": rules.port,
        "listen": rules.address,
        "managed": rules.boolean,
        "count": rules.integer(minimum=1),
        "level": rules.log_level,
        "namespaces": rules.namespace_list,
        "name": rules.object_name,
        "where": rules.path,
    },
)


def refusal(flags: dict[str, object], environ: dict[str, str] | None = None) -> str:
    with pytest.raises(SettingError) as refused:
        EXAMPLE.resolve(flags, environ or {})
    assert isinstance(refused.value, ValueError)
    return str(refused.value)


HOSTILE_SECONDS = [
    ("0", "must be a number of seconds above 0"),
    ("-5", "must be a number of seconds above 0"),
    ("-0.0", "must be a number of seconds above 0"),
    ("0s", "must be a number of seconds above 0"),
    ("inf", "must be a number of seconds above 0"),
    ("-Infinity", "must be a number of seconds above 0"),
    ("nan", "must be a number of seconds above 0"),
    ("NaN", "must be a number of seconds above 0"),
    ("1e400", "must be at most 3153600000 seconds (100 years)"),
    ("9" * 400, "must be at most 3153600000 seconds (100 years)"),
    ("876001h", "must be at most 3153600000 seconds (100 years)"),
    ("\u0661\u0662", "not a number of seconds or a duration such as 90s, 30m, 720h or 1h30m"),
    ("\uff13\uff10", "not a number of seconds or a duration"),
    ("1_000", "not a number of seconds or a duration"),
    ("1h 30m", "not a number of seconds or a duration"),
    ("1h-30m", "not a number of seconds or a duration"),
    ("-5m", "not a number of seconds or a duration"),
    ("h", "not a number of seconds or a duration"),
    ("30x", "not a number of seconds or a duration"),
    ("1d", "not a number of seconds or a duration"),
    ("30S", "not a number of seconds or a duration"),
    ("0x10", "not a number of seconds or a duration"),
    ("soon", "not a number of seconds or a duration"),
]


@pytest.mark.parametrize(("raw", "expected"), HOSTILE_SECONDS)
def test_hostile_seconds_are_refused_saying_what_is_expected(raw: str, expected: str) -> None:
    assert refusal({"timeout": raw}).startswith(f"--timeout={raw!r}: {expected}")


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("", None),
        ("   ", None),
        ("0", 0.0),
        ("0s", 0.0),
        ("-1", "must be a number of seconds, 0 or more"),
        ("nan", "must be a number of seconds, 0 or more"),
        ("inf", "must be a number of seconds, 0 or more"),
    ],
)
def test_seconds_where_zero_turns_something_off(raw: str, expected: float | str | None) -> None:
    if isinstance(expected, str):
        assert refusal({}, {"LUNA_EXAMPLE_BUDGET": raw}) == f"LUNA_EXAMPLE_BUDGET={raw!r}: {expected}"
    else:
        budget = EXAMPLE.resolve({}, {"LUNA_EXAMPLE_BUDGET": raw}).budget
        assert budget == (Example.budget if expected is None else expected)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [("720h", 2592000.0), ("1h30m", 5400.0), ("90s", 90.0), ("500ms", 0.5), ("1.5m", 90.0), (" 2.5 ", 2.5)],
)
def test_seconds_take_numbers_and_kubernetes_durations(raw: str, expected: float) -> None:
    assert EXAMPLE.resolve({"timeout": raw}, {}).timeout == expected


@pytest.mark.parametrize(
    "raw",
    [
        "0",
        "65536",
        "-1",
        "+0",
        "99999999999999999999999",
        "9" * 5000,
        "\u0668\u0660",
        "\uff18\uff10",
        "8_080",
        "80.0",
        "http",
        "0x50",
    ],
)
def test_hostile_ports_are_refused(raw: str) -> None:
    assert refusal({"port": raw}) == f"--port={raw!r}: not a port number (1-65535)"


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("0", "must be at least 1"),
        ("-3", "must be at least 1"),
        ("9" * 19, "not an integer of at most 18 digits"),
        ("9" * 5000, "not an integer of at most 18 digits"),
        ("\u0663", "not an integer"),
        ("1_0", "not an integer"),
        ("1e3", "not an integer"),
        ("ten", "not an integer"),
    ],
)
def test_hostile_integers_are_refused(raw: str, expected: str) -> None:
    assert refusal({}, {"LUNA_EXAMPLE_COUNT": raw}) == f"LUNA_EXAMPLE_COUNT={raw!r}: {expected}"


@pytest.mark.parametrize("raw", ["maybe", "y", "n", "t", "f", "enabled", "2", "-1", "truee", "\u0661", "oui"])
def test_booleans_of_other_spellings_are_refused(raw: str) -> None:
    expected = "not a boolean (true/false, 1/0, yes/no, on/off)"
    assert refusal({}, {"LUNA_EXAMPLE_MANAGED": raw}) == f"LUNA_EXAMPLE_MANAGED={raw!r}: {expected}"
    assert refusal({}, {"LUNA_EXAMPLE_VERBOSE": raw}) == f"LUNA_EXAMPLE_VERBOSE={raw!r}: {expected}"


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        *[("true", True), ("TRUE", True), (" Yes ", True), ("on", True), ("1", True)],
        *[("False", False), ("no", False), ("OFF", False), ("0", False)],
    ],
)
def test_booleans_in_any_case(raw: str, expected: bool) -> None:
    assert EXAMPLE.resolve({}, {"LUNA_EXAMPLE_MANAGED": raw}).managed is expected


@pytest.mark.parametrize("raw", ["", " ", "\t\n"])
def test_an_empty_value_is_unset(raw: str) -> None:
    """A variable set to an empty string (as templates write an unset value) is the default; so
    is a flag given as ''."""
    environ = {f"LUNA_EXAMPLE_{name.upper()}": raw for name in ("timeout", "port", "managed", "level")}
    assert EXAMPLE.resolve({}, environ) == Example()
    assert EXAMPLE.resolve({"port": raw, "namespaces": [raw]}, {}) == Example()


def test_a_flag_wins_over_its_variable_even_a_bad_one() -> None:
    environ = {"LUNA_EXAMPLE_PORT": "nonsense", "LUNA_EXAMPLE_LEVEL": "debug"}
    config = EXAMPLE.resolve({"port": "9000", "level": "error"}, environ)
    assert (config.port, config.level) == (9000, "ERROR")
    # the flag's value is judged and named, never the variable's
    assert refusal({"port": "0"}, {"LUNA_EXAMPLE_PORT": "9000"}) == "--port='0': not a port number (1-65535)"


@pytest.mark.parametrize("raw", ["LOUD", "CRITICAL", "warn", "information", "DEBUG2", "\u0130NFO"])
def test_log_levels_are_the_four_documented(raw: str) -> None:
    expected = "not a log level (DEBUG, INFO, WARNING, ERROR)"
    assert refusal({"level": raw}) == f"--level={raw!r}: {expected}"


def test_log_levels_in_any_case() -> None:
    assert EXAMPLE.resolve({"level": " warning "}, {}).level == "WARNING"


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("8090", "expected host:port, e.g. 127.0.0.1:8090"),
        ("host:", "not a port number (1-65535)"),
        ("host:0", "not a port number (1-65535)"),
        ("[::1]:99999", "not a port number (1-65535)"),
    ],
)
def test_hostile_addresses_are_refused(raw: str, expected: str) -> None:
    assert refusal({"listen": raw}) == f"--listen={raw!r}: {expected}"


def test_addresses_keep_their_host() -> None:
    assert EXAMPLE.resolve({"listen": " [::1]:8090 "}, {}).listen == "[::1]:8090"


@pytest.mark.parametrize("raw", ["Team", "a_b", "-a", "a-", "a" * 254, "a..b", "\u00e9t\u00e9"])
def test_hostile_object_names_are_refused(raw: str) -> None:
    expected = "not a Kubernetes object name (lowercase letters, digits, '-' and '.')"
    assert refusal({"name": raw}) == f"--name={raw!r}: {expected}"


def test_namespace_lists_from_a_variable_or_repeated_flags() -> None:
    assert EXAMPLE.resolve({}, {"LUNA_EXAMPLE_NAMESPACES": " a, b ,,"}).namespaces == ("a", "b")
    config = EXAMPLE.resolve({"namespaces": ["c", "d,e"]}, {"LUNA_EXAMPLE_NAMESPACES": "a"})
    assert config.namespaces == ("c", "d", "e")
    assert refusal({}, {"LUNA_EXAMPLE_NAMESPACES": " , "}) == (
        "LUNA_EXAMPLE_NAMESPACES=' , ': expected one or more namespace names, comma-separated"
    )
    assert refusal({"namespaces": ["ok", "a" * 64]}) == (
        f"--namespace={'a' * 64!r}: {'a' * 64!r} is not one of the namespace names expected: "
        "not a namespace name (lowercase letters, digits and '-')"
    )


def test_every_value_is_stripped() -> None:
    config = EXAMPLE.resolve({"label": "  spaced  ", "where": " /srv/x "}, {"LUNA_EXAMPLE_NAME": " luna\n"})
    assert (config.label, config.where, config.name) == ("spaced", Path("/srv/x"), "luna")


def test_the_message_shows_the_value_as_given() -> None:
    assert refusal({"port": " 0 "}) == "--port=' 0 ': not a port number (1-65535)"


def test_the_declarations_are_read_from_the_dataclass() -> None:
    by_name = {setting.name: setting for setting in EXAMPLE.settings}
    port = by_name["port"]
    assert (port.flag, port.variable, port.shown_default) == ("--port", "LUNA_EXAMPLE_PORT", "8080")
    assert port.doc == "Port of the listener, on two lines."
    assert by_name["namespaces"].flag == "--namespace" and by_name["namespaces"].repeatable
    assert by_name["verbose"].switch and by_name["verbose"].shown_default == "false"
    assert by_name["name"].shown_default == "unset" and by_name["namespaces"].shown_default == "unset"
    assert EXAMPLE.rows()[0] == ("--timeout", "LUNA_EXAMPLE_TIMEOUT", "30.0", "Seconds something may take.")
    assert EXAMPLE.markdown().splitlines()[2] == (
        "| `--timeout` | `LUNA_EXAMPLE_TIMEOUT` | `30.0` | Seconds something may take. |"
    )


def test_a_declaration_that_does_not_fit_its_dataclass_is_refused() -> None:
    with pytest.raises(TypeError, match=r"no field \['nope'\]"):
        Settings(Example, env_prefix="X_", parsers={"nope": rules.text})
    with pytest.raises(TypeError, match=r"Example\.timeout needs a parser"):
        Settings(Example, env_prefix="X_", parsers={})

    @dataclass(frozen=True)
    class Undocumented:
        quiet: str = ""

    with pytest.raises(TypeError, match=r"Undocumented\.quiet needs a docstring"):
        Settings(Undocumented, env_prefix="X_", parsers={})


def test_flags_parse_into_what_resolve_reads() -> None:
    parser = argparse.ArgumentParser()
    EXAMPLE.add_arguments(parser)
    args = parser.parse_args(["--verbose", "--namespace", "a", "--namespace", "b", "--port", "1234"])
    config = EXAMPLE.resolve(vars(args), {"LUNA_EXAMPLE_PORT": "1"})
    assert (config.verbose, config.namespaces, config.port) == (True, ("a", "b"), 1234)
    shown = parser.format_help()
    assert "[env LUNA_EXAMPLE_PORT; default: 8080]" in " ".join(shown.split())
    assert "100% more" in shown  # a % in a docstring is not an argparse placeholder


# -- both sides, the same rules and the same messages --------------------------------------------

Resolve = Callable[[Mapping[str, object], Mapping[str, str]], Any]
# (operator setting, sidecar setting) read by the same rule
SAME_RULE = [
    ("report_ttl", "callback_timeout"),
    ("webhook_port", "port"),
    ("webhook_managed", "packages_require_hashes"),
    ("log_level", "log_level"),
]
HOSTILE = [
    "",
    " ",
    "0",
    "-1",
    "inf",
    "nan",
    "1e400",
    "9" * 30,
    "\u0661\u0662",
    "\uff18\uff10",
    "1_0",
    "1h 30m",
    "0s",
    "maybe",
    "CRITICAL",
    "warn",
    "70000",
    "1.5",
    "debug",
    " yes ",
    "90s",
]


@pytest.mark.parametrize(("operator_name", "sidecar_name"), SAME_RULE)
@pytest.mark.parametrize("raw", HOSTILE)
def test_the_operator_and_the_sidecar_say_the_same(operator_name: str, sidecar_name: str, raw: str) -> None:
    from luna_operator import config as operator_config
    from luna_sidecar import config as sidecar_config

    def outcome(resolve: Resolve, name: str, variable: str) -> list[tuple[str, object]]:
        """What the side makes of ``raw`` given as the flag, then as the variable."""
        seen: list[tuple[str, object]] = []
        flag = "--" + name.replace("_", "-")
        for flags, environ, origin in (({name: raw}, {}, flag), ({}, {variable: raw}, variable)):
            try:
                seen.append(("taken", getattr(resolve(flags, environ), name)))
            except SettingError as exc:
                assert str(exc).startswith(f"{origin}={raw!r}: "), exc
                seen.append(("refused", str(exc).removeprefix(f"{origin}={raw!r}: ")))
        return seen

    operator = outcome(operator_config.resolve, operator_name, f"LUNA_OPERATOR_{operator_name.upper()}")
    sidecar = outcome(sidecar_config.resolve, sidecar_name, f"LUNA_SIDECAR_{sidecar_name.upper()}")
    if raw.strip():
        assert operator == sidecar
    else:  # unset on both sides: each keeps its own default
        assert operator == [("taken", getattr(operator_config.OperatorConfig(), operator_name))] * 2
        assert sidecar == [("taken", getattr(sidecar_config.SidecarConfig(), sidecar_name))] * 2


def test_both_sides_raise_the_one_error_type() -> None:
    from luna_operator import config as operator_config
    from luna_sidecar import config as sidecar_config

    assert sidecar_config.ConfigError is SettingError
    with pytest.raises(SettingError, match="--inject needs --webhook"):
        operator_config.resolve({"inject": "true", "inject_template": "t.yaml"}, {})
    with pytest.raises(SettingError, match=r"^LUNA_HANDLERS_ACTIVE_PLUGINS="):
        sidecar_config.resolve({}, {"LUNA_HANDLERS_ACTIVE_PLUGINS": "a-b"})
