"""Print the table of the chart's values (docs/reference/chart-values.md), from the `# --`
comments of values.yaml.

A key whose line is preceded by a comment block starting with ``# --`` is a row: its path, its
default and the comment. A mapping with documented keys inside is a section, not a row. Every
value must be documented by a row of its own or of a mapping around it; otherwise this exits 1
naming the undocumented paths.

  python scripts/chart_values_table.py [charts/luna-plugins/values.yaml]
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

import yaml

DEFAULT_VALUES = Path(__file__).resolve().parents[1] / "charts" / "luna-plugins" / "values.yaml"
_KEY = re.compile(r"^(?P<indent> *)(?P<key>[A-Za-z0-9_.-]+):(?:\s|$)")
_COMMENT = re.compile(r"^ *#(?P<text>.*)$")


def documented_keys(text: str) -> dict[str, str]:
    """Dotted path -> description, for each key preceded by a ``# --`` comment block."""
    docs: dict[str, str] = {}
    stack: list[tuple[int, str]] = []
    pending: list[str] | None = None
    for line in text.splitlines():
        comment = _COMMENT.match(line)
        if comment:
            body = comment.group("text").strip()
            if body.startswith("--"):
                pending = [body[2:].strip()]
            elif pending is not None:
                pending.append(body)
            continue
        match = _KEY.match(line)
        if not match:
            if line.strip() and not line.lstrip().startswith("-"):
                pending = None
            continue
        indent = len(match.group("indent"))
        while stack and stack[-1][0] >= indent:
            stack.pop()
        stack.append((indent, match.group("key")))
        if pending is not None:
            docs[".".join(key for _, key in stack)] = " ".join(part for part in pending if part)
        pending = None
    return docs


def _leaves(value: Any, path: str) -> list[str]:
    if isinstance(value, dict) and value:
        return [leaf for key, item in value.items() for leaf in _leaves(item, f"{path}.{key}".lstrip("."))]
    return [path]


def _lookup(values: dict[str, Any], path: str) -> Any:
    node: Any = values
    for key in path.split("."):
        node = node[key]
    return node


def _shown(value: Any) -> str:
    if isinstance(value, str):
        return f"`{value}`" if value else '`""`'
    return f"`{json.dumps(value, separators=(', ', ': '))}`"


def _markdown(text: str) -> str:
    """Table-cell text: pipes escaped; ``<`` and ``>`` escaped outside code spans."""
    parts = text.replace("|", "\\|").split("`")
    for index in range(0, len(parts), 2):
        parts[index] = parts[index].replace("<", "&lt;").replace(">", "&gt;")
    return "`".join(parts)


def table(text: str) -> tuple[list[str], list[str]]:
    """(markdown lines of the table, undocumented value paths)."""
    values = yaml.safe_load(text) or {}
    docs = documented_keys(text)
    sections = {path for path in docs if any(other.startswith(f"{path}.") for other in docs)}
    rows = [path for path in docs if path not in sections]
    undocumented = [
        leaf
        for leaf in _leaves(values, "")
        if not any(leaf == row or leaf.startswith(f"{row}.") for row in rows)
    ]
    lines = ["| value | default | meaning |", "|---|---|---|"]
    for path in rows:
        meaning = _markdown(docs[path])
        lines.append(f"| `{path}` | {_shown(_lookup(values, path))} | {meaning} |")
    return lines, undocumented


def main(argv: list[str]) -> int:
    path = Path(argv[0]) if argv else DEFAULT_VALUES
    lines, undocumented = table(path.read_text())
    if undocumented:
        print(f"{path}: values without a `# --` comment: {', '.join(undocumented)}", file=sys.stderr)
        return 1
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
