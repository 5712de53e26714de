"""The settings of a process (the operator, the sidecar): one rulebook for flags and variables.

A side declares its settings as a frozen dataclass whose fields carry attribute docstrings, and
hands it to :class:`Settings` with a parser per field. From that one declaration come the
command-line flags, the ``--help`` text, the README rows and :meth:`Settings.resolve`.

Rules a caller may rely on, the same on every side:

- a flag wins over its environment variable, which wins over the default;
- values are stripped of surrounding whitespace; a value that is then empty counts as unset;
- a value that cannot be used raises :class:`SettingError`, whose message starts with
  ``FLAG='value': `` or ``VARIABLE='value': `` and then says what is expected.

The parsers below take the stripped text and raise a plain ``ValueError`` saying what is
expected; :meth:`Settings.resolve` puts the flag or variable in front. Numbers are ASCII digits
only (no ``1_000``, no other scripts' digits), so what passes here reads the same in a manifest.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import inspect
import itertools
import math
import os
import re
import textwrap
from collections.abc import Callable, Collection, Mapping, Sequence
from pathlib import Path
from typing import Any, Generic, TypeVar

Parser = Callable[[str], Any]
"""Takes a stripped, non-empty value; returns what the setting holds or raises ``ValueError``."""

Row = tuple[str, str, str, str]
"""(flag, variable, default as shown, meaning) of one setting."""

Config = TypeVar("Config")


class SettingError(ValueError):
    """A setting has a value that cannot be used; the message names the flag or variable it came
    from and what is expected."""


def refused(origin: str, raw: object, problem: object) -> SettingError:
    """The error for ``raw`` from ``origin`` (a flag or variable): ``ORIGIN='raw': problem``."""
    return SettingError(f"{origin}={raw!r}: {problem}")


# -- parsers -------------------------------------------------------------------------------------

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
MAX_SECONDS = 100 * 365 * 24 * 3600
"""Longest duration a setting takes (100 years): more is a mistake, and overflows timers."""
MAX_DIGITS = 18
"""Most digits of an integer setting (below 2**63): more is a mistake."""

_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")
_INTEGER = re.compile(r"[+-]?[0-9]+")
_NUMBER = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
_NOT_FINITE = re.compile(r"[+-]?(?:inf|infinity|nan)", re.IGNORECASE)
_DURATION_PART = re.compile(r"([0-9]+(?:\.[0-9]+)?)(ms|h|m|s)")
_DURATION = re.compile(r"(?:[0-9]+(?:\.[0-9]+)?(?:ms|h|m|s))+")
_UNITS = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}
_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
_DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")


def text(value: str) -> str:
    """Any text (already stripped)."""
    return value


def path(value: str) -> Path:
    """A file or directory path; whether it exists is the caller's business."""
    return Path(value)


def boolean(value: str) -> bool:
    """true/false, 1/0, yes/no, on/off in any case."""
    lowered = value.lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise ValueError("not a boolean (true/false, 1/0, yes/no, on/off)")


def integer(*, minimum: int | None = None, unit: str = "") -> Parser:
    """A parser of whole numbers (ASCII digits, optional sign), at least ``minimum`` if given."""

    def parse(value: str) -> int:
        if not _INTEGER.fullmatch(value):
            raise ValueError("not an integer")
        if len(value.lstrip("+-")) > MAX_DIGITS:
            raise ValueError(f"not an integer of at most {MAX_DIGITS} digits")
        number = int(value)
        if minimum is not None and number < minimum:
            raise ValueError(f"must be at least {minimum}" + (f" ({unit})" if unit else ""))
        return number

    return parse


def port(value: str) -> int:
    """A TCP port, 1-65535."""
    if not _INTEGER.fullmatch(value) or len(value) > 6 or not 1 <= int(value) <= 65535:
        raise ValueError("not a port number (1-65535)")
    return int(value)


def address(value: str) -> str:
    """``host:port`` (the host may be empty: the caller's default host)."""
    _, colon, number = value.rpartition(":")
    if not colon:
        raise ValueError("expected host:port, e.g. 127.0.0.1:8090")
    port(number)
    return value


def http_url(value: str) -> str:
    """An ``http://`` or ``https://`` URL with a host and no query or fragment (a path prefix is
    kept); returned without a trailing ``/``."""
    found = re.fullmatch(r"(https?)://([^/?#\s]+)(/[^?#\s]*)?", value)
    if found is None or len(value) > 2048:
        raise ValueError("not an http:// or https:// URL without a query, e.g. http://prometheus:9090")
    return value.rstrip("/")


def _duration(value: str, above: str) -> float:
    if _NOT_FINITE.fullmatch(value):
        raise ValueError(above)
    if _NUMBER.fullmatch(value):
        number = float(value)
    elif _DURATION.fullmatch(value):
        number = sum(float(amount) * _UNITS[unit] for amount, unit in _DURATION_PART.findall(value))
    else:
        raise ValueError("not a number of seconds or a duration such as 90s, 30m, 720h or 1h30m")
    if not math.isfinite(number) or number > MAX_SECONDS:
        raise ValueError(f"must be at most {MAX_SECONDS} seconds (100 years)")
    return number


def seconds(value: str) -> float:
    """Seconds above 0: a number (``2.5``) or a duration as Kubernetes tools write them
    (``720h``, ``1h30m``, ``500ms``); at most :data:`MAX_SECONDS`."""
    above = "must be a number of seconds above 0"
    number = _duration(value, above)
    if number <= 0:
        raise ValueError(above)
    return number


def seconds_or_zero(value: str) -> float:
    """As :func:`seconds`, where 0 is allowed (it turns something off)."""
    at_least = "must be a number of seconds, 0 or more"
    number = _duration(value, at_least)
    if number < 0:
        raise ValueError(at_least)
    return number


def one_of(choices: Sequence[str], what: str) -> Parser:
    """A parser taking one of ``choices`` in any case and giving it as written in ``choices``;
    ``what`` names the kind with its article (``"a log level"``)."""
    by_lower = {choice.lower(): choice for choice in choices}

    def parse(value: str) -> str:
        try:
            return by_lower[value.lower()]
        except KeyError:
            raise ValueError(f"not {what} ({', '.join(choices)})") from None

    return parse


log_level = one_of(LOG_LEVELS, "a log level")


def object_name(value: str) -> str:
    """A Kubernetes object name (DNS subdomain: lowercase letters, digits, '-' and '.')."""
    if len(value) > 253 or not _DNS_SUBDOMAIN.fullmatch(value):
        raise ValueError("not a Kubernetes object name (lowercase letters, digits, '-' and '.')")
    return value


def namespace_name(value: str) -> str:
    """A Kubernetes namespace name (DNS label: lowercase letters, digits and '-', at most 63)."""
    if len(value) > 63 or not _DNS_LABEL.fullmatch(value):
        raise ValueError("not a namespace name (lowercase letters, digits and '-')")
    return value


def namespaced_name(value: str) -> str:
    """``NAMESPACE/NAME`` of a Kubernetes object."""
    namespace, slash, name = value.partition("/")
    if not slash or len(namespace) > 63 or not _DNS_LABEL.fullmatch(namespace):
        raise ValueError("expected NAMESPACE/NAME, e.g. luna-system/luna-plugins-webhook-ca")
    object_name(name)
    return value


def comma_list(item: Parser, what: str) -> Parser:
    """A parser of one or more items separated by commas, each stripped and checked by ``item``
    (empty items are dropped); ``what`` names the items in the plural."""

    def parse(value: str) -> tuple[Any, ...]:
        items = [part.strip() for part in value.split(",") if part.strip()]
        if not items:
            raise ValueError(f"expected one or more {what}, comma-separated")
        parsed = []
        for part in items:
            try:
                parsed.append(item(part))
            except ValueError as exc:
                raise ValueError(f"{part!r} is not one of the {what} expected: {exc}") from None
        return tuple(parsed)

    return parse


namespace_list = comma_list(namespace_name, "namespace names")


# -- declarations --------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Setting:
    """One setting: where its value comes from, how it is read, and what it means."""

    name: str
    """The config dataclass's field (and the argparse ``dest``)."""
    flag: str
    variable: str
    parse: Parser
    default: object
    doc: str
    """The field's attribute docstring, on one line."""
    switch: bool = False
    """The flag takes no value and means true; the variable takes a boolean."""
    repeatable: bool = False
    """The flag may be given several times (its values joined as one comma-separated list)."""

    @property
    def shown_default(self) -> str:
        """The default as the README and ``--help`` show it."""
        if self.default is None or self.default == ():
            return "unset"
        return str(self.default).lower() if isinstance(self.default, bool) else str(self.default)

    @property
    def row(self) -> Row:
        return (self.flag, self.variable, self.shown_default, self.doc)


def attribute_docs(config: type) -> dict[str, str]:
    """The attribute docstrings of a dataclass (the string under each field), each on one line."""
    body = ast.parse(textwrap.dedent(inspect.getsource(config))).body[0].body  # type: ignore[attr-defined]
    docs: dict[str, str] = {}
    for node, following in itertools.pairwise(body):
        if (
            isinstance(node, ast.AnnAssign)
            and isinstance(node.target, ast.Name)
            and isinstance(following, ast.Expr)
            and isinstance(following.value, ast.Constant)
            and isinstance(following.value.value, str)
        ):
            docs[node.target.id] = " ".join(following.value.value.split())
    return docs


class Settings(Generic[Config]):
    """The settings of one process, declared from its config dataclass.

    Every field is a setting: flag ``--field-name`` and variable ``PREFIX + FIELD_NAME`` unless
    ``flags`` or ``variables`` say otherwise, read by ``parsers[field]`` (text when absent; a
    field with a bool, int or float default must have one). Raises ``TypeError`` for a
    declaration that names no field, or a field without a docstring.
    """

    def __init__(
        self,
        config: type[Config],
        *,
        env_prefix: str,
        parsers: Mapping[str, Parser],
        flags: Mapping[str, str] | None = None,
        variables: Mapping[str, str] | None = None,
        switches: Collection[str] = (),
        repeatable: Collection[str] = (),
    ) -> None:
        self._config = config
        names = [field.name for field in dataclasses.fields(config)]  # type: ignore[arg-type]
        flags = flags or {}
        variables = variables or {}
        for declared in (parsers, flags, variables, switches, repeatable):
            unknown = set(declared) - set(names)
            if unknown:
                raise TypeError(f"{config.__name__} has no field {sorted(unknown)}")
        docs = attribute_docs(config)
        settings = []
        for field in dataclasses.fields(config):  # type: ignore[arg-type]
            default = field.default
            if field.name not in parsers and field.name not in switches and isinstance(default, int | float):
                raise TypeError(f"{config.__name__}.{field.name} needs a parser")
            if not docs.get(field.name):
                raise TypeError(f"{config.__name__}.{field.name} needs a docstring")
            settings.append(
                Setting(
                    name=field.name,
                    flag=flags.get(field.name, "--" + field.name.replace("_", "-")),
                    variable=variables.get(field.name, env_prefix + field.name.upper()),
                    parse=boolean if field.name in switches else parsers.get(field.name, text),
                    default=default,
                    doc=docs[field.name],
                    switch=field.name in switches,
                    repeatable=field.name in repeatable,
                )
            )
        self.settings: tuple[Setting, ...] = tuple(settings)

    def rows(self) -> list[Row]:
        """(flag, variable, default, meaning) per setting, in declaration order."""
        return [setting.row for setting in self.settings]

    def markdown(self) -> str:
        """The settings as a Markdown table (the README's)."""
        lines = ["| flag | environment variable | default | meaning |", "|---|---|---|---|"]
        lines += [f"| `{flag}` | `{var}` | `{default}` | {doc} |" for flag, var, default, doc in self.rows()]
        return "\n".join(lines)

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        """One flag per setting, each defaulting to ``None`` so that :meth:`resolve` can tell a
        flag that was not given from one that was."""
        for setting in self.settings:
            where = f"env {setting.variable}" + (", comma-separated" if setting.repeatable else "")
            doc = setting.doc + (" Repeat for several." if setting.repeatable else "")
            help_text = f"{doc} [{where}; default: {setting.shown_default}]".replace("%", "%%")
            if setting.switch:
                parser.add_argument(
                    setting.flag,
                    dest=setting.name,
                    action="store_const",
                    const="true",
                    default=None,
                    help=help_text,
                )
            else:
                parser.add_argument(
                    setting.flag,
                    dest=setting.name,
                    action="append" if setting.repeatable else "store",
                    default=None,
                    metavar=setting.name.upper(),
                    help=help_text,
                )

    def values(self, flags: Mapping[str, object], environ: Mapping[str, str] | None = None) -> dict[str, Any]:
        """The settings that are set (flag over variable), parsed; raises :class:`SettingError`."""
        environ = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for setting in self.settings:
            given = flags.get(setting.name)
            if given is None:
                given = environ.get(setting.variable)
                origin = setting.variable
            else:
                origin = setting.flag
            if setting.repeatable and isinstance(given, list | tuple):
                parsed = [self._parse(setting, setting.flag, str(one)) for one in given]
                kept = [one for one in parsed if one is not None]
                if kept:
                    values[setting.name] = tuple(itertools.chain.from_iterable(kept))
            elif given is not None:
                value = self._parse(setting, origin, str(given))
                if value is not None:
                    values[setting.name] = value
        return values

    def resolve(self, flags: Mapping[str, object], environ: Mapping[str, str] | None = None) -> Config:
        """Flags over environment (``os.environ`` when ``None``) over defaults; raises
        :class:`SettingError` naming the flag or variable whose value cannot be used."""
        return self._config(**self.values(flags, environ))

    @staticmethod
    def _parse(setting: Setting, origin: str, raw: str) -> Any:
        value = raw.strip()
        if not value:
            return None
        try:
            return setting.parse(value)
        except ValueError as exc:
            raise refused(origin, raw, exc) from None
