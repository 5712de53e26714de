"""Checking plugin files on the author's machine: the operator's own validation, plus what only
a file on disk can tell (imports the sidecar image lacks).

The code check is the operator's :class:`~luna_operator.validation.CodeChecker`: a child process
with the operator's memory limit and deadline parses the code, so messages are the ones
``kubectl describe lp`` would show, and a file that makes the parser raise ``RecursionError`` or
``MemoryError`` is a problem like any other. The import scan parses the code again in this
process only once that child has parsed it within the limit.
"""

from __future__ import annotations

import ast
from collections.abc import Collection, Iterator
from dataclasses import dataclass
from pathlib import Path

from luna_operator.validation import (
    FAILURES_BEFORE_GIVING_UP,
    CheckUnavailableError,
    CodeChecker,
    Problem,
    validate_module,
)

#: exceptions whose handler makes an import optional (``try: import x / except ImportError:``)
OPTIONAL_IMPORT_GUARDS = frozenset({"ImportError", "ModuleNotFoundError", "Exception", "BaseException"})


@dataclass(frozen=True)
class Finding:
    """One thing to tell about a file: an ``error`` (the operator would refuse the plugin) or a
    ``warning`` (it may fail at load time)."""

    path: str
    message: str
    line: int | None = None
    severity: str = "error"

    def __str__(self) -> str:
        where = f"{self.path}:{self.line}" if self.line else self.path
        prefix = "warning: " if self.severity == "warning" else ""
        return f"{where}: {prefix}{self.message}"


@dataclass(frozen=True)
class PluginFile:
    """A plugin file read from disk: its module name (the file name without ``.py``) and code."""

    path: Path
    module: str
    code: str


class UnreadableFileError(Exception):
    """The file cannot be a plugin's code (missing, unreadable, not UTF-8); the message says why."""


def read_plugin_file(path: Path) -> PluginFile:
    """The file's code as text; raises :class:`UnreadableFileError`."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise UnreadableFileError(f"cannot read the file: {exc.strerror or exc}") from None
    try:
        code = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise UnreadableFileError(f"not UTF-8 text (byte {exc.start}): plugin code must be UTF-8") from None
    return PluginFile(path, path.stem, code)


async def operator_problems(
    checker: CodeChecker, code: str, *, pinned_sha256: str | None = None
) -> list[Problem]:
    """The operator's verdict on ``code``. A check that could not run is tried again, as the
    operator does; after its last try the failure is the problem."""
    for attempt in range(1, FAILURES_BEFORE_GIVING_UP + 1):
        try:
            return await checker.check(code, pinned_sha256=pinned_sha256)
        except CheckUnavailableError as exc:
            if attempt == FAILURES_BEFORE_GIVING_UP:
                return [Problem(f"the code could not be checked: {exc}")]
    raise AssertionError("unreachable")


def _guarded(tree: ast.AST) -> set[int]:
    """ids of import nodes inside a ``try`` whose handlers catch import failures."""
    guarded: set[int] = set()
    for node in ast.walk(tree):
        if not isinstance(node, ast.Try):
            continue
        names = set()
        for handler in node.handlers:
            if handler.type is None:
                names.add("BaseException")
            for kind in handler.type.elts if isinstance(handler.type, ast.Tuple) else [handler.type]:
                if isinstance(kind, ast.Name):
                    names.add(kind.id)
        if names & OPTIONAL_IMPORT_GUARDS:
            guarded |= {id(inner) for stmt in node.body for inner in ast.walk(stmt)}
    return guarded


def imported_modules(code: str) -> Iterator[tuple[str, int]]:
    """``(top-level module, line)`` of each absolute import not guarded by ``except ImportError``."""
    tree = ast.parse(code)
    guarded = _guarded(tree)
    for node in ast.walk(tree):
        if id(node) in guarded:
            continue
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name.split(".")[0], node.lineno
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.module.split(".")[0], node.lineno


def missing_imports(plugin: PluginFile, available: Collection[str]) -> list[Finding]:
    """Warnings for imports of modules neither in ``available`` nor another plugin's."""
    findings = []
    seen: set[str] = set()
    for module, line in sorted(imported_modules(plugin.code), key=lambda item: item[1]):
        if module in available or module in seen:
            continue
        seen.add(module)
        findings.append(
            Finding(
                str(plugin.path),
                f"imports {module!r}, which the sidecar image does not have (it has the standard "
                "library, luna_plugins and the project's dependencies such as aiohttp): the plugin "
                "will fail to load unless another active plugin is a module of that name",
                line,
                "warning",
            )
        )
    return findings


async def check_plugin_file(
    path: Path, checker: CodeChecker, *, available: Collection[str] | None
) -> list[Finding]:
    """Every finding for the file at ``path``: the operator's problems (errors) and, when
    ``available`` (the image's modules) is known and the code parses, missing imports."""
    try:
        plugin = read_plugin_file(path)
    except UnreadableFileError as exc:
        return [Finding(str(path), str(exc))]
    problems = validate_module(plugin.module) + await operator_problems(checker, plugin.code)
    findings = [Finding(str(path), problem.message, problem.line) for problem in problems]
    if available is not None and not any(_unparsable(problem) for problem in problems):
        try:
            findings += missing_imports(plugin, available)
        except (SyntaxError, ValueError, RecursionError, MemoryError):
            pass  # the operator's check already says what is wrong with the code
    return sorted(findings, key=lambda finding: (finding.line or 0, finding.severity))


def _unparsable(problem: Problem) -> bool:
    """Whether ``problem`` says the code was not (or could not safely be) parsed."""
    text = problem.message
    return text.startswith(("syntax error", "the code", "code is ")) or "parse" in text or "nested" in text
