"""`luna-plugins lint FILE...`: the operator's validation of plugin files, before they are applied.

Each file is checked as the operator checks a LunaPlugin's code (same code, same messages), with
the file name without ``.py`` as its module; each finding has a place (``FILE:LINE:COLUMN``, 1:1
for the whole file) and a rule code (:mod:`luna_cli.lint_rules`), printed as ``--format`` says
(:mod:`luna_cli.lint_output`: text, json, github). The plugin's requirements
(``--requirements FILE``, by default ``NAME.requirements.txt`` beside the file when there is
one) are checked as the operator checks ``spec.requirements``, each problem at its line of that
file. Imports of modules that neither the sidecar image nor those requirements provide are
warnings. Exit 0 when no file has a problem (warnings allowed), 1 otherwise, 2 for a usage error.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

from luna_cli.lint_output import FORMATS


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("files", nargs="+", type=Path, metavar="FILE", help="plugin files (NAME.py)")
    parser.add_argument(
        "--requirements",
        type=Path,
        metavar="FILE",
        help="the plugin's requirements (spec.requirements), one per line, '#' comments; one plugin "
        "file only (default: NAME.requirements.txt beside each file, when present)",
    )
    parser.add_argument(
        "--format",
        choices=FORMATS,
        default="text",
        help="text: FILE:LINE:COLUMN: RULE message; json: one document of findings; github: GitHub "
        "Actions annotations (default text)",
    )
    parser.add_argument(
        "--code-check-memory",
        type=int,
        default=192,
        metavar="MiB",
        help="address space of the child that parses the code, as the operator's flag (default 192)",
    )
    parser.add_argument(
        "--code-check-timeout",
        type=float,
        default=15.0,
        metavar="SECONDS",
        help="seconds one parse may take, as the operator's flag (default 15)",
    )
    parser.epilog = (
        "Errors are what the operator would refuse (the plugin's phase would be Invalid); warnings "
        "are imports of modules the sidecar image lacks (the standard library, luna_plugins and the "
        "project's dependencies are there) and the plugin's requirements do not provide. Exit 1 when "
        "any file has an error."
    )


def run(args: argparse.Namespace) -> int:
    """Print the findings of every file; 1 when any is an error."""
    if args.requirements is not None and len(args.files) > 1:
        print(
            "luna-plugins lint: --requirements applies to one plugin file; lint the files one at a "
            "time, or put NAME.requirements.txt beside each",
            file=sys.stderr,
        )
        return 2
    return asyncio.run(_lint(args))


async def _lint(args: argparse.Namespace) -> int:
    from importlib import metadata

    from luna_cli.image_modules import image_modules
    from luna_cli.lint_output import render
    from luna_cli.plugin_check import check_plugin_file
    from luna_operator.validation import CodeChecker

    checker = CodeChecker(memory_bytes=args.code_check_memory * 1024 * 1024, timeout=args.code_check_timeout)
    try:
        available: frozenset[str] | None = image_modules() | {path.stem for path in args.files}
    except metadata.PackageNotFoundError:
        available = None
        print("luna-plugins lint: luna-plugins is not installed: imports are not checked", file=sys.stderr)
    findings = []
    for path in args.files:
        findings += await check_plugin_file(
            path, checker, available=available, requirements=args.requirements
        )
    sys.stdout.write(render(findings, args.format))
    errors = sum(1 for finding in findings if finding.severity == "error")
    warnings = len(findings) - errors
    count = len(args.files)
    print(f"{count} file(s) checked: {errors} problem(s), {warnings} warning(s)", file=sys.stderr)
    return 1 if errors else 0
