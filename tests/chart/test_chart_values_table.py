"""The chart values reference (docs/reference/chart-values.md) is generated from values.yaml and
documents every value."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[2]
START, END = "<!-- chart-values:start -->", "<!-- chart-values:end -->"


def generator() -> ModuleType:
    path = ROOT / "scripts" / "chart_values_table.py"
    spec = importlib.util.spec_from_file_location("chart_values_table", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_every_chart_value_is_documented_and_the_reference_table_is_current() -> None:
    lines, undocumented = generator().table((ROOT / "charts" / "luna-plugins" / "values.yaml").read_text())
    assert undocumented == [], f"values without a `# --` comment in values.yaml: {undocumented}"
    page = (ROOT / "docs" / "reference" / "chart-values.md").read_text()
    shown = page[page.index(START) + len(START) : page.index(END)].strip().splitlines()
    assert shown == lines, (
        "docs/reference/chart-values.md is stale: python scripts/docs_reference.py rewrites it"
    )


def test_generator_sections_rows_and_undocumented_values() -> None:
    text = """\
image:
  # -- where the image comes from
  repository: luna
  tag: ""
operator:
  # -- how many
  # (more words)
  replicas: 1
  # -- a mapping documented as one row
  resources:
    limits: {memory: 1Gi}
list:
  - a
"""
    lines, undocumented = generator().table(text)
    assert lines[2:] == [
        "| `image.repository` | `luna` | where the image comes from |",
        "| `operator.replicas` | `1` | how many (more words) |",
        '| `operator.resources` | `{"limits": {"memory": "1Gi"}}` | a mapping documented as one row |',
    ]
    assert undocumented == ["image.tag", "list"]
