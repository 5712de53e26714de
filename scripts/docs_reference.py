"""Write, or check, the generated parts of the reference pages in docs/reference/.

Each generated part sits between ``<!-- NAME:start -->`` and ``<!-- NAME:end -->`` in its page
and is made from the code, the CRDs or the chart's values.yaml, never by hand:

- ``cli``: every sub-command of ``luna-plugins`` and its options (``luna_cli.main.build_parser``);
- ``sidecar-settings``, ``operator-settings``: the processes' settings (their settings engine);
- ``lunaplugin-fields``, ``lunapluginruntime-fields``: the fields of the CRDs in ``crds/``;
- ``chart-values``: the chart's values, from the ``# --`` comments of values.yaml.

  python scripts/docs_reference.py            # rewrite the parts that changed
  python scripts/docs_reference.py --check    # exit 1 naming each stale part (what the tests do)
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
REFERENCE = ROOT / "docs" / "reference"


def _script(name: str) -> ModuleType:
    """A module of this folder, loaded by path (scripts/ is not a package)."""
    spec = importlib.util.spec_from_file_location(name, Path(__file__).with_name(f"{name}.py"))
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault(name, module)
    spec.loader.exec_module(module)
    return module


def _cell(text: str) -> str:
    """Table-cell text: one line, pipes escaped."""
    return " ".join(text.split()).replace("|", "\\|")


# -- the command line


def _options(parser: argparse.ArgumentParser) -> list[str]:
    rows = ["| argument | default | meaning |", "|---|---|---|"]
    for action in parser._actions:  # argparse has no public view of its arguments
        if isinstance(action, argparse._HelpAction | argparse._SubParsersAction):
            continue
        if action.option_strings:
            metavar = action.metavar or (action.dest.upper() if action.nargs != 0 else None)
            if isinstance(metavar, tuple):
                metavar = " ".join(metavar)
            name = ", ".join(action.option_strings) + (f" {metavar}" if metavar else "")
        else:
            name = str(action.metavar or action.dest)
        if action.choices is not None and not isinstance(action, argparse._SubParsersAction):
            name += " (" + "\\|".join(str(choice) for choice in action.choices) + ")"
        default = "" if action.default in (None, False, argparse.SUPPRESS) else f"`{action.default}`"
        helped = (action.help or "").replace("%%", "%")
        rows.append(f"| `{name}` | {default} | {_cell(helped)} |")
    return rows


def _subparsers(parser: argparse.ArgumentParser) -> Iterator[tuple[str, argparse.ArgumentParser]]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            yield from action.choices.items()


def cli() -> str:
    """Each command of ``luna-plugins`` (nested ones too) with its description and arguments."""
    from luna_cli.main import build_parser

    # the settings of the two processes are on pages of their own, with their variables
    settings_pages = {
        "sidecar": "[the sidecar's settings](sidecar-settings.md)",
        "operator": "[the operator's settings](operator-settings.md)",
    }
    lines: list[str] = []

    def section(prog: str, parser: argparse.ArgumentParser, level: int) -> None:
        lines.extend([f"{'#' * level} `{prog}`", ""])
        if parser.description:
            lines.extend([_cell(parser.description), ""])
        name = prog.split()[-1]
        if name in settings_pages and level == 2:
            lines.extend([f"Every option is a setting: {settings_pages[name]}.", ""])
        else:
            rows = _options(parser)
            if len(rows) > 2:
                lines.extend([*rows, ""])
        if parser.epilog:
            lines.extend([_cell(parser.epilog), ""])
        for sub_name, sub in _subparsers(parser):
            section(f"{prog} {sub_name}", sub, min(level + 1, 4))

    top = build_parser()
    for name, sub in _subparsers(top):
        section(f"luna-plugins {name}", sub, 2)
    return "\n".join(lines).rstrip()


# -- the settings


def sidecar_settings() -> str:
    from luna_sidecar.config import settings_table

    return settings_table()


def operator_settings() -> str:
    from luna_operator.config import SETTINGS

    return SETTINGS.markdown()


# -- the CRDs


def _constraints(node: dict[str, Any]) -> str:
    parts: list[str] = []
    if "default" in node:
        parts.append(f"default `{json.dumps(node['default'])}`")
    if "enum" in node:
        parts.append("one of " + ", ".join(f"`{value}`" for value in node["enum"]))
    for key, word in (("minimum", "at least"), ("maximum", "at most")):
        if key in node:
            parts.append(f"{word} {node[key]}")
    for key, word in (("minLength", "length at least"), ("maxLength", "length at most")):
        if key in node:
            parts.append(f"{word} {node[key]}")
    for key, word in (("minItems", "items at least"), ("maxItems", "items at most")):
        if key in node:
            parts.append(f"{word} {node[key]}")
    if "pattern" in node:
        parts.append(f"pattern `{node['pattern']}`")
    if "format" in node:
        parts.append(f"format `{node['format']}`")
    return "; ".join(parts).replace("|", "\\|")


def _type(node: dict[str, Any]) -> str:
    if node.get("x-kubernetes-preserve-unknown-fields") and "properties" not in node:
        return "object (any)"
    kind = str(node.get("type", "any"))
    if kind == "array":
        return f"array of {node.get('items', {}).get('type', 'any')}"
    return kind


def _fields(node: dict[str, Any], path: str, required: set[str]) -> Iterator[str]:
    for key, child in (node.get("properties") or {}).items():
        here = f"{path}.{key}"
        mark = " (required)" if key in required else ""
        description = _cell(child.get("description", ""))
        yield f"| `{here}`{mark} | {_type(child)} | {_constraints(child)} | {description} |"
        yield from _fields(child, here, set(child.get("required", [])))
        items = child.get("items")
        if child.get("type") == "array" and isinstance(items, dict):
            yield from _fields(items, f"{here}[]", set(items.get("required", [])))


def crd_fields(file: str) -> Callable[[], str]:
    def table() -> str:
        crd = yaml.safe_load((ROOT / "crds" / file).read_text())
        (version,) = [v for v in crd["spec"]["versions"] if v.get("storage")]
        schema = version["schema"]["openAPIV3Schema"]
        names = crd["spec"]["names"]
        lines = [
            f"`{crd['spec']['group']}/{version['name']}`, kind `{names['kind']}`"
            + (
                f" (short names: {', '.join(f'`{n}`' for n in names.get('shortNames', []))})"
                if names.get("shortNames")
                else ""
            )
            + f", {crd['spec']['scope']}.",
            "",
            "| field | type | constraints | meaning |",
            "|---|---|---|---|",
        ]
        for top in ("spec", "status"):
            if top in schema.get("properties", {}):
                node = schema["properties"][top]
                lines.append(f"| `{top}` | {_type(node)} | | {_cell(node.get('description', ''))} |")
                lines.extend(_fields(node, top, set(node.get("required", []))))
        columns = version.get("additionalPrinterColumns") or []
        if columns:
            lines += ["", "`kubectl get` shows:", "", "| column | from | meaning |", "|---|---|---|"]
            lines += [
                f"| {c['name']} | `{c['jsonPath']}` | {_cell(c.get('description', ''))} |" for c in columns
            ]
        return "\n".join(lines)

    return table


# -- the chart


def chart_values() -> str:
    lines, undocumented = _script("chart_values_table").table(
        (ROOT / "charts" / "luna-plugins" / "values.yaml").read_text()
    )
    if undocumented:
        raise SystemExit(f"values without a `# --` comment in values.yaml: {', '.join(undocumented)}")
    return "\n".join(lines)


@dataclass(frozen=True)
class Part:
    """A generated part of a page."""

    name: str
    page: Path
    make: Callable[[], str]

    @property
    def markers(self) -> tuple[str, str]:
        return f"<!-- {self.name}:start -->\n", f"\n<!-- {self.name}:end -->"

    def shown(self, text: str) -> str:
        """What the page holds now (ValueError when a marker is missing)."""
        start, end = self.markers
        return text[text.index(start) + len(start) : text.index(end)]

    def replaced(self, text: str) -> str:
        start, end = self.markers
        head, tail = text[: text.index(start) + len(start)], text[text.index(end) :]
        return head + self.make() + tail


PARTS = (
    Part("cli", REFERENCE / "cli.md", cli),
    Part("sidecar-settings", REFERENCE / "sidecar-settings.md", sidecar_settings),
    Part("operator-settings", REFERENCE / "operator-settings.md", operator_settings),
    Part("lunaplugin-fields", REFERENCE / "lunaplugin.md", crd_fields("lunaplugins.yaml")),
    Part("lunapluginruntime-fields", REFERENCE / "lunaplugin.md", crd_fields("lunapluginruntimes.yaml")),
    Part("chart-values", REFERENCE / "chart-values.md", chart_values),
)


def stale() -> list[str]:
    """The parts whose page does not hold what they generate now."""
    return [part.name for part in PARTS if part.shown(part.page.read_text()) != part.make()]


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--check", action="store_true", help="change nothing; exit 1 if a part is stale")
    args = parser.parse_args(argv)
    if args.check:
        names = stale()
        for name in names:
            print(f"stale: {name} (python scripts/docs_reference.py rewrites it)", file=sys.stderr)
        return 1 if names else 0
    for part in PARTS:
        text = part.page.read_text()
        new = part.replaced(text)
        if new != text:
            part.page.write_text(new)
            print(f"rewrote {part.name} in {part.page}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
