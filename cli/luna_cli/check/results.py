"""What one check found, and the two ways ``luna-plugins check`` prints a list of them.

Text: one line per check, ``ok`` or ``FAIL``, the check's name, what was found and, for a
failure, what to do. JSON: ``{"ok": bool, "checks": [{"name", "ok", "detail", "fix"}]}``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class Result:
    """The outcome of one check."""

    name: str
    """what was checked, e.g. ``crd lunaplugins.luna.dev`` (stable: scripts may match on it)"""
    ok: bool
    detail: str
    """what was found, one sentence"""
    fix: str = ""
    """what to do about a failure (empty when ok)"""


def passed(name: str, detail: str) -> Result:
    return Result(name, True, detail)


def failed(name: str, detail: str, fix: str) -> Result:
    return Result(name, False, detail, fix)


def text(results: Sequence[Result]) -> str:
    """One line per result, ``ok    name: detail`` or ``FAIL  name: detail -> fix``."""
    lines = []
    for result in results:
        if result.ok:
            lines.append(f"ok    {result.name}: {result.detail}")
        else:
            lines.append(f"FAIL  {result.name}: {result.detail} -> {result.fix}")
    return "\n".join(lines)


def as_json(results: Sequence[Result]) -> str:
    return json.dumps({"ok": all_ok(results), "checks": [asdict(r) for r in results]}, indent=2)


def all_ok(results: Sequence[Result]) -> bool:
    """True when there are results and every one passed."""
    return bool(results) and all(result.ok for result in results)
