"""The documentation site builds with `mkdocs build --strict`: every page in the nav, no broken
link or anchor; and a broken link does fail that build."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]


def build(config: Path, site: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "mkdocs",
            "build",
            "--strict",
            "--config-file",
            str(config),
            "--site-dir",
            str(site),
        ],
        capture_output=True,
        text=True,
        timeout=240,
        env={"PATH": "/usr/bin:/bin", "NO_MKDOCS_2_WARNING": "1"},
    )


def test_the_site_builds_strictly(tmp_path: Path) -> None:
    result = build(ROOT / "mkdocs.yml", tmp_path / "site")
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "site" / "reference" / "cli" / "index.html").is_file()
    # every alert's runbook_url leads to a page of this site: the chart's base stands for the
    # site's runbooks/, and what follows it is a page built from docs/runbooks/
    chart = ROOT / "charts" / "luna-plugins"
    base = yaml.safe_load((chart / "values.yaml").read_text())["prometheus"]["rules"]["runbookBaseUrl"]
    groups = yaml.safe_load((chart / "files" / "prometheus-rules.yaml").read_text())["groups"]
    rules = [rule for group in groups for rule in group["rules"]]
    assert len(rules) >= 16
    for rule in rules:
        url = rule["annotations"]["runbook_url"]
        assert url.startswith(base.rstrip("/") + "/"), (rule["alert"], url)
        page = url[len(base.rstrip("/")) + 1 :]
        assert page == f"{rule['alert']}/", url  # a page per alert, at its directory URL
        assert (tmp_path / "site" / "runbooks" / page / "index.html").is_file(), url
        assert (ROOT / "docs" / "runbooks" / f"{page.rstrip('/')}.md").is_file(), url


def nav_pages(node: object) -> list[str]:
    if isinstance(node, str):
        return [node]
    if isinstance(node, list):
        return [page for item in node for page in nav_pages(item)]
    if isinstance(node, dict):
        return [page for item in node.values() for page in nav_pages(item)]
    return []


def test_every_page_is_in_the_nav() -> None:
    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text())
    pages = {str(path.relative_to(ROOT / "docs")) for path in (ROOT / "docs").rglob("*.md")}
    assert pages == set(nav_pages(config["nav"]))


def test_a_broken_link_or_anchor_fails_the_build(tmp_path: Path) -> None:
    shutil.copytree(ROOT / "docs", tmp_path / "docs")
    shutil.copy(ROOT / "mkdocs.yml", tmp_path / "mkdocs.yml")
    page = tmp_path / "docs" / "index.md"
    original = page.read_text()
    page.write_text(original + "\nSee [a page that is not there](no-such-page.md).\n")
    broken = build(tmp_path / "mkdocs.yml", tmp_path / "site")
    assert broken.returncode != 0 and "no-such-page.md" in broken.stderr, broken.stderr
    page.write_text(original + "\nSee [a section that is not there](concepts.md#no-such-section).\n")
    broken = build(tmp_path / "mkdocs.yml", tmp_path / "site")
    assert broken.returncode != 0 and "no-such-section" in broken.stderr, broken.stderr
