"""The reference pages' generated parts (command line, settings, CRD fields, chart values) are
what the code, the CRDs and values.yaml make now."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[2]


def generator() -> ModuleType:
    path = ROOT / "scripts" / "docs_reference.py"
    spec = importlib.util.spec_from_file_location("docs_reference", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


REFERENCE = generator()


@pytest.mark.parametrize("part", REFERENCE.PARTS, ids=lambda part: part.name)
def test_the_generated_part_is_current(part: ModuleType) -> None:
    shown = part.shown(part.page.read_text())
    assert shown == part.make(), f"{part.page.name}: {part.name} is stale: python scripts/docs_reference.py"


def test_a_stale_part_is_found_and_rewritten(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (part,) = [p for p in REFERENCE.PARTS if p.name == "operator-settings"]
    page = tmp_path / "operator-settings.md"
    page.write_text(part.page.read_text().replace("`--resync-interval`", "`--resync-every`"))
    moved = REFERENCE.Part(part.name, page, part.make)
    monkeypatch.setattr(REFERENCE, "PARTS", (moved,))
    assert REFERENCE.stale() == ["operator-settings"]
    assert REFERENCE.main(["--check"]) == 1
    assert REFERENCE.main([]) == 0
    assert REFERENCE.stale() == [] and "`--resync-interval`" in page.read_text()


def test_every_command_and_crd_field_is_on_its_page() -> None:
    from luna_cli.main import COMMANDS

    cli = (ROOT / "docs" / "reference" / "cli.md").read_text()
    for name in COMMANDS:
        assert f"## `luna-plugins {name}`" in cli
    assert "(status\\|promote\\|abort\\|retry)" in cli  # a positional's choices
    fields = (ROOT / "docs" / "reference" / "lunaplugin.md").read_text()
    for path in (
        "spec.code",
        "spec.codeFrom.configMapKeyRef.key",
        "spec.settingsFrom[].secretRef.name",
        "status.pods[].failedCodeHash",
    ):
        assert f"| `{path}`" in fields
