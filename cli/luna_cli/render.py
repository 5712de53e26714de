"""`luna-plugins render FILE`: a LunaPlugin manifest for a plugin file, for ``kubectl apply -f -``.

The code goes inline (``spec.code``), or with ``--code-from NAME`` into a ConfigMap printed
before the LunaPlugin, which then names it (``spec.codeFrom``) and pins its SHA-256
(``spec.sha256``: the operator refuses other code, whoever edits the ConfigMap). The plugin's
requirements (``--requirements FILE``, by default ``NAME.requirements.txt`` beside the file when
there is one) go into ``spec.requirements`` in canonical spelling, and ``--settings-from FILE``
(a YAML or JSON list) into ``spec.settingsFrom``. The file is checked as the operator will check
it first (``--no-check`` skips that); a file the operator would refuse, settings that are not a
JSON object, requirements or settingsFrom items the operator would refuse, or names Kubernetes
would refuse stop with exit 1 and a message, and nothing is printed on standard output.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import re
import sys
from pathlib import Path
from typing import Any

from luna_contract.names import API_VERSION, KIND_PLUGIN
from luna_contract.spec import ISOLATIONS, SpecError, read_spec

#: what a LunaPlugin's ``metadata.name`` may be (a DNS label of at most 63 characters: it becomes
#: a label value of the plugin's ConfigMap), and ``spec.service`` (the CRD's pattern, 40 at most)
DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
#: a ConfigMap's name: a DNS subdomain
DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
#: above this, client-side ``kubectl apply`` fails (it copies the object into a 256 KiB annotation)
CLIENT_SIDE_APPLY_BYTES = 200 * 1024


class RenderError(Exception):
    """What is wrong with the input; the message says what to change."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", type=Path, metavar="FILE", help="the plugin file (NAME.py)")
    parser.add_argument("--module", help="spec.module (default: the file name without .py)")
    parser.add_argument("--name", help="metadata.name (default: the file name with '_' as '-')")
    parser.add_argument(
        "--service", default="handlers", help="spec.service: whose sidecars load it (handlers)"
    )
    parser.add_argument("--settings", type=Path, metavar="FILE", help="a JSON object file: spec.settings")
    parser.add_argument(
        "--settings-from",
        type=Path,
        metavar="FILE",
        help="a YAML or JSON list of spec.settingsFrom items: {setting, secretKeyRef: {name, key}} or "
        "{secretRef: {name}, prefix}, settings whose values come from Secrets",
    )
    parser.add_argument(
        "--requirements",
        type=Path,
        metavar="FILE",
        help="spec.requirements: one PEP 508 requirement per line, '#' comments (default: "
        "NAME.requirements.txt beside the plugin file, when there is one)",
    )
    parser.add_argument("--namespace", help="metadata.namespace (default: none, kubectl's -n decides)")
    parser.add_argument("--order", type=int, default=None, help="spec.order: load order in the service")
    parser.add_argument("--disabled", action="store_true", help="spec.enabled: false")
    parser.add_argument(
        "--isolation",
        choices=ISOLATIONS,
        help="spec.isolation: process runs the plugin in a process of its own (default: inProcess)",
    )
    parser.add_argument(
        "--code-from",
        metavar="CONFIGMAP",
        help="put the code into this ConfigMap (printed too) with a sha256 pin, instead of inline: "
        "for large files",
    )
    parser.add_argument("--no-check", action="store_true", help="do not check the code as the operator would")
    parser.epilog = (
        "Example: luna-plugins render plugins/kettle.py --settings kettle.json | kubectl apply -f -  "
        "Above ~200 KiB of code use --code-from or kubectl apply --server-side."
    )


def run(args: argparse.Namespace) -> int:
    """Print the manifest; 1 (and a message on stderr) when the input cannot make one."""
    try:
        documents = asyncio.run(render(args))
    except RenderError as exc:
        print(f"luna-plugins render: {exc}", file=sys.stderr)
        return 1
    import yaml

    sys.stdout.write(yaml.dump_all(documents, Dumper=_block_dumper(), sort_keys=False, allow_unicode=True))
    return 0


async def render(args: argparse.Namespace) -> list[dict[str, Any]]:
    """The documents to print: [ConfigMap,] LunaPlugin; raises :class:`RenderError`."""
    from luna_cli.plugin_check import (
        UnreadableFileError,
        module_problems,
        operator_problems,
        read_plugin_file,
    )
    from luna_contract.code import code_hash
    from luna_contract.plugin_modules import module_name
    from luna_operator.validation import CodeChecker, precheck, validate_settings

    path: Path = args.file
    try:
        plugin = read_plugin_file(path)
    except UnreadableFileError as exc:
        raise RenderError(f"{path}: {exc}") from None
    if args.module:
        plugin = dataclasses.replace(plugin, module=args.module)
    name = args.name or plugin.module.replace("_", "-").lower()
    if len(name) > 63 or not DNS_LABEL.match(name):
        raise RenderError(
            f"{name!r} cannot be a LunaPlugin name (lower-case letters, digits and '-', at most 63 "
            "characters, starting and ending with a letter or digit): pass --name"
        )
    if len(args.service) > 40 or not DNS_LABEL.match(args.service):
        raise RenderError(
            f"--service {args.service!r}: a service name is a DNS label of at most 40 characters"
        )
    settings = _settings(args.settings)
    for problem in validate_settings(settings):
        raise RenderError(f"--settings {args.settings}: {problem}")
    settings_from = _settings_from(args.settings_from, settings)
    requirements = _requirements(args.requirements, path)
    fix = "pass another --module" if args.module else "rename the file or pass --module"
    problems = module_problems(plugin.module, fix) + precheck(plugin.code, None)
    if not problems and not args.no_check:
        problems = await operator_problems(CodeChecker(), plugin.code)
    if problems:
        listed = "\n".join(
            f"  {path}:{p.line}: {p.message}" if p.line else f"  {path}: {p.message}" for p in problems
        )
        raise RenderError(f"the operator would refuse this plugin:\n{listed}")
    metadata: dict[str, Any] = {"name": name}
    if args.namespace:
        metadata["namespace"] = args.namespace
    spec: dict[str, Any] = {"service": args.service}
    if module_name(name, None) != plugin.module:
        spec["module"] = plugin.module
    if args.order is not None:
        spec["order"] = args.order
    if args.disabled:
        spec["enabled"] = False
    if args.isolation:
        spec["isolation"] = args.isolation
    if settings is not None:
        spec["settings"] = settings
    if settings_from:
        spec["settingsFrom"] = settings_from
    if requirements:
        spec["requirements"] = list(requirements)
    documents: list[dict[str, Any]] = []
    if args.code_from:
        if len(args.code_from) > 253 or not DNS_SUBDOMAIN.match(args.code_from):
            raise RenderError(f"--code-from {args.code_from!r} is not a valid ConfigMap name")
        key = f"{plugin.module}.py"
        config_map: dict[str, Any] = {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": dict(metadata, name=args.code_from),
            "data": {key: plugin.code},
        }
        documents.append(config_map)
        spec["codeFrom"] = {"configMapKeyRef": {"name": args.code_from, "key": key}}
        spec["sha256"] = code_hash(plugin.code)
    else:
        spec["code"] = plugin.code
        size = len(plugin.code.encode())
        if size > CLIENT_SIDE_APPLY_BYTES:
            print(
                f"luna-plugins render: {path} is {size} bytes: apply it with `kubectl apply --server-side` "
                "(client-side apply keeps a copy in a 256 KiB annotation), or render with --code-from",
                file=sys.stderr,
            )
    try:
        read_spec(spec)  # never print a spec the CRD's schema (generated from the same types) refuses
    except SpecError as exc:
        raise RenderError(f"the rendered spec does not fit the LunaPlugin schema: {exc}") from None
    documents.append({"apiVersion": API_VERSION, "kind": KIND_PLUGIN, "metadata": metadata, "spec": spec})
    return documents


def _settings(path: Path | None) -> dict[str, Any] | None:
    if path is None:
        return None
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise RenderError(f"--settings {path}: cannot read the file: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise RenderError(f"--settings {path}: not UTF-8 text") from None
    try:
        settings = json.loads(text)
    except ValueError as exc:
        raise RenderError(f"--settings {path}: not JSON: {exc}") from None
    if not isinstance(settings, dict):
        raise RenderError(
            f"--settings {path}: must hold a JSON object (the plugin's self.settings), "
            f"not {type(settings).__name__}"
        )
    return settings


def _requirements(given: Path | None, plugin: Path) -> tuple[str, ...]:
    """The requirements of ``given``, else of ``NAME.requirements.txt`` beside the plugin when
    there is one (none otherwise)."""
    from luna_cli.plugin_check import read_requirements, requirements_beside

    path = given or requirements_beside(plugin)
    if given is None and not path.exists():
        return ()
    declared = read_requirements(path)
    if declared.errors:
        listed = "\n".join(f"  {error}" for error in declared.errors)
        raise RenderError(f"requirements the operator would refuse:\n{listed}")
    if given is None:  # said, as it was not asked for
        count = len(declared.requirements)
        print(f"luna-plugins render: spec.requirements from {path} ({count} entries)", file=sys.stderr)
    return declared.requirements


def _settings_from(path: Path | None, settings: dict[str, Any] | None) -> list[Any]:
    """The ``spec.settingsFrom`` items of the YAML or JSON file at ``path``, as the operator
    checks them (:func:`luna_operator.secret_settings.check_shape`, which also refuses what the
    CRD's schema and CEL rules refuse), rebuilt as plain data (no YAML anchors go on)."""
    if path is None:
        return []
    import yaml

    from luna_cli.plugin_check import UnreadableFileError, read_side_file
    from luna_operator.secret_settings import check_shape

    try:
        text = read_side_file(path)
    except UnreadableFileError as exc:
        raise RenderError(f"--settings-from {path}: {exc}") from None
    try:
        try:
            loaded = json.loads(text)
        except ValueError:
            loaded = yaml.safe_load(text)  # the pure-Python loader: deep nesting is a RecursionError
    except yaml.YAMLError as exc:
        mark, problem = getattr(exc, "problem_mark", None), getattr(exc, "problem", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
        summary = where + " ".join(str(problem or exc).split())[:300]
        raise RenderError(f"--settings-from {path}: not YAML or JSON: {summary}") from None
    except RecursionError:
        raise RenderError(f"--settings-from {path}: nested too deeply to be settingsFrom items") from None
    if not isinstance(loaded, list):
        kinds = {dict: "a mapping", str: "a string", type(None): "an empty file"}
        kind = kinds.get(type(loaded), type(loaded).__name__)
        raise RenderError(
            f"--settings-from {path}: must hold a list of settingsFrom items, not {kind} (each item "
            "{setting: S, secretKeyRef: {name: N, key: K}} or {secretRef: {name: N}, prefix: P})"
        )
    problems = check_shape(loaded, settings)
    if problems:
        listed = "\n".join(f"  {problem}" for problem in problems[:20])
        raise RenderError(f"--settings-from {path}: the operator would refuse it:\n{listed}")
    items: list[Any] = json.loads(json.dumps(loaded))
    return items


def _block_dumper() -> type[Any]:
    """A YAML dumper writing multi-line strings (the code) as literal blocks; built on first use,
    as yaml is imported only when a manifest is printed."""
    import yaml

    class BlockDumper(yaml.SafeDumper):
        """Multi-line strings as literal blocks, so the manifest reads like the file."""

    def represent_str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
        style = "|" if "\n" in value else None
        return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)

    BlockDumper.add_representer(str, represent_str)
    return BlockDumper
