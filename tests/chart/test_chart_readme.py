"""The chart's README is generated from Chart.yaml and values.yaml (helm-docs' format) and is
current; every value in values.schema.json has a description, the values.yaml comment where
there is one."""

from __future__ import annotations

import importlib.util
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "luna-plugins"


def script(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_the_chart_readme_is_current() -> None:
    assert (CHART / "README.md").read_text() == script("chart_readme").current(), (
        "charts/luna-plugins/README.md is stale: python scripts/chart_readme.py rewrites it"
    )


def test_the_readme_lists_each_value_with_its_type_and_default() -> None:
    chart = "name: c\nversion: 1.2.3\ndescription: >-\n  A chart\n  for tests.\nkubeVersion: '>=1.30.0-0'\n"
    values = """\
image:
  # -- where | from
  repository: luna
  # -- pull it?
  pull: true
# -- how many
replicas: 2
# -- extra
extra: {a: [1]}
"""
    text = script("chart_readme").readme(chart, values)
    assert text.startswith(
        "# c\n\n![Version: 1.2.3](https://img.shields.io/badge/Version-1.2.3-informational"
    )
    assert "\nA chart for tests.\n" in text and "Kubernetes: `>=1.30.0-0`" in text
    assert text.endswith(
        "| Key | Type | Default | Description |\n"
        "|-----|------|---------|-------------|\n"
        '| extra | object | `{"a":[1]}` | extra |\n'
        "| image.pull | bool | `true` | pull it? |\n"
        '| image.repository | string | `"luna"` | where \\| from |\n'
        "| replicas | int | `2` | how many |\n"
    )


def schema_values(node: dict[str, Any], path: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    for key, child in (node.get("properties") or {}).items():
        here = f"{path}.{key}".lstrip(".")
        yield here, child
        yield from schema_values(child, here)
    items = node.get("items")
    if isinstance(items, dict):
        yield from schema_values(items, f"{path}[]")


def test_every_value_in_the_schema_has_a_description() -> None:
    schema = json.loads((CHART / "values.schema.json").read_text())
    found = dict(schema_values(schema))
    assert len(found) > 100
    assert [path for path, node in found.items() if not str(node.get("description", "")).strip()] == []
    documented = script("chart_values_table").documented_keys((CHART / "values.yaml").read_text())
    differing = [path for path, text in documented.items() if found[path].get("description") != text]
    assert differing == [], "values.schema.json's description is not values.yaml's `# --` comment"
