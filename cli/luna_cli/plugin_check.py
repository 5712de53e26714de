"""Checking plugin files on the author's machine: the operator's own validation, plus what only
a file on disk can tell (imports the sidecar image lacks, unless the plugin's requirements
provide them).

The code check is the operator's :class:`~luna_operator.validation.CodeChecker`: a child process
with the operator's memory limit and deadline parses the code, so messages are the ones
``kubectl describe lp`` would show, and a file that makes the parser raise ``RecursionError`` or
``MemoryError`` is a problem like any other. The import scan parses the code again in this
process only once that child has parsed it within the limit.

A plugin's requirements come from a file as the standalone sidecar reads them
(``NAME.requirements.txt``: one per line, ``#`` comments); each entry is checked as the operator
checks ``spec.requirements`` (same code, same messages), reported at its line of the file.
"""

from __future__ import annotations

import ast
from collections.abc import Collection, Iterable, Iterator
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

from packaging.utils import canonicalize_name

from luna_cli.lint_rules import operator_rule
from luna_contract.plugin_modules import check_module_name
from luna_contract.requirements import (
    RequirementsError,
    check_requirement,
    check_requirements,
    project_names,
    requirements_file_entries,
)
from luna_operator.validation import (
    FAILURES_BEFORE_GIVING_UP,
    CheckUnavailableError,
    CodeChecker,
    Problem,
)

#: exceptions whose handler makes an import optional (``try: import x / except ImportError:``)
OPTIONAL_IMPORT_GUARDS = frozenset({"ImportError", "ModuleNotFoundError", "Exception", "BaseException"})
#: the largest requirements or settingsFrom file read; larger ones are refused unread (a plugin
#: has at most 50 requirements of at most 400 characters, and at most 20 settingsFrom items)
MAX_SIDE_FILE_BYTES = 256 * 1024
#: what lint says of a file's name when it cannot be a module name: a local file has no
#: ``spec.module`` yet, its name is the module
RENAME_THE_FILE = "rename the file (its name is the plugin's module)"


@dataclass(frozen=True)
class Finding:
    """One thing to tell about a file: an ``error`` (the operator would refuse the plugin) or a
    ``warning`` (it may fail at load time)."""

    path: str
    message: str
    line: int | None = None
    severity: str = "error"
    rule: str = "LP199"
    """its code in :data:`luna_cli.lint_rules.RULES`"""
    column: int | None = None
    """1-based, when the finding has a place in the line"""

    @property
    def place(self) -> tuple[int, int]:
        """``(line, column)``, 1-based; ``(1, 1)`` for a finding about the whole file."""
        return (self.line or 1, self.column or 1)

    def __str__(self) -> str:
        line, column = self.place
        prefix = "warning: " if self.severity == "warning" else ""
        return f"{self.path}:{line}:{column}: {self.rule} {prefix}{self.message}"


@dataclass(frozen=True)
class PluginFile:
    """A plugin file read from disk: its module name (the file name without ``.py``) and code."""

    path: Path
    module: str
    code: str


class UnreadableFileError(Exception):
    """The file cannot be a plugin's code (missing, unreadable, not UTF-8); the message says why."""


def read_side_file(path: Path) -> str:
    """A requirements or settingsFrom file as text, at most :data:`MAX_SIDE_FILE_BYTES`; raises
    :class:`UnreadableFileError`."""
    try:
        with path.open("rb") as file:
            raw = file.read(MAX_SIDE_FILE_BYTES + 1)
    except OSError as exc:
        raise UnreadableFileError(f"cannot read the file: {exc.strerror or exc}") from None
    if len(raw) > MAX_SIDE_FILE_BYTES:
        raise UnreadableFileError(
            f"the file is larger than {MAX_SIDE_FILE_BYTES // 1024} KiB: not a plugin's requirements "
            "or settingsFrom (at most 50 requirements of 400 characters, 20 settingsFrom items)"
        )
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise UnreadableFileError(f"not UTF-8 text (byte {exc.start})") from None


def module_problems(module: str, fix: str) -> list[Problem]:
    """Problems with the module name, ending in ``fix`` (what to change where the name comes
    from: the operator says ``set spec.module``, lint says :data:`RENAME_THE_FILE`)."""
    problem = check_module_name(module)
    return [] if problem is None else [Problem(f"module {problem}; {fix}")]


def requirements_beside(path: Path) -> Path:
    """``NAME.requirements.txt`` beside the plugin file ``NAME.py``, as the standalone sidecar has it."""
    return path.with_name(f"{path.stem}.requirements.txt")


@dataclass(frozen=True)
class DeclaredRequirements:
    """A plugin's requirements file: its entries that are valid, in canonical spelling and without
    exact duplicates (what ``spec.requirements`` would hold), and errors for the rest."""

    path: Path
    requirements: tuple[str, ...] = ()
    errors: list[Finding] = field(default_factory=list)


def read_requirements(path: Path) -> DeclaredRequirements:
    """The requirements in the file at ``path``; every entry the operator would refuse is an
    error at its line, with the operator's message for that entry of ``spec.requirements``."""
    try:
        text = read_side_file(path)
    except UnreadableFileError as exc:
        return DeclaredRequirements(path, errors=[Finding(str(path), str(exc), rule="LP100")])
    entries = requirements_file_entries(text)
    errors = []
    try:
        check_requirements([entry for _, entry in entries], "spec.requirements")
    except RequirementsError as exc:
        if not str(exc).startswith("spec.requirements["):  # about the list: too many entries
            errors.append(Finding(str(path), str(exc), rule="LP110"))
    valid: list[str] = []
    for index, (line, entry) in enumerate(entries):
        try:
            valid.append(check_requirement(entry, f"spec.requirements[{index}]"))
        except RequirementsError as exc:
            errors.append(Finding(str(path), str(exc), line, rule="LP110"))
    return DeclaredRequirements(path, tuple(dict.fromkeys(valid)), errors)


def provided_modules(requirements: Iterable[str]) -> frozenset[str]:
    """The top-level modules ``requirements`` are taken to provide: each distribution's
    normalized name with ``-`` as ``_`` (``aio-pika`` -> ``aio_pika``), and, for distributions
    installed here, the modules their metadata says they install (``markdown-it-py`` ->
    ``markdown_it``)."""
    names = project_names(tuple(requirements))
    modules = {name.replace("-", "_") for name in names}
    if names:
        for module, owners in metadata.packages_distributions().items():
            if any(canonicalize_name(owner) in names for owner in owners):
                modules.add(module)
    return frozenset(modules)


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


def imported_modules(code: str) -> Iterator[tuple[str, int, int]]:
    """``(top-level module, line, column)`` of each absolute import not guarded by ``except
    ImportError`` (1-based line and column of the import statement)."""
    tree = ast.parse(code)
    guarded = _guarded(tree)
    for node in ast.walk(tree):
        if id(node) in guarded:
            continue
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name.split(".")[0], node.lineno, node.col_offset + 1
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.module.split(".")[0], node.lineno, node.col_offset + 1


def missing_imports(
    plugin: PluginFile,
    available: Collection[str],
    *,
    requirements_file: str,
    declared: tuple[str, ...] = (),
) -> list[Finding]:
    """Warnings for imports of modules neither in ``available`` (the image's modules and the other
    plugins'), nor provided by the ``declared`` requirements (see :func:`provided_modules`);
    ``requirements_file`` says where the plugin's requirements go."""
    provided = provided_modules(declared)
    not_provided = ""
    if declared:
        not_provided = (
            " and its requirements do not seem to provide (a distribution is taken to provide its "
            "name with '-' as '_', and the modules it installs where lint runs)"
        )
    findings = []
    seen: set[str] = set()
    for module, line, column in sorted(imported_modules(plugin.code), key=lambda item: item[1:]):
        if module in available or module in provided or module in seen:
            continue
        seen.add(module)
        findings.append(
            Finding(
                str(plugin.path),
                f"imports {module!r}, which the sidecar image does not have (it has the standard "
                f"library, luna_plugins and the project's dependencies such as aiohttp){not_provided}: "
                "declare the distribution that provides it in spec.requirements (a line of "
                f"{requirements_file}; see docs/packages.md), or the plugin fails to load unless another "
                "active plugin is a module of that name",
                line,
                "warning",
                rule="LW201",
                column=column,
            )
        )
    return findings


async def check_plugin_file(
    path: Path,
    checker: CodeChecker,
    *,
    available: Collection[str] | None,
    requirements: Path | None = None,
) -> list[Finding]:
    """Every finding for the file at ``path``: the operator's problems (errors), the problems of
    its requirements (errors at their lines of ``requirements``, by default
    ``NAME.requirements.txt`` beside the file when there is one) and, when ``available`` (the
    image's modules) is known and the code parses, imports that neither the image nor the
    requirements provide (warnings)."""
    try:
        plugin = read_plugin_file(path)
    except UnreadableFileError as exc:
        return [Finding(str(path), str(exc), rule="LP100")]
    requirements_file = (
        f"{requirements}" if requirements else f"{plugin.module}.requirements.txt beside the file"
    )
    source = requirements or requirements_beside(path)
    declared = read_requirements(source) if requirements or source.exists() else DeclaredRequirements(source)
    problems = module_problems(plugin.module, RENAME_THE_FILE) + await operator_problems(checker, plugin.code)
    findings = [
        Finding(
            str(path),
            problem.message,
            problem.line,
            rule=operator_rule(problem.message),
            column=_syntax_error_column(plugin.code) if problem.message.startswith("syntax error") else None,
        )
        for problem in problems
    ]
    if available is not None and not any(_unparsable(problem) for problem in problems):
        try:
            findings += missing_imports(
                plugin, available, requirements_file=requirements_file, declared=declared.requirements
            )
        except (SyntaxError, ValueError, RecursionError, MemoryError):
            pass  # the operator's check already says what is wrong with the code
    ordered = sorted(findings, key=lambda finding: (finding.line or 0, finding.severity))
    return ordered + declared.errors


def _syntax_error_column(code: str) -> int | None:
    """The column of the syntax error the operator's child found in ``code``: parsed again here,
    which is safe once the child parsed it within the operator's limits and stopped at the error."""
    try:
        ast.parse(code)
    except SyntaxError as exc:
        return exc.offset or None
    except (ValueError, RecursionError, MemoryError):
        return None
    return None


def _unparsable(problem: Problem) -> bool:
    """Whether ``problem`` says the code was not (or could not safely be) parsed."""
    text = problem.message
    return text.startswith(("syntax error", "the code", "code is ")) or "parse" in text or "nested" in text
