"""How `luna-plugins lint` writes its findings: ``text``, ``json`` or ``github``.

- ``text``: one line per finding, ``FILE:LINE:COLUMN: RULE [warning: ]message``;
- ``json``: one JSON document, ``{"findings": [{"path", "line", "column", "rule", "severity",
  "message"}, ...]}`` (line and column 1-based; a finding about the whole file is at 1:1);
- ``github``: GitHub Actions workflow commands, ``::error file=F,line=L,col=C,title=RULE::message``
  (``::warning`` for warnings), which annotate the lines of a pull request.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from luna_cli.plugin_check import Finding

FORMATS = ("text", "json", "github")


def render(findings: Sequence[Finding], output_format: str) -> str:
    """The findings in ``output_format`` (one of :data:`FORMATS`), ending in a newline unless empty."""
    if output_format == "json":
        return json.dumps({"findings": [as_dict(finding) for finding in findings]}, indent=2) + "\n"
    if output_format == "github":
        lines = [github_line(finding) for finding in findings]
    elif output_format == "text":
        lines = [str(finding) for finding in findings]
    else:
        raise ValueError(f"output format {output_format!r}: expected one of {', '.join(FORMATS)}")
    return "".join(f"{line}\n" for line in lines)


def as_dict(finding: Finding) -> dict[str, object]:
    """One finding as the ``json`` format has it."""
    line, column = finding.place
    return {
        "path": finding.path,
        "line": line,
        "column": column,
        "rule": finding.rule,
        "severity": finding.severity,
        "message": finding.message,
    }


def _escape_data(text: str) -> str:
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def _escape_property(text: str) -> str:
    return _escape_data(text).replace(":", "%3A").replace(",", "%2C")


def github_line(finding: Finding) -> str:
    """One finding as a GitHub Actions annotation (values escaped as the runner expects)."""
    line, column = finding.place
    properties = ",".join(
        f"{name}={_escape_property(str(value))}"
        for name, value in (("file", finding.path), ("line", line), ("col", column), ("title", finding.rule))
    )
    return f"::{finding.severity} {properties}::{_escape_data(finding.message)}"
