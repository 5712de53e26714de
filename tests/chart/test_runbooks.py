"""Every alert of the chart links to its runbook: a page of the docs site that says what the
alert means, how to confirm it and what to do."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "luna-plugins"
RUNBOOKS = ROOT / "docs" / "runbooks"


def alerts() -> list[dict[str, object]]:
    groups = yaml.safe_load((CHART / "files" / "prometheus-rules.yaml").read_text())["groups"]
    return [rule for group in groups for rule in group["rules"]]


def test_every_alert_has_a_runbook_url_whose_page_exists() -> None:
    base = yaml.safe_load((CHART / "values.yaml").read_text())["prometheus"]["rules"]["runbookBaseUrl"]
    found = alerts()
    assert len(found) >= 16
    for rule in found:
        name = str(rule["alert"])
        annotations = rule["annotations"]
        assert isinstance(annotations, dict)
        assert annotations.get("runbook_url") == f"{base.rstrip('/')}/{name}/", name
        page = RUNBOOKS / f"{name}.md"
        assert page.is_file(), f"no runbook for {name}: docs/runbooks/{name}.md"
        text = page.read_text()
        assert text.startswith(f"# {name}\n")
        for section in ("## What it means", "## How to confirm", "## What to do"):
            assert section in text, f"{page.name}: {section}"
        assert f"({name}.md)" in (RUNBOOKS / "index.md").read_text()


def test_no_runbook_without_its_alert() -> None:
    names = {str(rule["alert"]) for rule in alerts()}
    pages = {page.stem for page in RUNBOOKS.glob("*.md")} - {"index"}
    assert pages == names


def test_per_plugin_alerts_are_per_service_not_per_pod() -> None:
    for rule in alerts():
        expr = str(rule["expr"])
        if "luna_plugin_" in expr:
            outer = re.match(r"\s*\w+ by \(([^)]*)\)", expr)  # the outermost aggregation
            assert outer is not None, rule["alert"]
            labels = {label.strip() for label in outer.group(1).split(",")}
            assert "luna_service" in labels and "pod" not in labels, rule["alert"]
            assert "group_left (luna_service)" in expr, rule["alert"]
