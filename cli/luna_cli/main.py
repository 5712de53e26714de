"""Entry point of the `luna-plugins` console script.

Each component registers a sub-command in ``COMMANDS``. A command module provides
``add_arguments(parser)`` and ``run(args) -> int``; it keeps its heavy imports inside ``run`` so
that building the parser stays cheap (`luna-plugins sidecar` never loads the operator).
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from luna_contract.build_info import version

#: sub-command -> (module implementing it, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "sidecar": ("luna_sidecar.cli", "run the plugin runtime next to a service"),
    "operator": ("luna_operator.cli", "run the operator turning LunaPlugin resources into ConfigMaps"),
    "lint": ("luna_cli.lint", "check plugin files as the operator would, and their imports"),
    "render": ("luna_cli.render", "print a LunaPlugin manifest for a plugin file (for kubectl apply -f -)"),
    "new": ("luna_cli.new", "write a plugin skeleton and its test"),
    "check": ("luna_cli.check", "check that a cluster's CRDs, operator, webhook and report guard work"),
    "dead-letters": ("luna_cli.dead_letters", "list, replay or discard a sidecar plugin's dead letters"),
    "rollout": ("luna_cli.rollout", "show, promote, abort or retry a LunaPlugin's staged rollout"),
    "completion": ("luna_cli.completion", "print a shell completion script (bash, zsh or fish)"),
}


def build_parser() -> argparse.ArgumentParser:
    """Build the top-level parser with every registered sub-command."""
    parser = argparse.ArgumentParser(
        prog="luna-plugins",
        description="Run Python plugins for LUNA-style services on Kubernetes.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (module_name, help_text) in COMMANDS.items():
        command_parser = sub.add_parser(name, help=help_text, description=help_text)
        module = importlib.import_module(module_name)
        module.add_arguments(command_parser)
        command_parser.set_defaults(_module=module_name)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Parse ``argv`` and run the chosen sub-command; returns the process exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    module = importlib.import_module(args._module)
    code: int = module.run(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
