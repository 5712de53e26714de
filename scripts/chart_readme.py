"""Write, or check, the chart's README (charts/luna-plugins/README.md) in helm-docs' format: the
chart's name, version badges and description from Chart.yaml, its Kubernetes requirement, and a
values table (key, type, default, description) from the ``# --`` comments of values.yaml.

  python scripts/chart_readme.py            # rewrite the README
  python scripts/chart_readme.py --check    # exit 1 when it is stale (what the tests do)
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import yaml

CHART = Path(__file__).resolve().parents[1] / "charts" / "luna-plugins"
README = CHART / "README.md"


def _values_table() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "chart_values_table", Path(__file__).with_name("chart_values_table.py")
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault(spec.name, module)
    spec.loader.exec_module(module)
    return module


def value_type(value: Any) -> str:
    """helm-docs' names of YAML types."""
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "float"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "list"
    return "object"


def default(value: Any) -> str:
    """The default as helm-docs shows it: JSON in a code span."""
    return "`" + json.dumps(value, separators=(",", ":")).replace("|", "\\|") + "`"


def _badge(label: str, value: str, colour: str) -> str:
    shown = value.replace("-", "--").replace("_", "__")
    url = f"https://img.shields.io/badge/{label.replace(' ', '%20')}-{shown}-{colour}?style=flat-square"
    return f"![{label}: {value}]({url})"


def readme(chart_yaml: str, values_yaml: str) -> str:
    """The README's text for these Chart.yaml and values.yaml."""
    chart = yaml.safe_load(chart_yaml)
    values = yaml.safe_load(values_yaml) or {}
    table = _values_table()
    docs = table.documented_keys(values_yaml)
    sections = {path for path in docs if any(other.startswith(f"{path}.") for other in docs)}
    rows = sorted(path for path in docs if path not in sections)
    lines = [
        f"# {chart['name']}",
        "",
        " ".join(
            [
                _badge("Version", str(chart["version"]), "informational"),
                _badge("Type", str(chart.get("type", "application")), "informational"),
                _badge("AppVersion", str(chart.get("appVersion", "")), "informational"),
            ]
        ),
        "",
        " ".join(str(chart.get("description", "")).split()),
        "",
        "<!-- Generated from Chart.yaml and the `# --` comments of values.yaml by"
        " scripts/chart_readme.py; edit those, then run it. -->",
        "",
    ]
    if chart.get("kubeVersion"):
        lines += ["## Requirements", "", f"Kubernetes: `{chart['kubeVersion']}`", ""]
    lines += [
        "## Values",
        "",
        "| Key | Type | Default | Description |",
        "|-----|------|---------|-------------|",
    ]
    for path in rows:
        value = table._lookup(values, path)
        lines.append(f"| {path} | {value_type(value)} | {default(value)} | {table._markdown(docs[path])} |")
    return "\n".join(lines) + "\n"


def current() -> str:
    return readme((CHART / "Chart.yaml").read_text(), (CHART / "values.yaml").read_text())


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--check", action="store_true", help="change nothing; exit 1 if the README is stale")
    args = parser.parse_args(argv)
    text = current()
    if args.check:
        if not README.exists() or README.read_text() != text:
            print(f"stale: {README} (python scripts/chart_readme.py rewrites it)", file=sys.stderr)
            return 1
        return 0
    README.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
