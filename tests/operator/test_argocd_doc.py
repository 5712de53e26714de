"""docs/argocd.md shows the Argo CD health check exactly as the tested file has it."""

from __future__ import annotations

import textwrap

from tests.operator.argocd_health import ROOT, SCRIPT

DOC = ROOT / "docs" / "argocd.md"
KEY = "resource.customizations.health.luna.dev_LunaPlugin: |\n"


def test_the_documented_health_check_is_the_tested_script() -> None:
    doc = DOC.read_text()
    assert KEY in doc, f"docs/argocd.md lost the argocd-cm key {KEY.strip()}"
    block = doc.split(KEY, 1)[1].split("```", 1)[0]
    assert textwrap.dedent(block) == SCRIPT.read_text(), (
        "docs/argocd.md's copy of the health check differs from docs/argocd/lunaplugin-health.lua: "
        "copy the file into the argocd-cm block (indented six spaces)"
    )
