"""The parse-only check of plugin code, and the child process that runs it.

Parsing hostile code can cost far more than its size: 800 KiB of ``1,1,1,...`` builds an
abstract syntax tree of about 400 MiB, a long ``1+1+...`` raises ``RecursionError`` and
``------...1`` ``MemoryError``. The operator therefore never parses plugin code in its own
process: :mod:`luna_operator.validation` runs ``python -I -B -m luna_operator.code_check`` with an
address-space limit and a deadline, and this module is what that child runs. It imports only the
standard library, so the child starts in a few tens of milliseconds.

``check_source`` is pure and never raises for any input: whatever the parser raises becomes a
problem the plugin author can read.
"""

from __future__ import annotations

import ast
import json
import resource
import sys
from collections.abc import Collection
from typing import Any

PLUGIN_BASES = frozenset({"BaseEventPlugin", "BaseEventSendingPlugin", "BaseBackgroundPlugin"})
#: how much of a user-supplied value a message quotes
QUOTE_CHARS = 60


def quote(value: object) -> str:
    """``repr(value)``, cut to :data:`QUOTE_CHARS` characters: messages end up in a status."""
    text = repr(value)
    return text if len(text) <= QUOTE_CHARS else text[: QUOTE_CHARS - 3] + "..."


def check_source(code: str, event_names: Collection[str]) -> list[tuple[str, int | None]]:
    """Problems with ``code`` as ``(message, line)``; empty when it parses and defines a plugin
    class (deriving, directly or through classes of the same file, from a plugin base) whose
    ``eventName``, if set, is one of ``event_names``. Never raises."""
    try:
        tree = ast.parse(code, filename="<plugin>")
    except SyntaxError as exc:
        return [(f"syntax error: {exc.msg}", exc.lineno)]
    except MemoryError:
        return [("the code is too large or too deeply nested to parse (MemoryError)", None)]
    except RecursionError:
        return [("the code is nested too deeply to parse (RecursionError)", None)]
    except Exception as exc:  # whatever else the parser may raise for some input
        return [(f"the code cannot be parsed: {type(exc).__name__}: {str(exc)[:200]}", None)]
    try:
        return _plugin_problems(tree, event_names)
    except RecursionError:
        return [("the code is nested too deeply to check (RecursionError)", None)]


def _base_name(node: ast.expr) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return node.attr
    return None


def _plugin_problems(tree: ast.Module, event_names: Collection[str]) -> list[tuple[str, int | None]]:
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
    problems: list[tuple[str, int | None]] = []
    found = [node for node in classes if node.name in plugin_names]
    for node in found:
        for statement in node.body:
            if (
                isinstance(statement, ast.Assign)
                and any(
                    isinstance(target, ast.Name) and target.id == "eventName" for target in statement.targets
                )
                and isinstance(statement.value, ast.Constant)
                and statement.value.value not in event_names
            ):
                problems.append(
                    (
                        f"{node.name}.eventName is {quote(statement.value.value)}; the service sends "
                        f"{' and '.join(sorted(event_names))}",
                        statement.lineno,
                    )
                )
    if not found:
        problems.append(
            (
                "no plugin class: define a class deriving from BaseEventPlugin, BaseEventSendingPlugin "
                "or BaseBackgroundPlugin (from luna_plugins)",
                None,
            )
        )
    return problems


def main() -> int:
    """The child: read ``{"code", "eventNames", "memoryBytes"}`` (JSON) from stdin, limit the
    address space, check, write ``[[message, line], ...]`` (JSON) to stdout."""
    request: dict[str, Any] = json.loads(sys.stdin.buffer.read())
    limit = int(request.get("memoryBytes") or 0)
    if limit > 0:
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    problems = check_source(str(request["code"]), frozenset(request.get("eventNames") or ()))
    del request
    sys.stdout.write(json.dumps(problems))
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
