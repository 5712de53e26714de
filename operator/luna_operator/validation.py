"""Validating a LunaPlugin without running its code: the operator only ever *parses* plugin code.

- ``validate_name`` and ``validate_module``: what the resource's names must be;
- ``CodeChecker.check``: the operator's check of plugin code, parsed in a child process with an
  address-space limit and a deadline (see :mod:`luna_operator.code_check`), so no plugin can
  exhaust the operator's memory, crash it or stall its event loop; results are cached by code
  hash, so a version is parsed once;
- ``validate_code``: the same check in this process, for trusted input (tests, tools).

Problems name the line when there is one, in words a plugin author can act on.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "DEFAULT_CHECK_MEMORY_BYTES",
    "DEFAULT_CHECK_TIMEOUT",
    "FAILURES_BEFORE_GIVING_UP",
    "MAX_CODE_BYTES",
    "MAX_NAME_CHARS",
    "MAX_SETTINGS_BYTES",
    "CheckUnavailableError",
    "CodeChecker",
    "Problem",
    "SpecChecks",
    "check_spec",
    "module_taken",
    "precheck",
    "validate_code",
    "validate_module",
    "validate_name",
    "validate_requirements",
    "validate_settings",
]

from luna_contract.code import code_hash
from luna_contract.plugin_modules import EVENT_NAMES, check_module_name
from luna_contract.requirements import RequirementsError, check_requirements
from luna_contract.spec import SpecView
from luna_operator.code_check import check_source
from luna_operator.secret_settings import check_shape

#: the largest plugin code accepted: a ConfigMap's data is capped near 1 MiB and the resource
#: also carries settings and metadata
MAX_CODE_BYTES = 800 * 1024
#: a LunaPlugin's name becomes the value of the ``luna.dev/plugin`` label of its ConfigMap
MAX_NAME_CHARS = 63
#: a plugin's ``spec.settings`` (as JSON) is copied into its service's active list, which holds
#: every plugin of the service in one ConfigMap (about 1 MiB)
MAX_SETTINGS_BYTES = 64 * 1024
#: the child's address space: a realistic 800 KiB plugin parses in about 80 MiB
DEFAULT_CHECK_MEMORY_BYTES = 192 * 1024 * 1024
DEFAULT_CHECK_TIMEOUT = 15.0
#: a version whose check times out or crashes this many times is invalid (not retried for ever)
FAILURES_BEFORE_GIVING_UP = 3


@dataclass(frozen=True)
class Problem:
    """One reason the plugin is invalid; ``line`` is 1-based when the problem has a place."""

    message: str
    line: int | None = None

    def __str__(self) -> str:
        return f"line {self.line}: {self.message}" if self.line else self.message


class CheckUnavailableError(RuntimeError):
    """The code could not be checked this time (the child could not start, died or ran out of
    time on a busy machine); a later pass tries again. Not a verdict on the code."""


def validate_name(name: str) -> list[Problem]:
    """Problems with the LunaPlugin's ``metadata.name`` (the CRD refuses these at apply time;
    this catches objects stored before that rule)."""
    if len(name) > MAX_NAME_CHARS:
        return [
            Problem(
                f"metadata.name is {len(name)} characters; at most {MAX_NAME_CHARS} are allowed "
                "(it becomes the luna.dev/plugin label of the plugin's ConfigMap): use a shorter name"
            )
        ]
    return []


def validate_settings(settings: object) -> list[Problem]:
    """Problems with ``spec.settings``: not an object, or larger than :data:`MAX_SETTINGS_BYTES`."""
    if settings is None:
        return []
    if not isinstance(settings, dict):
        return [Problem(f"spec.settings must be an object, not {type(settings).__name__}")]
    size = len(json.dumps(settings, separators=(",", ":")).encode())
    if size > MAX_SETTINGS_BYTES:
        return [
            Problem(
                f"spec.settings is {size} bytes as JSON; the limit is {MAX_SETTINGS_BYTES} (settings are "
                "copied into the service's active list): keep bulk data in the code or elsewhere"
            )
        ]
    return []


def validate_requirements(requirements: object) -> tuple[tuple[str, ...], list[Problem]]:
    """``spec.requirements`` in canonical spelling, or the problem with them (see
    :mod:`luna_contract.requirements`: PEP 508 strings from the configured index, no URLs or pip
    options). The operator only checks them; the sidecar installs them."""
    if requirements is None:
        return (), []
    try:
        return check_requirements(requirements, "spec.requirements"), []
    except RequirementsError as exc:
        return (), [Problem(str(exc))]


def validate_module(module: str) -> list[Problem]:
    """Problems with the module name (not an identifier, or shadowing a module in use)."""
    problem = check_module_name(module)
    if problem is None:
        return []
    return [Problem(f"module {problem}; set spec.module to another name")]


@dataclass(frozen=True)
class SpecChecks:
    """Every check of a LunaPlugin that needs neither its code parsed nor the cluster: the pass
    and the admission webhook both start from these (composed once, here)."""

    names: list[Problem]
    """``metadata.name`` and the module name"""
    settings: list[Problem]
    """``spec.settings`` and the shape of ``spec.settingsFrom``"""
    requirements: tuple[str, ...]
    """``spec.requirements`` in canonical spelling (empty when refused)"""
    requirement_problems: list[Problem]
    delivery_problems: list[Problem] = field(default_factory=list)
    """``spec.delivery`` not a valid policy (a spec stored before the CRD had the field's schema)"""
    isolation_problems: list[Problem] = field(default_factory=list)
    """``spec.isolation`` not one of its values (likewise)"""

    @property
    def problems(self) -> list[Problem]:
        """All of them, in the order users read them."""
        return (
            self.names
            + self.settings
            + self.requirement_problems
            + self.delivery_problems
            + self.isolation_problems
        )


def check_spec(name: str, module: str, spec: Mapping[str, Any], *, prometheus: bool = False) -> SpecChecks:
    """The checks of :class:`SpecChecks` for the LunaPlugin ``name`` serving ``module``;
    ``prometheus``: whether the operator has a Prometheus to ask (``--prometheus-url``), without
    which ``spec.rollout.analysis.queries`` are refused."""
    fields = SpecView(spec)
    settings = validate_settings(fields.settings)
    settings += [Problem(p) for p in check_shape(fields.settings_from, fields.settings)]
    requirements, requirement_problems = validate_requirements(fields.requirements)
    rollout = fields.rollout_problem() or _queries_problem(fields, prometheus=prometheus)
    delivery_problem = fields.delivery_problem()
    isolation_problem = fields.isolation_problem()
    return SpecChecks(
        validate_name(name) + validate_module(module) + ([Problem(rollout)] if rollout else []),
        settings,
        requirements,
        requirement_problems,
        [Problem(delivery_problem)] if delivery_problem else [],
        [Problem(isolation_problem)] if isolation_problem else [],
    )


def _queries_problem(fields: SpecView, *, prometheus: bool) -> str | None:
    rollout = fields.rollout
    if prometheus or rollout is None or not rollout.analysis.queries:
        return None
    return (
        "spec.rollout.analysis.queries: the operator has no Prometheus to ask; set the chart value "
        "operator.prometheus.url (the operator's --prometheus-url), or remove the queries"
    )


def module_taken(module: str, claimant: str, service: str) -> Problem:
    """The problem of a plugin whose module another enabled LunaPlugin of its service provides."""
    return Problem(
        f"module {module!r} is already provided by LunaPlugin {claimant!r} of service {service!r}; "
        "set spec.module to another name"
    )


def precheck(code: str, pinned_sha256: str | None) -> list[Problem]:
    """The checks that need no parsing: the size limit and the ``spec.sha256`` pin."""
    size = len(code.encode())
    if size > MAX_CODE_BYTES:
        return [
            Problem(f"code is {size} bytes; the limit is {MAX_CODE_BYTES} (a ConfigMap holds about 1 MiB)")
        ]
    if pinned_sha256 and code_hash(code) != pinned_sha256:
        return [Problem(f"code SHA-256 {code_hash(code)} does not match spec.sha256 {pinned_sha256}")]
    return []


def validate_code(code: str, *, pinned_sha256: str | None = None) -> list[Problem]:
    """Check ``code`` in this process: at most :data:`MAX_CODE_BYTES`, the pin, valid Python, a
    plugin class, event names the service knows. Never raises, but parsing hostile code may use
    hundreds of MiB here: the operator uses :class:`CodeChecker` instead."""
    problems = precheck(code, pinned_sha256)
    if problems:
        return problems
    return [Problem(message, line) for message, line in check_source(code, EVENT_NAMES)]


class CodeChecker:
    """Checks plugin code in a child process (``python -m luna_operator.code_check``) limited to
    ``memory_bytes`` of address space and ``timeout`` seconds, one child at a time (so the
    operator's memory stays bounded by its own plus one child's). Verdicts are cached by
    (code hash, pin); a check that could not run raises :class:`CheckUnavailableError` and is not
    cached, except that a version whose check times out or crashes
    :data:`FAILURES_BEFORE_GIVING_UP` times is invalid."""

    def __init__(
        self,
        *,
        memory_bytes: int = DEFAULT_CHECK_MEMORY_BYTES,
        timeout: float = DEFAULT_CHECK_TIMEOUT,
        cache_size: int = 1024,
        command: Sequence[str] = (sys.executable, "-I", "-B", "-m", "luna_operator.code_check"),
    ) -> None:
        self.command = tuple(command)
        """the child's command line (it speaks :func:`luna_operator.code_check.main`'s protocol)"""
        self.memory_bytes = memory_bytes
        self.timeout = timeout
        self.children = 0
        """children started so far (each is one parse)"""
        self._cache_size = cache_size
        self._verdicts: OrderedDict[tuple[str, str | None], tuple[Problem, ...]] = OrderedDict()
        self._failures: dict[str, int] = {}
        self._slot = asyncio.Semaphore(1)

    async def check(self, code: str, *, pinned_sha256: str | None = None) -> list[Problem]:
        """The problems with ``code`` (empty: valid). Raises only :class:`CheckUnavailableError`."""
        problems = precheck(code, pinned_sha256)
        if problems:
            return problems
        key = (code_hash(code), pinned_sha256)
        cached = self._verdicts.get(key)
        if cached is None:
            async with self._slot:
                cached = self._verdicts.get(key)
                if cached is None:
                    cached = tuple(await self._check_in_child(code, key[0]))
                    self._remember(key, cached)
        self._verdicts.move_to_end(key)
        return list(cached)

    def _remember(self, key: tuple[str, str | None], verdict: tuple[Problem, ...]) -> None:
        self._verdicts[key] = verdict
        self._failures.pop(key[0], None)
        while len(self._verdicts) > self._cache_size:
            self._verdicts.popitem(last=False)

    async def _check_in_child(self, code: str, digest: str) -> list[Problem]:
        request = json.dumps(
            {"code": code, "eventNames": sorted(EVENT_NAMES), "memoryBytes": self.memory_bytes}
        ).encode()
        try:
            child = await asyncio.create_subprocess_exec(
                *self.command,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
            )
        except OSError as exc:
            raise CheckUnavailableError(f"could not start the code check: {exc}") from None
        self.children += 1
        try:
            out, err = await asyncio.wait_for(child.communicate(request), self.timeout)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                child.kill()
            await child.wait()
            return self._failed(digest, f"checking the code took longer than {self.timeout:g} s")
        except asyncio.CancelledError:
            with contextlib.suppress(ProcessLookupError):
                child.kill()
            raise
        if child.returncode == 0:
            try:
                found = json.loads(out)
                return [Problem(str(message), int(line) if line else None) for message, line in found]
            except (ValueError, TypeError):
                pass
        tail = err.decode(errors="replace").strip().splitlines()[-1:] or [f"exit code {child.returncode}"]
        return self._failed(digest, f"the code check failed ({tail[0][:200]})")

    def _failed(self, digest: str, message: str) -> list[Problem]:
        """A check that did not finish: try again later, unless this version keeps failing."""
        if len(self._failures) >= self._cache_size:
            self._failures.clear()
        strikes = self._failures.get(digest, 0) + 1
        self._failures[digest] = strikes
        if strikes >= FAILURES_BEFORE_GIVING_UP:
            return [Problem(f"{message}, {strikes} times: simplify the code")]
        raise CheckUnavailableError(f"{message}; trying again later")
