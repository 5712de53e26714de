"""Validating plugin code without running it: the operator only ever *parses* plugin code.

``validate_code`` returns the problems (empty when the code is acceptable), each naming the line
when there is one, in words a plugin author can act on.
"""

from __future__ import annotations

import ast
import hashlib
from dataclasses import dataclass

from luna_plugins.base.plugins_meta.base_plugins import EVENT_NAMES
from luna_plugins.naming import check_module_name

#: the largest plugin code accepted: a ConfigMap's data is capped near 1 MiB and the resource
#: also carries settings and metadata
MAX_CODE_BYTES = 800 * 1024
PLUGIN_BASES = frozenset({"BaseEventPlugin", "BaseEventSendingPlugin", "BaseBackgroundPlugin"})


@dataclass(frozen=True)
class Problem:
    """One reason the plugin is invalid; ``line`` is 1-based when the problem has a place."""

    message: str
    line: int | None = None

    def __str__(self) -> str:
        return f"line {self.line}: {self.message}" if self.line else self.message


def code_hash(code: str) -> str:
    """SHA-256 (hex) of the code as UTF-8: the identity of a plugin version everywhere."""
    return hashlib.sha256(code.encode()).hexdigest()


def module_name(name: str, spec_module: str | None) -> str:
    """The plugin's module: ``spec.module``, else ``metadata.name`` with ``-`` as ``_``."""
    return spec_module or name.replace("-", "_")


def validate_module(module: str) -> list[Problem]:
    """Problems with the module name (not an identifier, or shadowing a module in use)."""
    problem = check_module_name(module)
    if problem is None:
        return []
    return [Problem(f"module {problem}; set spec.module to another name")]


def validate_code(code: str, *, pinned_sha256: str | None = None) -> list[Problem]:
    """Parse ``code`` and check it is a plugin: at most :data:`MAX_CODE_BYTES`, valid Python,
    a class deriving (directly or through classes of the same file) from a plugin base, event
    names the service knows, and the ``spec.sha256`` pin when given."""
    size = len(code.encode())
    if size > MAX_CODE_BYTES:
        return [
            Problem(f"code is {size} bytes; the limit is {MAX_CODE_BYTES} (a ConfigMap holds about 1 MiB)")
        ]
    if pinned_sha256 and code_hash(code) != pinned_sha256:
        return [Problem(f"code SHA-256 {code_hash(code)} does not match spec.sha256 {pinned_sha256}")]
    try:
        tree = ast.parse(code, filename="<plugin>")
    except SyntaxError as exc:
        return [Problem(f"syntax error: {exc.msg}", exc.lineno)]
    plugin_classes, problems = _plugin_classes(tree)
    if not plugin_classes:
        problems.append(
            Problem(
                "no plugin class: define a class deriving from BaseEventPlugin, BaseEventSendingPlugin "
                "or BaseBackgroundPlugin (from luna_plugins)"
            )
        )
    return problems


def _base_name(node: ast.expr) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return node.attr
    return None


def _plugin_classes(tree: ast.Module) -> tuple[list[ast.ClassDef], list[Problem]]:
    classes = [node for node in tree.body if isinstance(node, ast.ClassDef)]
    plugin_names: set[str] = set()
    changed = True
    while changed:  # follow bases defined in the same file, in any order
        changed = False
        for node in classes:
            if node.name in plugin_names:
                continue
            bases = {_base_name(base) for base in node.bases}
            if bases & (PLUGIN_BASES | plugin_names):
                plugin_names.add(node.name)
                changed = True
    found = [node for node in classes if node.name in plugin_names]
    problems = []
    for node in found:
        for statement in node.body:
            if (
                isinstance(statement, ast.Assign)
                and any(
                    isinstance(target, ast.Name) and target.id == "eventName" for target in statement.targets
                )
                and isinstance(statement.value, ast.Constant)
                and statement.value.value not in EVENT_NAMES
            ):
                problems.append(
                    Problem(
                        f"{node.name}.eventName is {statement.value.value!r}; the service sends "
                        f"{' and '.join(sorted(EVENT_NAMES))}",
                        statement.lineno,
                    )
                )
    return found, problems
